"""Fashion-MNIST (Zalando): 28x28 grey images of 10 clothing classes, the default dataset.

The only module that knows Fashion-MNIST's shape, classes and normalisation. Reading,
checksums and the source order (``--data``, ``$NNDL_DATA``, ``/usr/share/datasets/fashion-mnist``,
the user cache) live in :mod:`nndl.data.fashion`.
"""
from __future__ import annotations

from pathlib import Path

from nndl.data import fashion
from nndl.data import Dataset
from nndl.data.readers import sha256_file

NAME = "fashion_mnist"
PREDICT_INPUT = "trimmed"  # light object on a dark background, trimmed and centred
READS = ("verify", "mirror_invariant")  # of datasets.DATASET_SETTINGS; the official test split is always used
INPUT_SHAPE = (1, 28, 28)
CLASS_NAMES = list(fashion.CLASS_NAMES)
# Mean and std of Fashion-MNIST's 60,000 training pixels (scaled to [0, 1]); nndl.nn.augment takes
# them as its default normalisation, so runs normalise exactly as before datasets existed.
MEAN, STD = 0.2860, 0.3530
META = {"dataset": NAME, "input_shape": list(INPUT_SHAPE), "class_names": CLASS_NAMES, "mean": [MEAN],
        "std": [STD], "feature_names": []}


def detect(path: Path) -> bool:
    """A folder with Fashion-MNIST's files whose labels are the official ones (or a folder named so)."""
    if not path.is_dir() or not fashion._has_source(path):
        return False
    if "fashion" in path.name.lower() or all((path / n).is_file() for n in fashion.CSV_FILES.values()):
        return True
    labels = path / fashion.FILES["train"][1]  # 29 kB: cheap to hash, and it tells Fashion-MNIST from MNIST
    return labels.is_file() and sha256_file(labels) == fashion.SHA256[labels.name]


def from_fashion(data: fashion.FashionData) -> Dataset:
    """Wrap already loaded :class:`~nndl.data.fashion.FashionData` (images get their channel axis)."""
    return Dataset(NAME, data.train_images.unsqueeze(1), data.train_labels, data.test_images.unsqueeze(1),
                   data.test_labels, INPUT_SHAPE, list(data.class_names), [MEAN], [STD], data.source,
                   mirror_invariant=True)  # a mirrored shirt is a shirt


def load(cfg) -> Dataset:
    """Find, verify and load Fashion-MNIST (see :func:`nndl.data.fashion.load_fashion`)."""
    return from_fashion(fashion.load_fashion(cfg.data or None, verify=cfg.verify))
