"""The classification task end to end: dataset -> split -> train -> test once -> run folder.

The dataset (:mod:`nndl.data`: Fashion-MNIST, any IDX folder, an image folder, a CSV table)
decides the input shape, the classes and the normalisation; nothing here assumes one of them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from nndl.base import config as config_mod
from nndl import data as datasets
from nndl.data.fashion import FashionData
from nndl.data.splits import stratified_split
from nndl.data import Dataset
from nndl.training.threads import using_threads
from nndl.base.errors import NndlError, function_argument, path_argument
from nndl.nn.inference import input_transform
from nndl.base.model_kinds import MODEL_KINDS
from nndl.nn.metrics import classification_metrics
from nndl.nn.models import build_classifier
from nndl.tasks.base import Setup, Task, run_task
from nndl.tasks.classify import NAME
from nndl.tasks.classify.config import ClassifyConfig
from nndl.runfolder.files import read_json, save_model, write_history_csv, write_json
from nndl.training.trainer import ModelOptions, autocast_on, evaluate, load_checkpoint, pick_device
from nndl.training.trainer import train as fit


def read_dataset(cfg, data: Dataset | FashionData | None = None) -> Dataset:
    """The dataset of ``cfg`` (``data``/``dataset`` keys), or ``data`` when already loaded (not yet checked
    against the model and augmentation settings: :func:`load_dataset` does that)."""
    if isinstance(data, FashionData):
        from nndl.data.fashion_mnist import from_fashion

        data = from_fashion(data)
    return data if data is not None else datasets.load(cfg)


def load_dataset(cfg, data: Dataset | FashionData | None = None) -> Dataset:
    """The dataset of ``cfg`` (``data``/``dataset`` keys), or ``data`` when already loaded; checked against
    the model, augmentation and reference settings before anything is written."""
    from nndl.tasks.classify.reference import choose

    ds = read_dataset(cfg, data)
    choose(cfg.reference, ds.is_image)  # an explicit reference this data or this install cannot fit: one line
    if not ds.is_image:
        if MODEL_KINDS[cfg.model].images_only:
            readers = ", ".join(k.name for k in MODEL_KINDS.values() if not k.images_only)
            raise NndlError(f"config key 'model' = {cfg.model!r}: {ds.source} is a table ({ds.input_shape[0]} "
                            f"features); only model={readers} reads table rows")
        if cfg.tta_flip:
            raise NndlError(f"config key 'tta_flip' = true: {ds.source} is a table; mirroring applies to images "
                            "only; set tta_flip=false")
        from nndl.nn import augment

        augment.augmenter(augment.options(cfg), input_shape=ds.input_shape)  # images-only ones refused here
    return ds


MIRROR_KEYS = ("flip", "tta_flip")  # the settings that show the network mirrored images


def fit_to_data(cfg, ds: Dataset, from_preset: set[str] | frozenset[str] = frozenset(), preset: str | None = None,
                echo: Callable[[str], None] = print):
    """``cfg`` with the preset settings that do not fit ``ds`` switched off, each change said in one line.

    A mirror flip (``flip``, ``tta_flip``) changes what a digit, a letter or text means, so it fits only
    data whose classes survive mirroring (:attr:`Dataset.mirror_invariant`, or the user's
    ``mirror_invariant`` setting). A flip that came from a built-in preset (``from_preset``: keys the
    user did not set) is switched off for other data; one the user asked for is kept (it is their data),
    with a line saying so, and refused where ``mirror_invariant=no`` says the opposite or (by
    :func:`load_dataset`) for table rows, which have nothing to mirror. The reference model line
    (skipped without scikit-learn) is printed here too, once per run.

    Returns
    -------
    ClassifyConfig
        ``cfg`` itself when nothing changes, else a copy (the config the run saves and trains with).
    """
    from nndl.tasks.classify.reference import SKIPPED_LINE, choose

    on = [k for k in MIRROR_KEYS if getattr(cfg, k)]
    asked, preset_on = [k for k in on if k not in from_preset], [k for k in on if k in from_preset]
    if not ds.is_image:
        invariant, why = False, "table rows have nothing to mirror"
    else:
        invariant = {"auto": ds.mirror_invariant, "yes": True, "no": False}[cfg.mirror_invariant]
        why = ("mirror_invariant=no" if cfg.mirror_invariant == "no" else
               f"{ds.source} ({ds.kind}) is not known to keep its classes when mirrored (digits, letters and "
               "text do not); --set mirror_invariant=yes if it does")
    if not invariant and asked and cfg.mirror_invariant == "no":
        raise NndlError(f"config key '{asked[0]}' = true: mirror_invariant=no says a mirrored image changes class; "
                        f"set {asked[0]}=false or mirror_invariant=yes")
    if not invariant and preset_on:
        echo(f"{' and '.join(preset_on)} of preset {preset} switched off: {why}")
        cfg = dataclasses.replace(cfg, **{k: False for k in preset_on})
    if not invariant and asked and ds.is_image and cfg.mirror_invariant == "auto":
        echo(f"{' and '.join(asked)} on as asked, though {why}")
    if cfg.reference == "auto" and choose(cfg.reference, ds.is_image) is None:
        echo(SKIPPED_LINE)
    return cfg


# Small data sets need more optimiser steps than the epochs of a recipe made for 60,000 images give them:
# 20 epochs at batch 256 are 20 steps on iris' 101 training rows, and the net stops far from a fit
# (0.807 test accuracy against logistic regression's 0.974). bench/datasets.py chose these two numbers:
# with them iris reaches 0.991, breast cancer 0.958, wine 1.000 and digits 0.976 (3 seeds each).
MIN_STEPS_PER_EPOCH = 10  # a smaller batch before more epochs: each epoch still sees every row once
MIN_BATCH_SIZE = 32
MIN_STEPS = 500


def fit_to_size(cfg, n_rows: int, user_set: set[str], echo: Callable[[str], None] = print):
    """``cfg`` with enough optimiser steps for ``n_rows`` training rows, each change said in one line.

    A ``batch_size`` that gives fewer than :data:`MIN_STEPS_PER_EPOCH` steps per epoch shrinks (not
    below :data:`MIN_BATCH_SIZE`), then ``epochs`` grow until the run takes :data:`MIN_STEPS` steps.
    Keys in ``user_set`` (the user's ``--set``/overrides or preset file) are never changed; on
    Fashion-MNIST's 54,000 training images nothing changes.

    Parameters
    ----------
    cfg : ClassifyConfig
    n_rows : int
        Training rows after ``subset`` and the validation split.
    user_set : set of str
        Config keys the user set (:func:`nndl.base.config.user_keys`).
    echo : callable
        Receives the one line that says what changed.
    """
    changes: dict[str, int] = {}
    batch = cfg.batch_size
    if "batch_size" not in user_set and math.ceil(n_rows / batch) < MIN_STEPS_PER_EPOCH:
        batch = min(batch, max(MIN_BATCH_SIZE, n_rows // MIN_STEPS_PER_EPOCH))
    if batch != cfg.batch_size:
        changes["batch_size"] = batch
    per_epoch = max(1, math.ceil(n_rows / batch))
    if "epochs" not in user_set and cfg.epochs * per_epoch < MIN_STEPS:
        changes["epochs"] = math.ceil(MIN_STEPS / per_epoch)
    if not changes:
        return cfg
    said = " and ".join(f"{k} {getattr(cfg, k)} -> {v}" for k, v in changes.items())
    echo(f"{said}: {n_rows} training rows need at least {MIN_STEPS} optimiser steps "
         f"(--set {'/'.join(f'{k}=N' for k in changes)} to choose)")
    return dataclasses.replace(cfg, **changes)


def training_rows(cfg, ds: Dataset) -> int:
    """How many rows the network trains on: ``subset`` of the training split, less the validation share.

    Counted as :func:`prepare_data` draws them (stratified, seeded), from the labels alone.
    """
    labels = ds.y_train
    if cfg.subset and cfg.subset < len(labels):
        labels = labels[stratified_split(labels, cfg.subset / len(labels), seed=cfg.seed)[1]]
    return len(stratified_split(labels, cfg.val_fraction, seed=cfg.seed)[0])


def prepare_data(cfg, data: Dataset | FashionData | None = None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load (or take) the data set, apply ``subset``, and split train/validation (stratified, seeded).

    Returns a dict of tensors on ``device`` (uint8 images ``(N, C, H, W)`` or float table rows,
    int64 labels): ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``, ``y_test``, plus
    ``source`` and ``dataset`` (the :class:`~nndl.data.Dataset`, for its shape, classes and
    normalisation).
    """
    data = load_dataset(cfg, data)
    images, labels = data.x_train, data.y_train
    _check_subset_sizes(cfg, len(labels), len(data.y_test), "images" if data.is_image else "rows")
    if cfg.subset and cfg.subset < len(labels):
        _, keep = stratified_split(labels, cfg.subset / len(labels), seed=cfg.seed)
        images, labels = images[keep], labels[keep]
    train_idx, val_idx = stratified_split(labels, cfg.val_fraction, seed=cfg.seed)
    _check_split(cfg, labels, train_idx, val_idx, data.num_classes)
    x_test, y_test = data.x_test, data.y_test
    if cfg.test_subset and cfg.test_subset < len(y_test):
        x_test, y_test = x_test[: cfg.test_subset], y_test[: cfg.test_subset]
    move = lambda t: t.to(device)  # noqa: E731 - loaded once; batches are index slices on the device
    return {"x_train": move(images[train_idx]), "y_train": move(labels[train_idx].long()),
            "x_val": move(images[val_idx]), "y_val": move(labels[val_idx].long()),
            "x_test": move(x_test), "y_test": move(y_test.long()), "source": data.source, "dataset": data}


def _check_subset_sizes(cfg, n_train: int, n_test: int, unit: str = "images") -> None:
    """``subset``/``test_subset`` larger than the data would silently mean "all": say so instead."""
    for key, n, what in (("subset", n_train, "training"), ("test_subset", n_test, "test")):
        if getattr(cfg, key) > n:
            raise NndlError(f"config key '{key}' = {getattr(cfg, key)}: the {what} set has only {n} {unit}; "
                            f"use at most {n}, or 0 for all")


def _check_split(cfg, labels: torch.Tensor, train_idx: torch.Tensor, val_idx: torch.Tensor, n_classes: int) -> None:
    """Every class needs training images, and a validation split that was asked for must not be empty."""
    present = set(labels[train_idx].tolist())
    missing = [c for c in range(n_classes) if c not in present]
    if missing and not cfg.subset:
        raise NndlError(f"config key 'val_fraction' = {cfg.val_fraction}: leaves {len(missing)} of {n_classes} "
                        "classes without training examples (too few per class); lower val_fraction or add data")
    if missing:
        raise NndlError(f"config key 'subset' = {cfg.subset}: leaves {len(missing)} of {n_classes} classes without "
                        f"training images (with val_fraction = {cfg.val_fraction}); use subset >= "
                        f"{math.ceil(n_classes / (1 - cfg.val_fraction)) * 2} or 0 for all")
    if cfg.val_fraction > 0 and len(val_idx) == 0:
        raise NndlError(f"config key 'subset' = {cfg.subset}: val_fraction = {cfg.val_fraction} of so few images "
                        "per class rounds to an empty validation split; use a larger subset or val_fraction=0")


def _channels_last(cfg, device: torch.device) -> bool:
    # oneDNN (CPU) and cuDNN (CUDA) convolutions run in NHWC without layout reorders: the
    # reference CNN's training step is ~1.45x faster on 2 CPU cores (bench/cpu_layout.py).
    return MODEL_KINDS[cfg.model].images_only and device.type in ("cpu", "cuda")


def _meta(dataset: Dataset | dict | None) -> dict:
    if dataset is None:  # callers that predate datasets (bench, search) train on Fashion-MNIST
        from nndl.data.fashion_mnist import META

        return META
    return dataset.meta() if isinstance(dataset, Dataset) else dataset


def transform_for(cfg, device: torch.device, dataset: Dataset | dict | None = None):
    """The batch transform (raw -> normalised, augmented in training) in the layout the model expects.

    ``dataset`` (a :class:`~nndl.data.Dataset` or its ``meta()``) gives the normalisation;
    None means Fashion-MNIST. The augmentations are :mod:`nndl.nn.augment`'s registry; one that
    needs images is refused here for a table. With mixup/cutmix the transform's ``mixed_targets``
    gives the training loop each batch's mixed labels.
    """
    from nndl.nn import augment

    meta = _meta(dataset)
    image = len(meta["input_shape"]) == 3
    aug = augment.augmenter(augment.options(cfg), std=meta["std"], input_shape=meta["input_shape"])
    inner = input_transform(meta, aug if image else None, _channels_last(cfg, device) and image)
    return augment.InputTransform(inner, aug, after=not image)


def classifier_on(cfg, device: torch.device, dataset: Dataset | dict | None = None) -> torch.nn.Module:
    """A freshly initialised classifier for ``cfg`` and ``dataset``'s shape and classes on ``device``,
    in its fastest memory layout (None: Fashion-MNIST)."""
    meta = _meta(dataset)
    shape = tuple(meta["input_shape"])
    try:
        model = build_classifier(cfg, shape if len(shape) == 3 else (1, 1, shape[0]), len(meta["class_names"]))
    except ValueError as e:  # e.g. the cnn model on images smaller than 12x12
        raise NndlError(f"config key 'model' = {cfg.model!r}: {e}; choose another model or a larger image_size") \
            from None
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if _channels_last(cfg, device) else model


def kept_val_accuracy(cfg, result) -> float:
    """The validation accuracy of the weights the model keeps, read from its history row.

    With early stopping (``patience > 0``) that is ``best_epoch``'s row (the epoch whose weights
    were put back), else the last one. NaN when that epoch was not validated
    (``val_fraction = 0``): no other number, such as ``best_metric`` of another monitor or the
    train loss, is ever put in its place.
    """
    rows = result.history
    if not rows:
        return math.nan
    kept = result.best_epoch if 0 < result.best_epoch <= len(rows) and cfg.patience > 0 else len(rows)
    return float(rows[kept - 1].get("val_acc", math.nan))


def reference_metrics(cfg, data: dict[str, Any]) -> dict[str, Any]:
    """The reference model's test metrics (:mod:`nndl.tasks.classify.reference`), fitted on the rows the network trained
    on (``x_train``: after ``subset`` and the validation split) and scored on its test rows."""
    from nndl.tasks.classify.reference import choose, fit_reference

    kind = choose(cfg.reference, data["dataset"].is_image)
    if kind is None:
        return {"reference_model": "none"}
    return fit_reference(kind, data["x_train"], data["y_train"], data["x_test"], data["y_test"], seed=cfg.seed)


def calibrate(cfg, model: torch.nn.Module, transform, data: dict[str, Any]) -> float:
    """Fit a temperature on the validation split and fold it into ``model`` (:mod:`nndl.nn.calibration`);
    the temperature, or 1.0 where ``calibrate`` says not to (``auto``: only models with scaled logits)."""
    from nndl.nn.calibration import fit_temperature, fold_temperature

    wanted = cfg.calibrate == "temperature" or (cfg.calibrate == "auto" and MODEL_KINDS[cfg.model].scaled_logits)
    if not wanted or len(data["y_val"]) == 0:
        return 1.0
    val = evaluate(model, data["x_val"], data["y_val"], "classification", batch_size=cfg.eval_batch_size,
                   transform=transform, tta_flip=cfg.tta_flip, amp=autocast_on(cfg, data["x_val"].device))
    temperature = fit_temperature(val["outputs"], data["y_val"])
    fold_temperature(model, temperature)
    return temperature


def calibration_metrics(temperature: float, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The temperature and the test log loss and ECE the uncalibrated network would have had (``logits`` are
    the calibrated ones, ``logits * T`` the network's own); nothing for an uncalibrated run."""
    if temperature == 1.0:
        return {}
    raw = classification_metrics(labels.cpu().numpy(), (logits.float() * temperature).softmax(1).cpu().numpy(), "")
    return {"temperature": temperature, "test_log_loss_uncalibrated": raw["log_loss"],
            "test_ece_uncalibrated": raw["ece"]}


@dataclass
class TrainedClassifier:
    """What :meth:`ClassificationTask.fit` hands to the later steps (``test`` adds the test logits)."""

    model: torch.nn.Module
    transform: Any
    result: Any  # TrainResult
    device: torch.device
    test_outputs: torch.Tensor | None = None
    temperature: float = 1.0  # folded into the output layer (nndl.nn.calibration); 1 = not calibrated
    search: dict = dataclasses.field(default_factory=dict)  # search=auto's record (search.json), else empty


class ClassificationTask(Task):
    """Classification of images or table rows: one model trained on a stratified split, tested once."""

    name = NAME
    cli_flags = {"data": "--data", "label_col": "--label-col"}
    resume_command = "nndl classify --resume {run_dir}"  # a Ctrl-C at any moment keeps the run for it
    val_metric, direction, test_metric = "val_accuracy", "maximize", "test_accuracy"
    default_preset = "mlp"
    stacked_trials = True  # --batch-trials: MLP or CNN trials of one network train as one stack (stack_key)
    key_metrics = ("test_accuracy", "val_accuracy", "test_loss", "epochs", "best_epoch", "train_seconds",
                   "parameters", "model")
    main_figures = ("losses", "confusion_matrix")
    label = "classification"
    cards = ({"title": "Test accuracy", "value": "test_accuracy", "format": "percent", "note": "{test_images} images"},
             {"title": "Validation accuracy", "value": "val_accuracy", "format": "percent"},
             {"title": "Test loss", "value": "test_loss"},
             {"title": "Epochs", "value": "epochs", "note": "{stop_reason}"},
             {"title": "Training time", "value": "train_seconds", "format": "seconds", "note": "{device}"},
             {"title": "Model", "value": "model", "format": "text", "note": "{parameters:,} parameters"})
    captions = {"losses.png": "Loss and accuracy per epoch on the training and validation sets.",
                "feature_maps.png": "Feature maps of one test image of each class: the first channels of "
                                    "selected convolution layers (each map on its own colour scale)."}

    search_choice = None  # an auto.Choice made before the run (classify(preset="auto")), saved as search.json

    def search_data(self, cfg) -> Dataset:
        return load_dataset(cfg)  # any dataset kind the config names (nndl.data), read once per process

    def threads(self, cfg):
        return using_threads(cfg.threads)  # the caller's torch thread count is restored afterwards

    def inputs(self, cfg) -> list[str]:
        return [cfg.data, cfg.test_data]

    def load(self, cfg, data: Dataset | FashionData | None = None) -> dict[str, Any]:
        return prepare_data(cfg, data, pick_device(cfg.device))

    def setup(self, cfg, data: dict[str, Any] | None, device) -> Setup:
        tensors = data if data is not None else prepare_data(cfg, None, device)
        ds = tensors["dataset"]  # shape, classes and normalisation of whichever dataset cfg names

        def make_model(i: int) -> torch.nn.Module:
            torch.manual_seed(cfg.seed + i)
            return classifier_on(cfg, device, ds)

        return Setup(make_model, tensors["x_train"], tensors["y_train"], transform_for(cfg, device, ds),
                     "classification")

    def cross_validate(self, cfg, data: Dataset | FashionData | None = None, folds: int | None = None,
                       on_fold=None) -> list[dict]:
        if cfg.search == "auto":  # a search inside every trial of a search would hide what the trial is
            raise NndlError("search=auto chooses a recipe inside one run; tune another preset (mlp, cnn, ...) "
                            "or drop search=auto")
        scored = cross_validate_classifier(cfg, data, folds or 3, on_fold=on_fold)
        return [{"score": f["val_accuracy"], **f} for f in scored]

    def stack_key(self, cfg):
        return stack_key(cfg)

    def cross_validate_stacked(self, cfgs: list, data: Dataset | FashionData | None = None,
                               folds: int | None = None) -> list[list[dict]]:
        """K-fold scores of each config: those sharing a :func:`stack_key` (one network, seed and epoch
        count; see :func:`stack_blocker`) train all their folds as one stack; a config without a key (a
        ResNet, an MLP with augmentation, ...) is cross-validated one by one, as :meth:`cross_validate` does it."""
        if any(c.search == "auto" for c in cfgs):
            return [self.cross_validate(c, data, folds) for c in cfgs]  # its one-line refusal
        data = read_dataset(cfgs[0], data)  # read once for every group
        groups: dict[Any, list[int]] = {}
        for i, c in enumerate(cfgs):
            key = stack_key(c)
            groups.setdefault(("alone", i) if key is None else key, []).append(i)
        out: list[list[dict] | None] = [None] * len(cfgs)
        for key, members in groups.items():
            if key[0] == "alone":
                done = [self.cross_validate(cfgs[members[0]], data, folds)]
            else:
                done = [[{"score": f["val_accuracy"], **f} for f in scored] for scored in
                        cross_validate_stacked_classifiers([cfgs[i] for i in members], data, folds or 3)]
            for i, scored in zip(members, done):
                out[i] = scored
        return out

    def header(self, cfg, data: dict[str, Any]) -> list[str]:
        ds = data["dataset"]
        shape = "x".join(map(str, ds.input_shape))
        return [f"data: {data['source']} ({ds.kind}, {shape}, {ds.num_classes} classes; {len(data['y_train'])} train"
                f" / {len(data['y_val'])} validation / {len(data['y_test'])} test)"]

    def fit(self, cfg, data: dict[str, Any], ctx) -> "TrainedClassifier":
        device = data["x_train"].device
        torch.manual_seed(cfg.seed)
        model = classifier_on(cfg, device, data["dataset"])
        transform = transform_for(cfg, device, data["dataset"])
        result = fit(model, data["x_train"], data["y_train"], cfg, task="classification", x_val=data["x_val"],
                     y_val=data["y_val"], transform=transform, checkpoint_path=ctx.run_dir / "checkpoint.pt",
                     resume=ctx.resume, progress=ctx.progress, echo=ctx.echo, callbacks=ctx.callbacks,
                     options=ModelOptions.of(cfg, device))
        return TrainedClassifier(model, transform, result, device, temperature=calibrate(cfg, model, transform, data),
                                 search=self._search_record(cfg, ctx))

    def _search_record(self, cfg, ctx) -> dict:
        """search=auto's choice as metrics keys: made before this run, or read back when the run resumes."""
        path = ctx.run_dir / "search.json"
        if self.search_choice is not None:
            write_json(path, self.search_choice.metrics())
        elif cfg.search == "auto" and path.is_file():
            return read_json(path)
        return self.search_choice.metrics() if self.search_choice is not None else {}

    def test(self, cfg, data: dict[str, Any], fitted: "TrainedClassifier") -> dict:
        model, result, device, ds = fitted.model, fitted.result, fitted.device, data["dataset"]
        bf16 = autocast_on(cfg, device)
        test = evaluate(model, data["x_test"], data["y_test"], "classification", batch_size=cfg.eval_batch_size,
                        transform=fitted.transform, tta_flip=cfg.tta_flip, amp=bf16)
        fitted.test_outputs = test["outputs"]  # for the figures
        pred, y_test = test["outputs"].argmax(1), data["y_test"]
        per_class = {name: (pred[y_test == c] == c).float().mean().item() for c, name in enumerate(ds.class_names)
                     if (y_test == c).any()}
        probs = test["outputs"].float().softmax(1).cpu().numpy()
        return {"test_accuracy": test["accuracy"], "val_accuracy": kept_val_accuracy(cfg, result),
                "test_loss": test["loss"],
                "per_class_accuracy": per_class, "train_seconds": result.train_seconds,
                "epochs": len(result.history), "best_epoch": result.best_epoch,
                "compile_seconds": result.compile_seconds, "stop_reason": result.stop_reason,
                "diverged": result.diverged, "model": cfg.model, "autocast": "bf16" if bf16 else "off",
                "parameters": sum(p.numel() for p in model.parameters()), "device": str(device),
                "train_images": len(data["y_train"]), "test_images": len(y_test), "dataset": ds.kind,
                "classes": ds.num_classes,
                **classification_metrics(y_test.cpu().numpy(), probs),
                **calibration_metrics(fitted.temperature, test["outputs"], y_test),
                **reference_metrics(cfg, data), **fitted.search}

    def save(self, cfg, data: dict[str, Any], fitted: "TrainedClassifier", run_dir: Path) -> None:
        write_history_csv(run_dir / "history.csv", fitted.result.history)
        calibrated = {"temperature": fitted.temperature} if fitted.temperature != 1.0 else {}
        save_model(run_dir / "model.pt", "classify", config_mod.to_dict(cfg), [fitted.model.state_dict()],
                   **data["dataset"].meta(), **calibrated)

    def figures(self, cfg, data: dict[str, Any], fitted: "TrainedClassifier", fig_dir: Path) -> None:
        from nndl.figures.classification import write_classification_figures

        ds, transform, device = data["dataset"], fitted.transform, fitted.device
        probs = fitted.test_outputs.softmax(1).cpu()
        write_classification_figures(fitted.model, lambda xb: transform(xb.to(device), None),
                                     data["x_test"].cpu(), data["y_test"].cpu(), probs, fitted.result.history,
                                     list(ds.class_names), fig_dir, input_shape=ds.input_shape, tta_flip=cfg.tta_flip)

    def warnings(self, metrics: dict, fitted: "TrainedClassifier") -> list[str]:
        return [fitted.result.stop_reason] if fitted.result.diverged else []

    def check_model_meta(self, path: Path, payload: dict) -> None:
        from nndl.tasks.classify import predict

        predict.check_model_meta(path, payload)

    def rebuild(self, payload: dict, path: Path, cfg, saved_config):
        from nndl.tasks.classify import predict

        return predict.rebuild(payload, path, cfg)

    def predict_files(self, run, files: list, top: int, json: bool, table: bool) -> tuple[list[dict], str]:
        from nndl.tasks.classify import predict

        return predict.predict_files(run, files, top, json, table)

    def export_module(self, run):
        from nndl.tasks.classify import export

        return export.export_module(run)


TASK = ClassificationTask()


def classify(preset: str | None = "mlp", overrides: dict[str, Any] | list[str] | None = None, seed: int | None = None,
             out: str | None = None, overwrite: bool = False, resume: str | None = None, progress: bool = True,
             figures: bool = True, tensorboard: bool = False, data: Dataset | FashionData | None = None,
             echo: Callable[[str], None] = print, callbacks=None, verbose: bool | None = None):
    """Train a classifier, evaluate it once on the test set and write a run folder.

    The data are Fashion-MNIST unless the config's ``data`` names an IDX folder, a folder of
    class subfolders of images, or a CSV table (``label_col``); see :mod:`nndl.data`. A named
    preset's mirror flips are switched off, in one printed line, for data not known to keep their
    classes when mirrored (:func:`fit_to_data`); a reference model is fitted beside the network
    (``reference``, :mod:`nndl.tasks.classify.reference`).

    Parameters
    ----------
    preset : str, optional
        ``mlp``, ``cnn``, ``resnet``, ``fast``, or a ``.toml``/``.json`` preset file.
    overrides : dict or list of "key=value", optional
        Config overrides (see :class:`nndl.tasks.classify.config.ClassifyConfig`), e.g. ``{"epochs": 5}``.
    seed : int, optional
    out : str, optional
        Run folder (default: a new timestamped folder under ``runs/``).
    overwrite : bool
        Allow ``out`` to be an existing non-empty folder.
    resume : str, optional
        A run folder whose training was interrupted: continue from its checkpoint
        with its saved config (no preset/overrides allowed). A finished run (its
        ``metrics.json`` written) is left untouched and returned as it is.
    data : Dataset or FashionData, optional
        Already loaded data (skips finding and reading the files).

    tensorboard : bool
        Log scalars and weight histograms to ``RUN/tensorboard`` live, epoch by epoch, and the
        figures at the end (the :class:`nndl.training.callbacks.TensorBoard` callback).
    callbacks : list, optional
        :mod:`nndl.training.callbacks` called on the training events (e.g. ``EarlyStopping``, ``CSVLogger``).
    verbose : bool, optional
        Print the resolved config and the metrics table (default: yes, except inside Jupyter).

    Returns
    -------
    nndl.runfolder.objects.Run
        The run (``.metrics``, ``.config``, ``.history``, ``.figure(name)``); as a mapping it is
        the metrics of ``metrics.json`` (``test_accuracy``, ``val_accuracy``, ``test_loss``,
        ``per_class_accuracy``, ``train_seconds``, ``epochs``, ``test_macro_f1``,
        ``test_balanced_accuracy``, ``test_log_loss``, ``test_ece``, ``reference_model``,
        ``reference_test_accuracy``, ``reference_test_macro_f1``, ...) plus ``run_dir``.
    """
    from nndl.training.callbacks import for_run
    from nndl.runfolder.objects import is_verbose

    cbs = for_run(callbacks, tensorboard)  # checks the tensorboard import before any work
    resume = path_argument(resume, "resume") if resume is not None and resume != "" else None
    if data is not None and not isinstance(data, (Dataset, FashionData)):
        raise NndlError(f"data = {data!r:.60}: expected an nndl.data.Dataset or FashionData; give a path as "
                        "overrides={'data': PATH}")
    if resume:
        if out is not None or overwrite:
            raise NndlError(f"--resume {resume}: continues the run in its own folder; drop "
                            f"{'--out' if out is not None else '--overwrite'}")
        cfg = _resume_config(resume, overrides, seed, echo)
        if not isinstance(cfg, ClassifyConfig):
            return cfg  # a finished run: nothing to do
    else:
        cfg = config_mod.resolve("classify", preset, overrides, seed)
    # A resumed run's saved config is already fitted to its data: every key of it counts as given.
    from_preset = set() if resume else config_mod.preset_keys("classify", preset, overrides)
    data = read_dataset(cfg, data)
    say = function_argument(echo, "echo") or (lambda line: None)
    cfg = fit_to_data(cfg, data, from_preset, preset, say)
    task = TASK
    if not resume:  # a resumed run trains with the config it saved (the search's choice included)
        user_set = config_mod.user_keys(preset, overrides)
        if cfg.search == "auto":
            task = ClassificationTask()
            cfg, task.search_choice = _search(cfg, data, user_set, say)
        cfg = fit_to_size(cfg, training_rows(cfg, data), user_set, say)
    return run_task(task, cfg, data=data, out=out, overwrite=overwrite, resume_dir=resume,
                    progress=progress, figures=figures, echo=echo, callbacks=cbs, verbose=is_verbose(verbose))


def _search(cfg, ds: Dataset, user_set: set[str], echo: Callable[[str], None]):
    """search=auto: the best recipe for ``ds`` by CV on the training split (:mod:`nndl.tasks.classify.auto`)."""
    from nndl.tasks.classify.auto import choose_recipe

    mirror_ok = ds.is_image and {"auto": ds.mirror_invariant, "yes": True, "no": False}[cfg.mirror_invariant]
    quiet = lambda line: None  # noqa: E731 - the candidates' own adaptations are not the run's
    return choose_recipe(cfg, ds, user_set, mirror_ok, lambda c, rows: fit_to_size(c, rows, user_set, quiet),
                         lambda c, d, k, only: cross_validate_classifier(c, d, k, only=only), echo)


def _resume_config(run_dir: Path, overrides, seed, echo):
    """The saved config of an interrupted run, or a :class:`~nndl.runfolder.objects.Run` for a finished one.

    Any interrupted classify run resumes: one with a checkpoint continues from it, one whose training
    had finished only tests, draws and reports, and one stopped before its first checkpoint (killed
    in epoch 1) trains from the start, as the first try would have.
    """
    from nndl.runfolder.files import RUN_MARKER, read_marker

    if not (run_dir / RUN_MARKER).exists() or not (run_dir / "config.json").is_file():
        raise NndlError(f"--resume {run_dir}: not an interrupted nndl run (no {RUN_MARKER} and config.json there); "
                        "give the folder of an interrupted classify run")
    if overrides or seed is not None:
        raise NndlError("--resume continues with the run's saved config; drop --set/--seed")
    marker = read_marker(run_dir)
    done = None
    if marker is None or marker.get("state") == "complete":  # an older nndl's run: metrics.json marks it finished
        try:
            done = read_json(run_dir / "metrics.json")
        except (OSError, NndlError):
            done = None
    if isinstance(done, dict):  # nothing to continue: re-evaluating would silently rewrite a finished run
        acc = done.get("test_accuracy")
        n = done.get("epochs", "?")
        echo(f"{run_dir}: this run is already complete ({n} epoch{'' if n == 1 else 's'}"
             + (f", test accuracy {100 * acc:.2f}%" if isinstance(acc, float) else "")
             + "); nothing to resume and nothing changed. Train longer in a new run (--out NEW --set epochs=N).")
        from nndl.runfolder.objects import Run

        return Run(run_dir, done)
    saved = read_json(run_dir / "config.json", fix="it is damaged: --resume needs the config the run started "
                      "with; start a new run")
    if not isinstance(saved, dict):
        raise NndlError(f"{run_dir / 'config.json'}: not a config (a JSON object of settings); start a new run")
    if "dataset" not in saved and not set(saved) <= config_mod.field_names("classify"):  # e.g. a regress run's
        raise NndlError(f"--resume {run_dir}: its config.json is not a classify run's; give the folder of an "
                        "interrupted classify run")
    cfg = config_mod.from_dict("classify", saved)
    if (run_dir / "checkpoint.pt").exists():
        load_checkpoint(run_dir / "checkpoint.pt", torch.device("cpu"))  # a broken one fails before data load
    return cfg


def _cv_rows(cfg, data: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split's rows a cross-validation of ``cfg`` uses (``subset`` applied), on ``device``."""
    images, labels = data.x_train, data.y_train
    if cfg.subset and cfg.subset < len(labels):
        _, keep = stratified_split(labels, cfg.subset / len(labels), seed=cfg.seed)
        images, labels = images[keep], labels[keep]
    return images.to(device), labels.long().to(device)


def _fold_record(cfg, res) -> dict[str, Any]:
    """One fold's scores as :func:`cross_validate_classifier` returns them."""
    last = res.history[-1] if res.history else {}
    return {"val_accuracy": kept_val_accuracy(cfg, res), "val_loss": last.get("val_loss", float("nan")),
            "epochs": len(res.history), "train_seconds": res.train_seconds, "stop_reason": res.stop_reason,
            "diverged": res.diverged, "timed_out": res.timed_out}


def cross_validate_classifier(cfg, data: Dataset | FashionData | None = None, folds: int = 3, progress: bool = False,
                              on_fold: Callable[[int, float], None] | None = None,
                              only: list[int] | None = None) -> list[dict[str, Any]]:
    """Stratified, shuffled K-fold cross-validation of a classifier on the training set (test set untouched).

    Parameters
    ----------
    cfg : ClassifyConfig
        ``subset`` limits the training images used; ``val_fraction`` is ignored
        (each fold validates on its held-out part).
    folds : int
    on_fold : callable, optional
        ``on_fold(fold_index, val_accuracy)`` after each fold, e.g. to report to a
        pruner; it may raise to stop early.
    only : list of int, optional
        Train only these fold indices (0-based) of the ``folds``-fold split, with the model seeds
        and rows they have in the full cross-validation (a search that stops weak candidates early).

    Returns
    -------
    list of dict, one per fold (of ``only``): ``val_accuracy``, ``val_loss``, ``epochs``,
    ``train_seconds``, ``stop_reason``, ``diverged``, ``timed_out``.
    """
    from nndl.training.crossval import cross_validate, stratified_kfold

    device = pick_device(cfg.device)
    data = load_dataset(cfg, data)
    images, labels = _cv_rows(cfg, data, device)
    transform = transform_for(cfg, device, data)
    out = []
    chosen = list(range(folds)) if only is None else list(only)
    all_folds = stratified_kfold(folds, cfg.seed)

    def make_model(i: int) -> torch.nn.Module:
        torch.manual_seed(cfg.seed + chosen[i])  # the seed fold chosen[i] has in the full cross-validation
        return classifier_on(cfg, device, data)

    def scored(i: int, fold) -> bool:
        out.append(_fold_record(cfg, fold.result))
        if on_fold is not None:
            on_fold(i, out[-1]["val_accuracy"])
        return fold.result.diverged  # a diverged fold already decides the trial

    def chosen_folds(x, y) -> list:
        splits = all_folds(x, y)  # the split once, then the folds asked for
        return [splits[i] for i in chosen]

    cross_validate(make_model, images, labels, cfg, splitter=chosen_folds, task="classification",
                   transform=transform, progress=progress, on_fold=scored)
    return out


def stack_blocker(cfg) -> str | None:
    """Why ``cfg``'s folds cannot train in a classifier stack (:mod:`nndl.training.stacked_classify`), or None.

    The MLP stack is a batched MLP without augmentation, test-time flip, compilation or autocast:
    those draw from torch's global generator per batch or change the arithmetic, so a stack would
    not reproduce the one-by-one numbers. The CNN stack (:mod:`nndl.training.stacked_cnn`: the cnn,
    lite, lite4 and fast networks) draws each model's augmentation from its own generator, as the
    one-by-one run does, and refuses only mixup/cutmix, test-time flip, compilation and autocast.
    """
    from nndl.training.stacked_classify import _UNSTACKABLE_ON
    from nndl.training.stacked_cnn import STACKABLE_CNNS, UNSTACKABLE_ON

    if cfg.model not in ("mlp", *STACKABLE_CNNS):
        return f"model={cfg.model} (only the MLP and the {', '.join(STACKABLE_CNNS)} CNNs stack)"
    on = [k for k in (_UNSTACKABLE_ON if cfg.model == "mlp" else UNSTACKABLE_ON) if getattr(cfg, k, False)]
    if on:
        return f"{on[0]}={getattr(cfg, on[0])!r}"
    if autocast_on(cfg, pick_device(cfg.device)):
        return "bf16 autocast"
    if cfg.model != "mlp" and pick_device(cfg.device).type == "cpu" and not CNN_STACKS_ON_CPU:
        return (f"model={cfg.model} on CPU (a stack of CNNs is no faster there than one by one: 0.91x on the cnn "
                "preset's 3x3 grid, bench/cnn_stack_speed.py --cv)")
    return None


# Grouped-convolution stacks reproduce the one-by-one CNNs but do not pay on CPU (per step 0.63-1.18x of
# the loop, end to end 0.91x on 2 cores): there CNN configs train one by one unless this is set (the tests
# set it to check the stack's numbers on CPU).
CNN_STACKS_ON_CPU = False


def stack_key(cfg) -> tuple | None:
    """Configs with one key train their folds as one stack; None: ``cfg`` trains one by one.

    The key holds everything but the per-model settings (:func:`classify_stack_key`: lr, schedule,
    penalties, label smoothing, patience...), plus the seed (it picks the folds and the ``subset``,
    so configs of one stack must share it) and the epochs (a stack computes every member until its
    longest one ends: on CPU that costs more than stacking saves, as for regression).
    """
    from nndl.training.stacked_classify import classify_stack_key

    if stack_blocker(cfg) is not None:
        return None
    return classify_stack_key(cfg), cfg.seed, cfg.epochs


def cross_validate_stacked_classifiers(cfgs: list, data: Dataset | FashionData | None = None,
                                       folds: int = 3) -> list[list[dict[str, Any]]]:
    """:func:`cross_validate_classifier` of every config in ``cfgs``, all their folds trained as one stack.

    Each fold model starts from the weights and seeds :func:`cross_validate_classifier` gives it and
    trains on the same rows (:func:`nndl.training.stacked_classify.train_stacked_classifiers`). An
    MLP stack's inputs are normalised once, up front, by the same transform (it is elementwise, so
    this is the arithmetic of the one-by-one batches); a CNN stack applies the transform, with its
    augmentation, to each model's batches. The configs must share a :func:`stack_key`.

    Returns
    -------
    One list of fold dicts (as :func:`cross_validate_classifier`'s) per config, equal to its
    one-by-one results up to float rounding (tests/test_tune_stacked_classify.py states the tolerance).
    """
    from nndl.training.crossval import stratified_kfold
    from nndl.training.stacked_classify import Member, train_stacked_classifiers

    keys = {stack_key(c) for c in cfgs}
    if None in keys or len(keys) != 1:
        why = next((stack_blocker(c) for c in cfgs if stack_blocker(c)), None)
        raise NndlError("configs trained as one stack must share one network, seed and epochs"
                        + (f"; {why} does not stack" if why else ""))
    cfg = cfgs[0]
    device = pick_device(cfg.device)
    data = load_dataset(cfg, data)
    images, labels = _cv_rows(cfg, data, device)
    transform = transform_for(cfg, device, data)
    if cfg.model == "mlp":  # normalised once: the MLP stack sees flat rows, without augmentation
        with torch.no_grad():
            x, transform = transform(images, None).reshape(len(images), -1), None
    else:  # the CNN stack transforms (augments) each model's batches as its one-by-one run does
        x = images
    splits = stratified_kfold(folds, cfg.seed)(images, labels)
    models, members, per_model = [], [], []
    for c in cfgs:
        for i, (tr, va) in enumerate(splits):
            torch.manual_seed(c.seed + i)  # as cross_validate_classifier's make_model
            models.append(classifier_on(c, device, data))
            members.append(Member(tr.to(device), va.to(device)))
            per_model.append(c)
    results = train_stacked_classifiers(models, x, labels, members, per_model, transform=transform)
    records = [_fold_record(c, r) for c, r in zip(per_model, results)]
    k = len(splits)
    return [records[j * k:(j + 1) * k] for j in range(len(cfgs))]
