"""Dataclass configs, named presets and ``--set key=value`` overrides.

One dataclass per task. A run's config is resolved in a fixed order --
defaults, then the preset, then ``--set`` overrides, then ``--seed`` -- validated,
printed and saved as ``config.json`` in the run folder.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nndl.base.errors import NndlError, text_argument
from nndl.base.model_kinds import MODEL_KINDS, MODEL_SETTINGS, why_unused

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


SEED_LIMIT = 2**63  # seeds are 0 .. SEED_LIMIT - 1


def _choice(default, choices, help=""):
    return field(default=default, metadata={"choices": tuple(choices), "help": help})


def _doc(default, help):
    return field(default=default, metadata={"help": help})


def _list(default, help=""):
    return field(default_factory=lambda: list(default), metadata={"help": help})


class _Checked:
    """Every config is type-checked and validated when it is built, in Python as from the CLI:
    ``RegressConfig(epochs=-1)`` is the same one-line error as ``--set epochs=-1``."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, coerce(type(self), f.name, getattr(self, f.name)))
        validate(self)


@dataclass
class TrainConfig(_Checked):
    """Training fields shared by every task (optimiser, schedule, stopping)."""

    optimizer: str = _choice("adam", ["adam", "adamw", "sgd"], "sgd uses `momentum`/`nesterov`")
    lr: float = _doc(1e-3, "learning rate (the peak of a schedule)")
    momentum: float = _doc(0.9, "SGD momentum (optimizer=sgd only)")
    nesterov: bool = _doc(False, "Nesterov momentum (optimizer=sgd only)")
    weight_decay: float = _doc(0.0, "L2 penalty: coupled for adam/sgd, decoupled for adamw")
    l1: float = _doc(0.0, "L1 penalty on weight matrices (not biases)")
    epochs: int = _doc(10, "passes over the training data")
    batch_size: int = _doc(256, "examples per optimiser step")
    schedule: str = _choice("constant", ["constant", "cosine", "onecycle", "linear"])
    warmup_epochs: float = _doc(0.0, "linear warm-up, in (fractional) epochs")
    min_lr_factor: float = _doc(0.0, "lr at the end of a decaying schedule, as a fraction of lr")
    patience: int = _doc(0, "early stopping on the validation metric; 0 disables it")
    seed: int = _doc(0, "seeds weights, batches, splits and augmentation (0 .. 2**63 - 1)")
    device: str = _doc("auto", "auto | cpu | cuda | cuda:N | mps")
    time_limit: float = _doc(0.0, "seconds of training after which a run stops (reason \"time limit\"); 0 = none")


@dataclass
class RegressConfig(TrainConfig):
    """Regression of a target column on numeric input columns with K-fold CV."""

    # "bundled:NAME" is a file shipped inside nndl (found wherever nndl is installed); test_path "" = no test set
    train_path: str = "bundled:regression_train.csv"
    test_path: str = "bundled:regression_test.csv"
    x_cols: list[str] = _list([], "input columns by name (default: all but the last)")
    y_col: str = _doc("", "target column by name (default: the last)")
    hidden: list[int] = _list([128, 256], "hidden layer widths, any depth")
    activation: str = _choice("sigmoid", ["sigmoid", "tanh", "relu", "gelu"])
    init: str = _choice("default", ["default", "xavier", "kaiming"])
    dropout: float = _doc(0.0, "dropout after each hidden layer")
    folds: int = _doc(5, "K of the K-fold cross-validation")
    final: str = _choice("refit", ["refit", "ensemble"], "refit on all data, or average the fold models")
    batched: bool = _doc(True, "train the K fold models as one stacked model (same maths, fewer kernel launches)")
    standardize: bool = _doc(False, "scale inputs/targets with training-set mean/std")
    probe_inputs: list[float] = _list([-4.0, -2.0, 0.1, 2.5, 4.0], "inputs for activation profiles")
    splitter: str = _choice("kfold", ["kfold", "blocked", "cluster"],
                            "CV folds: shuffled, contiguous blocks of sorted x (block_col), or leave one "
                            "cluster out (clusters split at gaps in x, or given by group_col)")
    block_col: str = _doc("", "input column that splitter=blocked sorts along (time, position, ...); needed "
                              "with several input columns, default the only one")
    group_col: str = _doc("", "column of group labels for splitter=cluster (not an input); empty = find clusters in x")
    search: str = _choice("none", ["none", "auto"], "auto: built-in search scored by the splitter's CV, "
                                                     "then an ensemble of the best configs (preset auto)")
    ensemble_top: int = _doc(4, "search=auto: configs in the final ensemble (each with its fold models)")
    threads: int = _doc(0, "torch intra-op threads while training; 0 = 1 for tiny nets, else torch's default")
    reference: str = _choice("auto", ["auto", "gp", "ridge", "none"],
                             "baseline fitted beside the net (needs scikit-learn): auto = a Gaussian process for "
                             "one input column, ridge for several; none = off (--no-reference)")
    interval: str = _choice("model", ["model", "cv_plus"],
                            "90% interval: model = members' spread plus noise; cv_plus = conformal CV+ from the "
                            "fold models' held-out residuals (coverage >= 80% guaranteed, ~90% in practice, for "
                            "exchangeable data; see docs/regression_vs_gp.md)")
    lr: float = 0.02
    weight_decay: float = 1e-5
    epochs: int = 600
    batch_size: int = 256


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


