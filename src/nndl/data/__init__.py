"""Classification datasets: one module per kind, one line per kind in :data:`REGISTRY`.

A dataset module defines

- ``NAME`` (its registry key) and ``PREDICT_INPUT`` (how ``nndl predict`` reads a file for it:
  ``"trimmed"`` light-object-on-dark images as in MNIST, ``"resized"`` photos, or ``"table"`` rows);
- ``READS``: which of :data:`DATASET_SETTINGS` its ``load`` reads (the others are refused when given);
- ``detect(path) -> bool``: whether ``--data PATH`` looks like this kind (used by ``dataset=auto``);
- ``load(cfg) -> Dataset``: read, validate and split; every bad input raises one
  :class:`~nndl.base.errors.NndlError` line naming the file and the fix, before a run folder exists.

Everything downstream (models, normalisation, metrics, figures, ``model.pt``, predict, export)
reads the shape, class names and normalisation from the :class:`Dataset`, never a constant.
Adding a kind = one module here + one line in :data:`REGISTRY` (+ its name in the config's
``dataset`` choices).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nndl.base.errors import NndlError

# name -> module; the order is the order of detection for dataset=auto
REGISTRY: dict[str, str] = {
    "csv_table": "nndl.data.csv_table",
    "fashion_mnist": "nndl.data.fashion_mnist",
    "idx": "nndl.data.idx",
    "image_folder": "nndl.data.image_folder",
}


# The config settings only some dataset kinds read; each kind's module lists its own in READS. A setting
# given for a kind that never reads it (image_size for a CSV table) is refused, not ignored.
DATASET_SETTINGS = ("label_col", "image_size", "test_fraction", "verify", "mirror_invariant", "test_data")


@dataclass
class Dataset:
    """A classification data set, validated and split, as CPU tensors.

    Attributes
    ----------
    kind : str
        Registry name (``fashion_mnist``, ``idx``, ``image_folder``, ``csv_table``).
    x_train, x_test : Tensor
        Images ``uint8 (N, C, H, W)``, or table rows ``float32 (N, F)``.
    y_train, y_test : Tensor
        ``int64 (N,)`` class indices into ``class_names``.
    input_shape : tuple of int
        ``(C, H, W)`` for images, ``(F,)`` for tables.
    class_names : list of str
    mean, std : list of float
        Normalisation per channel (images, on pixels scaled to [0, 1]) or per feature (tables).
    source : str
        Where the data came from (a folder or file).
    feature_names : list of str
        Table column names (empty for images).
    mirror_invariant : bool
        Whether a left-right mirrored image keeps its class (clothes do; digits, letters and text do
        not). Unknown data are not: a preset's ``flip`` / ``tta_flip`` is switched off for them
        unless the user says otherwise (the ``mirror_invariant`` setting).
    """

    kind: str
    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    input_shape: tuple[int, ...]
    class_names: list[str]
    mean: list[float]
    std: list[float]
    source: str
    feature_names: list[str] = field(default_factory=list)
    mirror_invariant: bool = False

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def meta(self) -> dict[str, Any]:
        """What ``model.pt`` stores so that predict/export rebuild the input path without the data."""
        return {"dataset": self.kind, "input_shape": list(self.input_shape), "class_names": list(self.class_names),
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "feature_names": list(self.feature_names)}


def module(name: str):
    """The dataset module registered as ``name``."""
    if name not in REGISTRY:
        raise NndlError(f"config key 'dataset' = {name!r}: choose one of auto, {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def detect(data: str) -> str:
    """The dataset kind for ``--data`` (empty: Fashion-MNIST from its usual places)."""
    if not data:
        return "fashion_mnist"
    path = Path(data).expanduser()
    if not path.exists():
        raise NndlError(f"--data {data}: no such file or folder; give an IDX folder, a folder of class "
                        "subfolders of images, or a .csv table")
    for name in REGISTRY:
        if module(name).detect(path):
            return name
    what = "file" if path.is_file() else "folder"
    raise NndlError(f"--data {data}: a {what} nndl cannot read as a dataset; give a folder with MNIST-format "
                    "*-images-idx3-ubyte[.gz] + *-labels-idx1-ubyte[.gz] files, a folder of class subfolders "
                    "of PNG/JPEG images (ROOT/CLASS/*.png), or a .csv table with --label-col")


def load(cfg) -> Dataset:
    """Load the dataset ``cfg`` names (``cfg.dataset``, or the kind detected from ``cfg.data``)."""
    kind = cfg.dataset if cfg.dataset != "auto" else detect(cfg.data)
    check_applies(kind, cfg)
    ds = module(kind).load(cfg)
    if len(ds.y_test) == 0:  # the test metrics of an empty set would be a crash or a made-up number
        raise NndlError(f"{ds.source}: the test set is empty; give test examples (e.g. the t10k-* files of an "
                        "IDX set)")
    return ds


def check_applies(kind: str, cfg) -> None:
    """Refuse, in one line, a dataset setting (of :data:`DATASET_SETTINGS`) that the ``kind`` of data never
    reads but that differs from its default (``image_size`` or ``label_col`` for Fashion-MNIST, ...)."""
    from nndl.base.config import field_default

    reads = module(kind).READS
    for key in DATASET_SETTINGS:
        value = getattr(cfg, key)
        if key not in reads and value != field_default(type(cfg), key):  # the default of cfg's own config class
            users = ", ".join(name for name in REGISTRY if key in module(name).READS)
            raise NndlError(f"config key '{key}' = {value!r} does not apply to {kind} data (only to {users}); "
                            "remove it")


def unused_settings(kind: str) -> dict[str, str]:
    """The dataset settings a run on ``kind`` data never reads, each with the reason (for the report,
    which lists only what a run used), and ``tta_flip`` for a table. An unknown or empty ``kind`` (an
    old run) gives {}. The images-only augmentations of a table run are :mod:`nndl.nn.augment`'s to name."""
    if kind not in REGISTRY:
        return {}
    reads = module(kind).READS
    out = {key: f"{kind} data do not read it" for key in DATASET_SETTINGS if key not in reads}
    if is_table(kind):
        out["tta_flip"] = "mirroring applies to images only (a table run)"
    return out


