"""A folder of images sorted into one subfolder per class.

``ROOT/CLASS/*.png|jpg|...``: a stratified, seeded test split (``test_fraction``) is drawn;
``ROOT/train/CLASS/...`` + ``ROOT/test/CLASS/...``: the user's fixed test split is kept.
Class names are the subfolder names, sorted. Images of any size and mode are read with
Pillow (EXIF orientation applied, transparency flattened onto white, 16-bit and float pixels
scaled to 8 bits by their depth: :func:`open_image`, which ``nndl predict`` uses too) and
stretched to ``image_size x image_size``; the set is grey (1 channel) when every image is grey,
colour (3 channels) otherwise. Files with other suffixes and hidden entries are ignored.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from nndl.base.config import field_default
from nndl.base.errors import NndlError
from nndl.data import Dataset, check_classes, pixel_stats, stratified_test_split

NAME = "image_folder"
PREDICT_INPUT = "resized"
# of datasets.DATASET_SETTINGS; test_fraction only without ROOT/test
READS = ("image_size", "test_fraction", "mirror_invariant")
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# Modes whose pixels Pillow converts to RGB faithfully; other colour spaces are converted to RGB at once,
# so that every later step (grey or RGB, resizing, trimming) sees a mode it can convert.
_COLOUR_SPACES = {"CMYK", "YCbCr", "LAB", "HSV"}
_DIRECT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa"}
UNREADABLE_FIX = "replace or remove the file"


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


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise NndlError("reading images needs Pillow: pip install pillow") from None
    return Image, ImageOps


def open_image(path: Path, fix: str = UNREADABLE_FIX):
    """The image at ``path`` decoded by the one image decoder of training and ``nndl predict``.

    Upright (EXIF orientation), with 8-bit samples (:func:`eight_bit`: 16-bit and float pixels
    scaled by their depth, never clipped) and without transparency (flattened onto white).
    A file Pillow cannot read, or pixels nndl cannot scale, is one NndlError line naming it and
    ending in ``fix``.
    """
    Image, ImageOps = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                bits = _bits_per_sample(im)  # from the file's header, which the transposed copy lacks
                img = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise NndlError(f"{path}: not an image Pillow can read ({type(e).__name__}); {fix}") from None
    return upright_image(img, path, bits)


def upright_image(img, source, bits: int = 16):
    """An opened (and already upright) PIL image as :func:`open_image` returns it: 8-bit samples,
    transparency flattened onto white; ``bits`` is the file's declared sample depth of a mode ``I`` image."""
    Image, _ = _pil()
    img = eight_bit(img, source, bits)
    if img.mode in _COLOUR_SPACES:
        img = img.convert("RGB")
    elif img.mode not in _DIRECT_MODES:
        raise NndlError(f"{source}: pixels of mode {img.mode} cannot be read as grey or colour; save the image as "
                        "an 8- or 16-bit grey or RGB PNG")
    if img.mode in ("RGBA", "RGBa", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return img


def _bits_per_sample(im) -> int:
    """The sample depth a TIFF declares (its BitsPerSample tag), else 16: Pillow opens the other formats'
    deep grey images (16-bit PNG and PGM) as 16-bit values."""
    tags = getattr(im, "tag_v2", None)
    declared = tags.get(258) if tags is not None else None
    if isinstance(declared, tuple):
        declared = declared[0] if declared else None
    return int(declared) if isinstance(declared, int) else 16


def eight_bit(img, source, bits: int = 16):
    """``img`` with 8-bit samples: 16-bit grey scaled by 255/65535 and float grey by 255 (0..1 is black
    to white), where Pillow's own conversion would clip them at 255 (a 16-bit image turns almost white,
    a float one black). Other modes are returned as they are.

    Refused in one NndlError line naming ``source``: 32-bit integer pixels (no agreed scale), negative
    pixel values, and float pixels outside 0..1 or not finite.
    """
    Image, _ = _pil()
    if not (img.mode == "I" or img.mode.startswith("I;16") or img.mode == "F"):
        return img
    values = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            raise NndlError(f"{source}: float pixels from {lo:g} to {hi:g}; nndl reads a float image as 0..1 "
                            "(black to white): rescale it to 0..1, or save it as an 8- or 16-bit image")
        scale = 255.0
    else:
        if img.mode == "I" and bits > 16:
            raise NndlError(f"{source}: {bits}-bit integer pixels have no agreed scale to 8 bits; save the image "
                            "as an 8- or 16-bit grey PNG")
        if values.size and values.min() < 0:
            raise NndlError(f"{source}: negative pixel values ({values.min():g}); save the image as an unsigned "
                            "8- or 16-bit grey PNG")
        scale = 255.0 / 65535.0
    return Image.fromarray(np.round(values * scale).clip(0, 255).astype(np.uint8))  # 2-d uint8: mode L


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
    Image, _ = _pil()
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
        if cfg.test_fraction != field_default(type(cfg), "test_fraction"):  # given, yet the fixed split decides
            raise NndlError(f"config key 'test_fraction' = {cfg.test_fraction!r} does not apply: {root} has its own "
                            f"test split ({root / 'test'}); remove it")
        extra = [d.name for d in test_dirs if d.name not in names]
        if extra:
            raise NndlError(f"{root / 'test' / extra[0]}: class '{extra[0]}' is not among the training classes; "
                            "rename it or add it under train/")
    train_files, train_labels = _files(train_dirs, names)
    test_files, test_labels = _files(test_dirs, names) if test_dirs is not None else ([], [])
    if test_dirs is not None and not test_files:
        raise NndlError(f"{root / 'test'}: no class folders with images, so nothing to test on; put test images in "
                        f"{root / 'test'}/CLASS/, or move the class folders of train/ up into {root} for a drawn "
                        "test split")
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