TASK_CONFIGS = {"regress": RegressConfig, "classify": ClassifyConfig}

# Presets are small dicts of overrides on top of the task's defaults.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "regress": {
        # The reference notebook's network and training, unchanged.
        "seed": {},
        # Chosen by bench/regress_presets.py (96 configs, 5-fold CV on the training set only): the
        # top five by validation MSE are within noise of each other; this one has the smallest
        # fold-to-fold spread. GELU + standardised inputs/targets + stronger L2 fill the gaps smoothly.
        "smooth": {"activation": "gelu", "lr": 0.005, "weight_decay": 1e-3, "standardize": True},
        # A built-in search (nndl.tasks.regress.task.AUTO_SPACE: smooth activations x widths/depths x L2 x lr, on
        # standardised x/y) scored by blocked CV, whose held-out blocks are gaps in miniature; the final
        # model is the ensemble of the best configs' fold models, with a calibrated 90% interval.
        # Chosen by bench/regression_suite.py (generated gap problems), not on one test set.
        "auto": {"search": "auto", "splitter": "blocked", "final": "ensemble", "standardize": True},
    },
    "classify": {
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
    },
}


def field_choices(cls, name: str) -> list[str]:
    """The allowed values of a choice field (e.g. the classifier models), as the CLI offers them."""
    return list(next(f for f in dataclasses.fields(cls) if f.name == name).metadata["choices"])


def field_names(task: str) -> set[str]:
    """The config keys of ``task``."""
    return {f.name for f in dataclasses.fields(TASK_CONFIGS[task])}


def task_of_config(data: Any) -> str | None:
    """The task whose config has every key of ``data`` (a ``config.json``), or None when none does.

    For run folders made before nndl recorded the task in their marker: a resolved config holds
    all of its task's keys, and each task has keys the other lacks."""
    if not isinstance(data, dict) or not data:
        return None
    return next((task for task in TASK_CONFIGS if set(data) <= field_names(task)), None)


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _parse_scalar(kind, text: str, key: str):
    text = text.strip()
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise NndlError(f"--set {key}={text}: expected true or false")
    try:
        return kind(text)
    except ValueError:
        raise NndlError(f"--set {key}={text}: expected {kind.__name__}") from None


def _coerce_scalar(kind, value: Any, key: str):
    if isinstance(value, str):
        return _parse_scalar(kind, value.strip().strip("'\""), key)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and (kind is bool) == isinstance(value, bool):
        return value
    raise NndlError(f"config key '{key}': expected {kind.__name__}, got {value!r}")


