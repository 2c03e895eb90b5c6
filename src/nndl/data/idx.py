"""Any MNIST-format IDX folder: MNIST digits, KMNIST, EMNIST, or a set of your own.

A folder holds one set of four files, ``[PREFIX]train-images-idx3-ubyte[.gz]``,
``[PREFIX]train-labels-idx1-ubyte[.gz]`` and the same with ``t10k`` (or ``test``); EMNIST's
``emnist-balanced-train-images-idx3-ubyte.gz`` etc. match with ``PREFIX = emnist-balanced-``.
Images may be any size; labels any integers (they are renumbered 0..K-1 in sorted order).

Class names: ``classes.txt`` (one name per line, line *i* naming label *i*), else EMNIST's
``PREFIXmapping.txt`` (``label character-code [...]`` per line; the first code names the class), else the label digits.
Checksums are checked only where they are published (MNIST digits' MD5s); other sets get
the full structural check.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch

from nndl.data.readers import read_idx
from nndl.base.errors import NndlError
from nndl.data import Dataset, check_classes, pixel_stats

NAME = "idx"
PREDICT_INPUT = "trimmed"
# of datasets.DATASET_SETTINGS (verify: known sets' MD5 sums); the t10k files are the test split
READS = ("verify", "mirror_invariant")
_FILE = re.compile(r"^(?P<prefix>.*?)(?P<split>train|t10k|test)[-.](?P<what>images|labels)[-.]idx[13]-ubyte(?:\.gz)?$")
# MD5s published with MNIST (and used by torchvision) for the gzipped files.
KNOWN_MD5 = {"MNIST": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                       "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                       "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                       "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}}


def _sets(path: Path) -> dict[str, dict[tuple[str, str], Path]]:
    """IDX files by prefix, then by (train|test, images|labels); ``.gz`` preferred over a plain copy."""
    sets: dict[str, dict[tuple[str, str], Path]] = {}
    for f in sorted(path.iterdir()) if path.is_dir() else []:
        m = _FILE.match(f.name)
        if m and f.is_file():
            split = "train" if m["split"] == "train" else "test"
            key = (split, m["what"])
            files = sets.setdefault(m["prefix"], {})
            if key not in files or f.suffix == ".gz":
                files[key] = f
    return sets


def detect(path: Path) -> bool:
    return path.is_dir() and bool(_sets(path))


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - the published checksums are MD5s
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _verify(files: dict[tuple[str, str], Path]) -> str | None:
    """The name of a known set these files belong to, after checking all four; None for an unknown set."""
    for name, sums in KNOWN_MD5.items():
        labels = files[("train", "labels")]
        if sums.get(labels.name) != _md5(labels):
            continue
        for f in files.values():
            if f.name in sums and _md5(f) != sums[f.name]:
                raise NndlError(f"{f}: MD5 does not match the published {name} file; download it again, or use "
                                "--no-verify to accept it")
        return name
    return None


def _class_names(folder: Path, prefix: str, labels: np.ndarray) -> list[str]:
    """Names of the sorted distinct ``labels`` (see the module docstring for where they come from)."""
    names: dict[int, str] = {}
    classes, mapping = folder / "classes.txt", folder / f"{prefix}mapping.txt"
    if classes.is_file():
        lines = [ln.strip() for ln in classes.read_text(encoding="utf-8", errors="replace").splitlines()]
        names = {i: n for i, n in enumerate(lines) if n}
        if int(labels.max()) >= len(lines):
            raise NndlError(f"{classes}: {len(lines)} names, but the labels go up to {int(labels.max())}; give one "
                            "name per line for labels 0, 1, 2, ...")
    elif mapping.is_file():
        for lineno, line in enumerate(mapping.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            parts = line.split()
            if len(parts) < 2 or not all(p.isdigit() for p in parts):
                raise NndlError(f"{mapping}: line {lineno} is not 'label character-code ...'; fix or remove the file")
            names[int(parts[0])] = chr(int(parts[1]))
    return [names.get(int(v), str(int(v))) for v in labels]


def _pair(files: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_p, lbl_p = files[(split, "images")], files[(split, "labels")]
    images, labels = read_idx(img_p), read_idx(lbl_p)
    if images.ndim != 3 or min(images.shape[1:]) < 1:
        raise NndlError(f"{img_p}: images have shape {images.shape}, expected (N, height, width)")
    if labels.ndim != 1:
        raise NndlError(f"{lbl_p}: labels have shape {labels.shape}, expected (N,)")
    if len(images) != len(labels):
        raise NndlError(f"{img_p}: {len(images)} images but {lbl_p.name} has {len(labels)} labels; the files "
                        "belong to different sets")
    return images, labels


def load(cfg) -> Dataset:
    """Read, check and renumber one IDX set (the folder is ``cfg.data``)."""
    folder = Path(cfg.data).expanduser()
    sets = _sets(folder)
    if not sets:
        raise NndlError(f"{folder}: no MNIST-format IDX files (*train-images-idx3-ubyte[.gz] ...)")
    if len(sets) > 1:
        names = ", ".join(p.rstrip("-") or "(no prefix)" for p in sets)
        raise NndlError(f"{folder}: several IDX sets ({names}); move one set into a folder of its own")
    prefix, files = next(iter(sets.items()))
    missing = [f"{prefix}{'train' if s == 'train' else 't10k'}-{w}-idx{3 if w == 'images' else 1}-ubyte.gz"
               for s in ("train", "test") for w in ("images", "labels") if (s, w) not in files]
    if missing:
        raise NndlError(f"{folder}: missing {missing[0]} (an IDX set needs train and test images and labels)")
    known = _verify(files) if cfg.verify else None
    (xtr, ytr), (xte, yte) = _pair(files, "train"), _pair(files, "test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise NndlError(f"{files[('test', 'images')]}: images of {xte.shape[1]}x{xte.shape[2]} pixels, but the "
                        f"training images have {xtr.shape[1]}x{xtr.shape[2]}; use one size")
    if prefix.lower().startswith("emnist"):  # EMNIST stores each image transposed
        xtr, xte = xtr.transpose(0, 2, 1).copy(), xte.transpose(0, 2, 1).copy()
    values = np.unique(ytr)
    unknown = np.setdiff1d(np.unique(yte), values)
    if len(unknown):
        raise NndlError(f"{files[('test', 'labels')]}: label {int(unknown[0])} never occurs in the training "
                        "labels; the files belong to different sets")
    ytr, yte = np.searchsorted(values, ytr), np.searchsorted(values, yte)
    names = _class_names(folder, prefix, values)
    images = torch.from_numpy(xtr).unsqueeze(1)
    y = torch.from_numpy(ytr.astype(np.int64))
    check_classes(y, names, str(folder))
    mean, std = pixel_stats(images)
    what = f"{folder} ({known})" if known else str(folder)
    return Dataset(NAME, images, y, torch.from_numpy(xte).unsqueeze(1), torch.from_numpy(yte.astype(np.int64)),
                   tuple(images.shape[1:]), names, mean, std, what)