def is_table(kind: str) -> bool:
    """Whether ``kind`` data are table rows (not images)."""
    return kind in REGISTRY and module(kind).PREDICT_INPUT == "table"


def from_meta(payload: dict) -> dict[str, Any]:
    """The dataset metadata of a ``model.pt`` payload; a file from before datasets existed is Fashion-MNIST."""
    if payload.get("input_shape") and payload.get("mean") is not None and payload.get("dataset"):
        return {"dataset": payload["dataset"], "input_shape": [int(v) for v in payload["input_shape"]],
                "class_names": [str(n) for n in payload.get("class_names") or []],
                "mean": [float(v) for v in payload["mean"]], "std": [float(v) for v in payload["std"]],
                "feature_names": [str(n) for n in payload.get("feature_names") or []]}
    from nndl.data.fashion_mnist import META

    meta = dict(META, class_names=[str(n) for n in payload.get("class_names") or META["class_names"]])
    return meta


def check_classes(labels, class_names: list[str], source: str) -> None:
    """At least two classes, each with at least one training example."""
    import torch

    counts = torch.bincount(torch.as_tensor(labels), minlength=len(class_names))
    if len(class_names) < 2 or int((counts > 0).sum()) < 2:
        raise NndlError(f"{source}: only one class ({class_names[0] if class_names else 'none'}); a classifier "
                        "needs examples of at least two classes")
    empty = [class_names[c] for c in range(len(class_names)) if counts[c] == 0]
    if empty:
        raise NndlError(f"{source}: class '{empty[0]}' has no training examples; add some or remove the class")


def pixel_stats(images) -> tuple[list[float], list[float]]:
    """Mean and std per channel of ``uint8 (N, C, H, W)`` images, on the [0, 1] scale.

    From a 256-bin histogram per channel: exact, and no float copy of the whole set.
    """
    import torch

    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1).to(torch.int64), minlength=256).double()
        levels = torch.arange(256, dtype=torch.float64) / 255
        n = hist.sum().clamp(min=1)
        mean = (hist * levels).sum() / n
        var = (hist * (levels - mean) ** 2).sum() / n
        means.append(float(mean))
        stds.append(max(float(var.sqrt()), 1e-3))  # a constant channel must not divide by zero
    return means, stds


def stratified_test_split(labels, test_fraction: float, seed: int, source: str):
    """Train/test indices with each class's share ``test_fraction`` in the test set (seeded)."""
    from nndl.data.splits import stratified_split

    train_idx, test_idx = stratified_split(labels, test_fraction, seed=seed)
    if len(test_idx) == 0:
        raise NndlError(f"{source}: too few examples for a test split of {test_fraction:g}; add examples, raise "
                        "test_fraction, or give a fixed split (ROOT/train/CLASS + ROOT/test/CLASS)")
    return train_idx, test_idx