def coerce(cls, key: str, value: Any) -> Any:
    """Convert ``value`` (a string from the CLI, or a JSON/TOML value) to the type of field ``key``."""
    types = _field_types(cls)
    if key not in types:
        close = difflib.get_close_matches(key, types, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(types)}"
        raise NndlError(f"unknown config key '{key}' for {cls.__name__}{hint}")
    kind = types[key]
    if typing.get_origin(kind) is not list:
        return _coerce_scalar(kind, value, key)
    (item,) = typing.get_args(kind)
    if isinstance(value, str):  # "128,256" or "[128, 256]"
        value = [p for p in value.strip().strip("[]").split(",") if p.strip()]
    if not isinstance(value, (list, tuple)):
        raise NndlError(f"config key '{key}': expected a list of {item.__name__}, got {value!r}")
    return [_coerce_scalar(item, v, key) for v in value]


def check_device(name: str) -> None:
    """Reject a ``device`` this machine does not have (torch is imported only for a GPU name)."""
    if name in ("auto", "cpu"):
        return
    match = re.fullmatch(r"cuda(?::(\d+))?|mps", name)
    if not match:
        raise NndlError(f"config key 'device' = {name!r}: choose auto, cpu, cuda, cuda:N or mps")
    import torch

    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise NndlError("config key 'device' = 'mps': this machine has no Apple GPU; use auto or cpu")
        return
    if not torch.cuda.is_available():
        raise NndlError(f"config key 'device' = {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; "
                        "use auto or cpu")
    index, count = int(match.group(1) or 0), torch.cuda.device_count()
    if index >= count:
        raise NndlError(f"config key 'device' = {name!r}: this machine has {count} CUDA device(s), "
                        f"cuda:0..cuda:{count - 1}; use one of those, or auto")


