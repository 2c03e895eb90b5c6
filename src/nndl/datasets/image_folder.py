"""A folder of images sorted into one subfolder per class.

``ROOT/CLASS/*.png|jpg|...``: a stratified, seeded test split (``test_fraction``) is drawn;
``ROOT/train/CLASS/...`` + ``ROOT/test/CLASS/...``: the user's fixed test split is kept.
Class names are the subfolder names, sorted. Images of any size and mode are read with
Pillow (EXIF orientation applied, transparency flattened onto white) and stretched to
``image_size x image_size``; the set is grey (1 channel) when every image is grey, colour
(3 channels) otherwise. Files with other suffixes and hidden entries are ignored.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import NndlError
from . import Dataset, check_classes, pixel_stats, stratified_test_split

NAME = "image_folder"
PREDICT_INPUT = "resized"
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _layout(root: Path) -> tuple[list[Path], list[Path] | None]:
    """Class folders of the training part and of the fixed test part (None: no fixed split)."""
    subdirs = _visible_dirs(root)
    names = {p.name.lower(): p for p in subdirs}
    if set(names) == {"train", "test"}:
        return _visible_dirs(names["train"]), _visible_dirs(names["test"])
    return subdirs, None


def detect(path: Path) -> bool:
    if not path.is_dir():
        return False
    classes, _ = _layout(path)
    # the first image found decides: a large folder is not listed twice
    return any(f.suffix.lower() in SUFFIXES for c in classes[:50] for f in c.rglob("*"))


def open_image(path: Path):
    """The image at ``path`` decoded, upright and without transparency (one NndlError line if unreadable)."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise NndlError("reading images needs Pillow: pip install pillow") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                img = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise NndlError(f"{path}: not an image Pillow can read ({type(e).__name__}); replace or remove the "
                        "file") from None
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img


def is_grey(img) -> bool:
    return img.mode in _GREY_MODES


def to_array(img, channels: int, size: tuple[int, int]) -> np.ndarray:
    """``uint8 (channels, H, W)`` of a PIL image stretched to ``size = (H, W)`` (bilinear, antialiased)."""
    from PIL import Image

    img = img.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None].copy() if channels == 1 else arr.transpose(2, 0, 1).copy()


def _files(class_dirs: list[Path], names: list[str]) -> tuple[list[Path], list[int]]:
    files, labels = [], []
    for d in class_dirs:
        found = _images_in(d)
        if not found:
            raise NndlError(f"{d}: class folder without images (PNG/JPEG/...); add images or remove the folder")
        files += found
        labels += [names.index(d.name)] * len(found)
    return files, labels


def _header_is_grey(path: Path) -> bool:
    """Grey from the file header alone (no decoding); an unreadable file is reported when it is decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return is_grey(im)
    except Exception:  # noqa: BLE001 - open_image gives the one-line error for this file
        return True


def _decode(files: list[Path], channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Each file decoded and resized at once, so memory holds small arrays, never the full-size images."""
    if not files:
        return torch.empty((0, channels, *size), dtype=torch.uint8)
    return torch.from_numpy(np.stack([to_array(open_image(f), channels, size) for f in files]))


def load(cfg) -> Dataset:
    """Read every image, choose grey or colour, resize, split, and compute the channel statistics."""
    root = Path(cfg.data).expanduser()
    if not root.is_dir():
        raise NndlError(f"--data {root}: not a folder; give ROOT with one subfolder of images per class")
    train_dirs, test_dirs = _layout(root)
    names = [d.name for d in train_dirs]
    if len(names) < 2:
        raise NndlError(f"{root}: {len(names)} class folder{'s' if len(names) != 1 else ''}; a classifier needs at "
                        "least two (ROOT/CLASS_A/*.png, ROOT/CLASS_B/*.png, ...)")
    if test_dirs is not None:
        extra = [d.name for d in test_dirs if d.name not in names]
        if extra:
            raise NndlError(f"{root / 'test' / extra[0]}: class '{extra[0]}' is not among the training classes; "
                            "rename it or add it under train/")
    train_files, train_labels = _files(train_dirs, names)
    test_files, test_labels = _files(test_dirs, names) if test_dirs is not None else ([], [])
    channels = 1 if all(_header_is_grey(f) for f in train_files + test_files) else 3
    size = (cfg.image_size, cfg.image_size)
    y = torch.tensor(train_labels, dtype=torch.int64)
    check_classes(y, names, str(root))
    x = _decode(train_files, channels, size)
    if test_dirs is not None:
        x_test, y_test = _decode(test_files, channels, size), torch.tensor(test_labels, dtype=torch.int64)
    else:
        tr, te = stratified_test_split(y, cfg.test_fraction, cfg.seed, str(root))
        x, y, x_test, y_test = x[tr], y[tr], x[te], y[te]
    mean, std = pixel_stats(x)
    return Dataset(NAME, x, y, x_test, y_test, (channels, *size), names, mean, std, str(root))
