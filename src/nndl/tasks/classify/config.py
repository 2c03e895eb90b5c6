"""The classification config: :class:`ClassifyConfig`, its named presets and its "does not apply" rules.

Registered with :func:`nndl.base.config.register` on import (``nndl.tasks`` imports this module),
so ``resolve("classify", ...)``, ``nndl presets`` and the report know the task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nndl.base.config import TrainConfig, _choice, _doc, _list, register
from nndl.base.errors import NndlError
from nndl.base.model_kinds import MODEL_KINDS, MODEL_SETTINGS, why_unused


@dataclass
class ClassifyConfig(TrainConfig):
    """Image or table classification (Fashion-MNIST by default; see :mod:`nndl.data`)."""

    model: str = _choice("mlp", list(MODEL_KINDS), "network architecture (nndl.base.model_kinds; `nndl presets` lists them)")
    data: str = _doc("", "dataset: an IDX folder, a folder of class subfolders of images, or a .csv table; "
                         "empty = Fashion-MNIST from $NNDL_DATA, the Debian package, the cache")
    dataset: str = _choice("auto", ["auto", "fashion_mnist", "idx", "image_folder", "csv_table"],
                           "dataset kind (nndl.data); auto = detected from `data`")
    label_col: str = _doc("", "csv_table: the class column (default: a column named 'label')")
    image_size: int = _doc(32, "image_folder: images are resized to image_size x image_size pixels")
    test_fraction: float = _doc(0.2, "image_folder/csv_table without a fixed test split: stratified test share "
                                     "(0 with test_data)")
    test_data: str = _doc("", "csv_table: a CSV test file with the training file's columns (--test); then no "
                              "test split is drawn")
    verify: bool = _doc(True, "check the official files' SHA-256")
    subset: int = _doc(0, "use only the first N training images (stratified); 0 = all")
    test_subset: int = _doc(0, "evaluate on the first N test images; 0 = all")
    val_fraction: float = _doc(0.1, "stratified share of the training images held out for validation")
    hidden: list[int] = _list([256, 128, 64], "MLP hidden layer widths")
    dropout: list[float] = _list([0.2, 0.1, 0.1], "MLP dropout after each hidden layer, one rate per layer (these "
                                                  "defaults are cut, or padded with 0, to fit another hidden)")
    channels: list[int] = _list([16, 32, 64], "conv widths")
    activation: str = _choice("relu", ["sigmoid", "tanh", "relu", "gelu"])
    init: str = _choice("default", ["default", "xavier", "kaiming"])
    label_smoothing: float = _doc(0.0, "cross-entropy label smoothing")
    flip: bool = _doc(False, "random horizontal flip")
    mirror_invariant: str = _choice("auto", ["auto", "yes", "no"],
                                    "images: does a mirrored image keep its class? auto = the dataset says (Fashion-"
                                    "MNIST yes; IDX and image folders no: digits, letters, text); a preset's flip / "
                                    "tta_flip is switched off where it is not")
    translate: int = _doc(0, "random translation of up to N pixels (pad + crop)")
    erase: float = _doc(0.0, "probability of random erasing per image")
    # More augmentations (nndl.nn.augment's registry, same ranges there); all off by default.
    rotate: float = _doc(0.0, "random rotation of up to N degrees either way")
    scale: float = _doc(0.0, "random zoom by a factor in [1-s, 1+s] at a random place (resized crop)")
    noise: float = _doc(0.0, "Gaussian noise std, in normalised units")
    mixup: float = _doc(0.0, "mixup with weights ~ Beta(a, a); 0 = off")
    cutmix: float = _doc(0.0, "cutmix with box areas ~ Beta(a, a); 0 = off")
    cutmix_prob: float = _doc(1.0, "share of images that get cutmix (the others get mixup if on)")
    tta_flip: bool = _doc(False, "average logits of the image and its mirror at evaluation")
    eval_batch_size: int = _doc(2048, "images per batch at evaluation")
    calibrate: str = _choice("auto", ["auto", "temperature", "none"],
                             "temperature: divide the logits by a temperature T in [0.25, 4] fitted on the "
                             "validation split (folded into model.pt); auto = for models with scaled logits (fast)")
    search: str = _choice("none", ["none", "auto"], "auto: score a few recipes that fit the data kind by stratified "
                                                     "3-fold CV on the training split, then train the best "
                                                     "(preset auto; nndl.tasks.classify.auto)")
    reference: str = _choice("auto", ["auto", "logistic", "hgb", "none"],
                             "baseline fitted beside the network on the same split (nndl.tasks.classify.reference): auto = "
                             "logistic regression when scikit-learn is installed; hgb = gradient boosting (tables)")
    amp: bool = _doc(True, "bf16 autocast on CUDA (see amp_cpu for CPUs)")
    amp_cpu: bool = _doc(False, "bf16 autocast on a CPU with native bf16 (AVX-512 BF16 or AMX; fp32 on other CPUs): "
                                "~2x faster convolutions, slightly different numbers")
    compile: bool = _doc(False, "torch.compile the model (start-up cost reported separately)")
    threads: int = _doc(0, "torch intra-op threads on CPU; 0 = torch's default")
    lr: float = 1e-3
    epochs: int = 20
    batch_size: int = 256


    def range_checks(self) -> list[tuple[str, bool, str]]:
        return [("val_fraction", 0 <= self.val_fraction < 1, "must be in [0, 1)"),
                # early stopping watches the validation accuracy: without a split there is none to watch
                ("patience", self.patience == 0 or self.val_fraction > 0,
                 "needs a validation split to watch; set val_fraction > 0 (e.g. 0.1), or patience=0"),
                ("calibrate", self.calibrate != "temperature" or self.val_fraction > 0,
                 "fits the temperature on the validation split; set val_fraction > 0 (e.g. 0.1), or calibrate=none"),
                ("test_fraction", 0 < self.test_fraction < 1 or (self.test_fraction == 0 and self.test_data),
                 "must be in (0, 1); 0 only with a test file (--test FILE.csv, or test_data=FILE.csv)"),
                ("image_size", 8 <= self.image_size <= 512, "must be in 8..512 pixels"),
                ("dropout", all(0 <= d < 1 for d in self.dropout), "values must be in [0, 1)"),
                ("label_smoothing", 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
                ("erase", 0 <= self.erase <= 1, "must be in [0, 1]"),
                ("translate", 0 <= self.translate <= 8, "must be in 0..8"),
                ("rotate", 0 <= self.rotate <= 180, "must be in [0, 180]"),
                ("scale", 0 <= self.scale <= 0.9, "must be in [0, 0.9]"),
                ("noise", 0 <= self.noise <= 3, "must be in [0, 3]"),
                ("mixup", 0 <= self.mixup <= 10, "must be in [0, 10]"),
                ("cutmix", 0 <= self.cutmix <= 10, "must be in [0, 10]"),
                ("cutmix_prob", 0 <= self.cutmix_prob <= 1, "must be in [0, 1]"),
                ("subset", self.subset >= 0, "must be >= 0 (0 = all images)"),
                ("test_subset", self.test_subset >= 0, "must be >= 0 (0 = all test images)"),
                ("eval_batch_size", self.eval_batch_size >= 1, "must be >= 1"),
                ("hidden", bool(self.hidden) and all(h >= 1 for h in self.hidden), "needs sizes >= 1"),
                ("channels", "channels" not in MODEL_KINDS[self.model].reads
                 or (len(self.channels) == 3 and all(c >= 1 for c in self.channels)),
                 "needs three widths >= 1")]


# Presets are small dicts of overrides on top of the defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "mlp": {"model": "mlp", "epochs": 20},
    # A built-in search over recipes for the data kind (tables: MLP widths, L2, lr; images: the MLP,
    # the reference CNN, with shifts, with flips where mirroring keeps the classes), scored by 3-fold
    # CV on the training split; the run trains the winner (nndl.tasks.classify.auto).
    "auto": {"search": "auto"},
    # The reference network and optimiser (Adam 1e-3, batch 256); cosine decay and random
    # flips curb the overfitting that a constant lr shows after epoch ~7 (90.3% -> see README).
    "cnn": {"model": "cnn", "epochs": 15, "schedule": "cosine", "flip": True},
    # Strongest preset that trains on 2 CPU cores in well under an hour: the reference CNN
    # at 2x/4x width with flip + shift augmentation, label smoothing, one-cycle AdamW and flip TTA.
    "wide": {"model": "cnn", "channels": [32, 64, 128], "optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-2,
             "schedule": "onecycle", "epochs": 20, "batch_size": 256, "label_smoothing": 0.1, "flip": True,
             "translate": 2, "tta_flip": True},
    "resnet": {"model": "resnet", "channels": [32, 64, 128], "optimizer": "sgd", "nesterov": True,
               "lr": 0.1, "weight_decay": 5e-4, "schedule": "onecycle", "epochs": 30, "batch_size": 256,
               "label_smoothing": 0.1, "flip": True, "translate": 2, "erase": 0.3, "tta_flip": True},
    # Time-to-accuracy on CPU: the reference CNN with a 4-epoch one-cycle AdamW schedule,
    # label smoothing and flip test-time augmentation (ideas from CIFAR-10 speed runs), no
    # validation split (all 60k images train).
    "fast": {"model": "cnn", "optimizer": "adamw", "lr": 4e-3, "weight_decay": 5e-2, "schedule": "onecycle",
             "epochs": 4, "batch_size": 256, "label_smoothing": 0.1, "flip": True, "tta_flip": True,
             "val_fraction": 0.0},
    # Time-to-91% on CPU (issue 14): the lite network (stride-2 stem, no layer at full resolution:
    # 2/3 of the reference CNN's multiply-adds) at 16/32/64, 3 one-cycle epochs at batch 64 (more steps
    # per second of training beat 128/256/512 here) with lr 8e-3, label smoothing, flips + flip TTA,
    # and bf16 autocast where the CPU computes bf16 natively (amp_cpu; fp32 on other CPUs, where
    # this recipe needs ~1.0-1.3 typical-loop epochs: bench/speed_interleaved.py --fp32). Chosen on 2 AMD EPYC cores against 4 epochs
    # at 128, batch 32/48, lr 6e-3 and wider nets (README, Speed).
    "speed": {"model": "lite", "channels": [16, 32, 64], "optimizer": "adamw", "lr": 8e-3, "weight_decay": 5e-2,
              "schedule": "onecycle", "epochs": 3, "batch_size": 64, "label_smoothing": 0.1, "flip": True,
              "tta_flip": True, "val_fraction": 0.0, "amp_cpu": True},
    # Time-to-93.5% on CPU (issue 14): the lite network with a second conv at 1/4 resolution (lite4;
    # depth where maps are 7x7 beat width: 93.41% vs lite 48/96/192's 93.27% in 20 epochs), AdamW
    # one-cycle at batch 256, label smoothing, flips + 2-pixel shifts, flip TTA, bf16 where native.
    "accurate": {"model": "lite4", "channels": [32, 64, 128], "optimizer": "adamw", "lr": 3e-3,
                 "weight_decay": 5e-2, "schedule": "onecycle", "epochs": 26, "batch_size": 256,
                 "label_smoothing": 0.1, "flip": True, "translate": 2, "tta_flip": True, "val_fraction": 0.0,
                 "amp_cpu": True},
    # Best accuracy within ~250 typical-loop epochs on CPU (issue 14), and the GPU record recipe:
    # accurate's network at twice the width, 40 epochs, plus random erasing (longer training
    # overfits without it).
    "record": {"model": "lite4", "channels": [64, 128, 256], "optimizer": "adamw", "lr": 3e-3,
               "weight_decay": 5e-2, "schedule": "onecycle", "epochs": 40, "batch_size": 256,
               "label_smoothing": 0.1, "flip": True, "translate": 2, "erase": 0.25, "tta_flip": True,
               "val_fraction": 0.0, "amp_cpu": True},
}


def not_applicable(config: dict) -> dict[str, str]:
    """The model settings of ``config`` (a saved config dict) that its model never read, with the reason:
    the registry :data:`~nndl.base.model_kinds.MODEL_KINDS` says which settings each model reads."""
    model = config.get("model")
    if model not in MODEL_KINDS:
        return {}
    return {key: why_unused(model, key) for key in MODEL_SETTINGS if key not in MODEL_KINDS[model].reads}


def check_given(cfg: ClassifyConfig, given: dict[str, Any]) -> None:
    """Refuse a ``dropout`` list the user gave whose length differs from ``hidden``'s."""
    if "dropout" in given and len(cfg.dropout) != len(cfg.hidden):
        # the MLP would cut the list or pad it with 0: rates the user wrote would be dropped or missing
        rates = ",".join([f"{cfg.dropout[0]:g}"] * len(cfg.hidden)) if cfg.dropout else "0"
        raise NndlError(f"config key 'dropout' = {cfg.dropout!r}: one rate per hidden layer, but hidden = "
                        f"{cfg.hidden!r} has {len(cfg.hidden)}; give {len(cfg.hidden)} rates, e.g. dropout={rates}")


register("classify", ClassifyConfig, PRESETS, not_applicable, check_given)