def validate(cfg) -> None:
    """Check choices and ranges; raise NndlError naming the field and the fix."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise NndlError(f"config key '{f.name}' = {value!r}: choose one of {', '.join(choices)}")
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise NndlError(f"config key '{f.name}' = {value!r}: must be a finite number")
    checks = [("lr", cfg.lr > 0, "must be > 0"), ("epochs", cfg.epochs >= 1, "must be >= 1"),
              ("momentum", 0 <= cfg.momentum < 1, "must be in [0, 1)"),
              ("time_limit", cfg.time_limit >= 0, "must be >= 0 seconds (0 = no limit)"),
              ("threads", getattr(cfg, "threads", 0) >= 0, "must be >= 0 (0 = the default)"),
              ("batch_size", cfg.batch_size >= 1, "must be >= 1"),
              ("weight_decay", cfg.weight_decay >= 0, "must be >= 0"), ("l1", cfg.l1 >= 0, "must be >= 0"),
              ("patience", cfg.patience >= 0, "must be >= 0"),
              # torch seeds take 64 bits and numpy's none below 0; the models of a run add their index to it
              ("seed", 0 <= cfg.seed < SEED_LIMIT, "must be in 0 .. 2**63 - 1"),
              ("warmup_epochs", 0 <= cfg.warmup_epochs <= cfg.epochs, "must be between 0 and epochs"),
              ("min_lr_factor", 0 <= cfg.min_lr_factor <= 1, "must be in [0, 1]")]
    if isinstance(cfg, RegressConfig):
        checks += [("folds", cfg.folds >= 2, "must be >= 2"), ("hidden", all(h >= 1 for h in cfg.hidden), "sizes must be >= 1"),
                   ("dropout", 0 <= cfg.dropout < 1, "must be in [0, 1)"),
                   ("ensemble_top", cfg.ensemble_top >= 1, "must be >= 1"), ("threads", cfg.threads >= 0, "must be >= 0")]
    if isinstance(cfg, ClassifyConfig):
        checks += [("val_fraction", 0 <= cfg.val_fraction < 1, "must be in [0, 1)"),
                   # early stopping watches the validation accuracy: without a split there is none to watch
                   ("patience", cfg.patience == 0 or cfg.val_fraction > 0,
                    "needs a validation split to watch; set val_fraction > 0 (e.g. 0.1), or patience=0"),
                   ("calibrate", cfg.calibrate != "temperature" or cfg.val_fraction > 0,
                    "fits the temperature on the validation split; set val_fraction > 0 (e.g. 0.1), or calibrate=none"),
                   ("test_fraction", 0 < cfg.test_fraction < 1 or (cfg.test_fraction == 0 and cfg.test_data),
                    "must be in (0, 1); 0 only with a test file (--test FILE.csv, or test_data=FILE.csv)"),
                   ("image_size", 8 <= cfg.image_size <= 512, "must be in 8..512 pixels"),
                   ("dropout", all(0 <= d < 1 for d in cfg.dropout), "values must be in [0, 1)"),
                   ("label_smoothing", 0 <= cfg.label_smoothing < 1, "must be in [0, 1)"),
                   ("erase", 0 <= cfg.erase <= 1, "must be in [0, 1]"),
                   ("translate", 0 <= cfg.translate <= 8, "must be in 0..8"),
                   ("rotate", 0 <= cfg.rotate <= 180, "must be in [0, 180]"),
                   ("scale", 0 <= cfg.scale <= 0.9, "must be in [0, 0.9]"),
                   ("noise", 0 <= cfg.noise <= 3, "must be in [0, 3]"),
                   ("mixup", 0 <= cfg.mixup <= 10, "must be in [0, 10]"),
                   ("cutmix", 0 <= cfg.cutmix <= 10, "must be in [0, 10]"),
                   ("cutmix_prob", 0 <= cfg.cutmix_prob <= 1, "must be in [0, 1]"),
                   ("subset", cfg.subset >= 0, "must be >= 0 (0 = all images)"),
                   ("test_subset", cfg.test_subset >= 0, "must be >= 0 (0 = all test images)"),
                   ("eval_batch_size", cfg.eval_batch_size >= 1, "must be >= 1"),
                   ("hidden", bool(cfg.hidden) and all(h >= 1 for h in cfg.hidden), "needs sizes >= 1"),
                   ("channels", "channels" not in MODEL_KINDS[cfg.model].reads
                    or (len(cfg.channels) == 3 and all(c >= 1 for c in cfg.channels)),
                    "needs three widths >= 1")]
    for key, ok, why in checks:
        if not ok:
            raise NndlError(f"config key '{key}' = {getattr(cfg, key)!r}: {why}")
    check_device(cfg.device)


def unused_settings(task: str, config: dict, device: str = "") -> dict[str, str]:
    """Config keys whose values the run never read, each with the reason (``momentum`` under Adam, ...).

    The report lists only what a run used; ``config.json`` keeps everything. The
    rules mirror what the training code reads: SGD alone reads ``momentum`` and
    ``nesterov``; a constant schedule never decays to ``min_lr_factor``; only the
    classifiers whose :data:`~nndl.base.model_kinds.MODEL_KINDS` entry lists a model setting read it
    (the MLP ``hidden``/``dropout``/``activation``/``init``, the CNNs ``channels``); ``amp`` is
    bf16 autocast on CUDA only, ``amp_cpu`` on CPUs only.
    """
    out: dict[str, str] = {}
    opt = config.get("optimizer")
    if opt is not None and opt != "sgd":
        out.update(momentum=f"only SGD uses it (optimizer {opt})", nesterov=f"only SGD uses it (optimizer {opt})")
    elif opt == "sgd" and config.get("momentum") == 0:
        out["nesterov"] = "needs momentum > 0"
    if config.get("schedule") == "constant":
        out["min_lr_factor"] = "the constant schedule does not decay"
    if task == "regress" and config.get("search", "none") != "auto":
        out["ensemble_top"] = f"only search=auto builds an ensemble of the best configs (search {config.get('search')})"
    if task == "regress" and config.get("splitter", "kfold") != "cluster":
        out["group_col"] = f"only splitter=cluster reads group labels (splitter {config.get('splitter')})"
    if task == "regress" and config.get("splitter", "kfold") != "blocked":
        out["block_col"] = f"only splitter=blocked sorts along a column (splitter {config.get('splitter')})"
    model = config.get("model")
    if task == "classify" and model in MODEL_KINDS:  # the registry says which settings each model reads
        for key in MODEL_SETTINGS:
            if key not in MODEL_KINDS[model].reads:
                out[key] = why_unused(model, key)
    if "amp" in config and device and not device.startswith("cuda"):
        out["amp"] = f"bf16 autocast runs on CUDA only (device {device}; amp_cpu is the CPU's setting)"
    if config.get("amp_cpu") and device and not device.startswith("cpu"):
        out["amp_cpu"] = f"the CPU's bf16 autocast (device {device})"
    return out


def check_applies(task: str, cfg, given: dict[str, Any]) -> None:
    """Refuse, in one line, a setting the user gave that this config would never read.

    Only keys given explicitly (by a preset file or ``--set``/overrides) whose value differs
    from the task's default are refused: ``--set hidden=64`` for a CNN or ``--set momentum=0.5``
    under Adam would otherwise be ignored in silence. ``amp`` and ``amp_cpu`` depend on the device
    (and the CPU) at run time and are only left out of the report. The rules are
    :func:`unused_settings`, shared with the report.
    """
    defaults = to_dict(TASK_CONFIGS[task]())
    unused = unused_settings(task, to_dict(cfg))
    unused.pop("amp", None)
    unused.pop("amp_cpu", None)
    for key in given:
        if key in unused and getattr(cfg, key) != defaults.get(key):
            raise NndlError(f"config key '{key}' = {getattr(cfg, key)!r} does not apply: {unused[key]}; "
                            f"remove it or change the setting it depends on")
    if task == "classify" and "dropout" in given and len(cfg.dropout) != len(cfg.hidden):
        # the MLP would cut the list or pad it with 0: rates the user wrote would be dropped or missing
        rates = ",".join([f"{cfg.dropout[0]:g}"] * len(cfg.hidden)) if cfg.dropout else "0"
        raise NndlError(f"config key 'dropout' = {cfg.dropout!r}: one rate per hidden layer, but hidden = "
                        f"{cfg.hidden!r} has {len(cfg.hidden)}; give {len(cfg.hidden)} rates, e.g. dropout={rates}")


def read_preset_file(path: str | Path) -> dict[str, Any]:
    """Read a preset file (.toml or .json) of ``key = value`` pairs."""
    path = Path(path)
    try:
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except OSError as e:
        raise NndlError(f"{path}: cannot read preset file ({e.strerror})") from None
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise NndlError(f"{path}: not a valid {path.suffix[1:] or 'JSON'} preset file ({e})") from None
    if not isinstance(data, dict):
        raise NndlError(f"{path}: a preset file must hold key = value pairs")
    data.pop("task", None)
    return data


def parse_overrides(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """``["lr=0.1", "hidden=64,64"]`` (from ``--set``) or a dict -> a new dict of raw values.

    Any other type (a number, or one string, whose characters would be read as items) is one
    NndlError line: a string cannot be split into settings safely, since list values hold commas.
    """
    how = "give a dict ({'lr': 0.01}) or a list of 'key=value' strings (['lr=0.01'])"
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        key = next((k for k in overrides if not isinstance(k, str)), None)
        if key is not None:
            raise NndlError(f"overrides: key {key!r} is not a config key name (a str); {how}")
        return dict(overrides)
    if not isinstance(overrides, (list, tuple)):
        raise NndlError(f"overrides = {overrides!r}: {how}")
    pairs = {}
    for item in overrides:
        if not isinstance(item, str):
            raise NndlError(f"overrides: {item!r} is not a 'key=value' string; {how}")
        if "=" not in item:
            raise NndlError(f"--set {item}: expected key=value, e.g. --set lr=0.01")
        key, _, val = item.partition("=")
        pairs[key.strip()] = val
    return pairs


def resolve(task: str, preset: str | None = None, overrides: dict[str, Any] | list[str] | None = None,
            seed: int | None = None):
    """Build the config for ``task`` from defaults, a preset (name or file), overrides and a seed.

    Parameters
    ----------
    task : {"regress", "classify"}
    preset : str, optional
        A preset name from :data:`PRESETS` or a path to a ``.toml``/``.json`` preset file.
    overrides : dict or list of "key=value" strings, optional
        Field overrides; unknown keys and wrong types raise :class:`NndlError`.
    seed : int, optional
        Overrides the ``seed`` field last.

    Returns
    -------
    RegressConfig or ClassifyConfig
    """
    cls = TASK_CONFIGS[task]
    values: dict[str, Any] = {}
    preset = text_argument(preset, "preset")
    if preset:
        if preset in PRESETS[task]:
            values.update(PRESETS[task][preset])
        elif Path(preset).suffix in (".toml", ".json") and Path(preset).exists():
            values.update(read_preset_file(preset))
        else:
            raise NndlError(f"unknown preset '{preset}' for {task}: choose one of "
                            f"{', '.join(PRESETS[task])} or give a .toml/.json preset file")
    values.update(parse_overrides(overrides))
    if seed is not None:
        values["seed"] = seed
    cfg = cls(**{k: coerce(cls, k, v) for k, v in values.items()})  # built = validated (_Checked)
    check_applies(task, cfg, values)
    return cfg


def preset_keys(task: str, preset: str | None, overrides: dict[str, Any] | list[str] | None = None) -> set[str]:
    """The config keys whose values come from a built-in named preset (not from ``overrides``).

    Those are nndl's recipe, which a run may adapt to its data (e.g. switch a preset's mirror flip
    off for digits); a key the user set, in ``--set``/overrides or in their own preset file, is theirs.
    """
    if not preset or preset not in PRESETS[task]:
        return set()
    return set(PRESETS[task][preset]) - set(parse_overrides(overrides))


def user_keys(preset: str | None, overrides: dict[str, Any] | list[str] | None = None) -> set[str]:
    """The config keys the user set: in ``--set``/overrides or in their own preset file.

    Keys outside this set hold nndl's defaults or a built-in preset's recipe, which a run may adapt
    to its data (each change said in one line); a key the user set is never changed behind their back.
    """
    keys = set(parse_overrides(overrides))
    if preset and Path(preset).suffix in (".toml", ".json") and Path(preset).exists():
        keys |= set(read_preset_file(preset))
    return keys


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(task: str, data: dict[str, Any]):
    """Rebuild a config saved by :func:`to_dict` (keys unknown to this version are an error)."""
    cls = TASK_CONFIGS[task]
    cfg = cls(**{k: coerce(cls, k, v) for k, v in data.items()})  # built = validated (_Checked)
    return cfg


def format_config(cfg) -> str:
    """The resolved config as aligned ``key = value`` lines, for printing."""
    d = to_dict(cfg)
    width = max(map(len, d))
    return "\n".join(f"  {k:<{width}} = {v}" for k, v in d.items())


def describe_presets(task: str) -> str:
    """The named presets of ``task``, one line each with the values it sets over the defaults."""
    lines = [f"{task} presets (nndl {task} --preset NAME; files: --preset my.toml):"]
    for name, values in PRESETS[task].items():
        shown = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in values.items())
        lines.append(f"  {name:<8} {shown or '(the defaults)'}")
    return "\n".join(lines)


def describe_config(task: str, preset: str | None = None) -> str:
    """Every config key of ``task`` with its type, value (defaults, or ``preset``'s), choices and help."""
    cfg = resolve(task, preset)
    types = _field_types(TASK_CONFIGS[task])
    rows = []
    for f in dataclasses.fields(cfg):
        kind = types[f.name]
        kind_name = (f"list[{typing.get_args(kind)[0].__name__}]" if typing.get_origin(kind) is list
                     else kind.__name__)
        value = getattr(cfg, f.name)
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        choices = f.metadata.get("choices")
        notes = [f"one of {'|'.join(choices)}"] if choices else []
        notes += [f.metadata["help"]] if f.metadata.get("help") else []
        rows.append((f.name, kind_name, shown or '""', "; ".join(notes)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    title = f"{task} config ({'preset ' + preset if preset else 'defaults'}); set with --set KEY=VALUE"
    return "\n".join([title] + [f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip()
                                for a, b, c, d in rows])
