"""Predictions of a classification run: images, IDX/CSV batches or table rows, as its dataset reads them.

How a file becomes model input follows the dataset kind the model was trained on
(:mod:`nndl.data`): MNIST-style sets get the trimmed, light-on-dark preprocessing of
:func:`preprocess_image`; image folders get their images resized as in training (colour kept for
a colour model); tables get their rows read by column name. :mod:`nndl.tools.predict` reaches
this module through :class:`~nndl.tasks.classify.task.ClassificationTask`.
"""
from __future__ import annotations

import json as _json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nndl.base.errors import NndlError
from nndl.data.readers import is_header
from nndl.tasks.predict_base import MAX_INPUT_VALUES, LoadedRun, bad, built_checked, csv_text, is_int, names

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BORDER_FRACTION = 0.04  # the outer 4% of each side (at least 1 pixel) is "the border"
TRIM_THRESHOLD = 30  # grey levels a pixel must differ from the background to count as the object
MAX_IMAGE_PIXELS = 40_000_000  # a 40-megapixel photo decodes to ~120 MB of RGB; beyond that, downscale first
_EVAL_BATCH = 512


@dataclass
class LoadedClassifier(LoadedRun):
    """A classifier rebuilt from a run's ``model.pt``.

    Attributes
    ----------
    class_names : list of str
    meta : dict
        The dataset metadata (``dataset``, ``input_shape``, ``class_names``, ``mean``, ``std``,
        ``feature_names``; Fashion-MNIST's for files that predate it).
    """

    class_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def check_model_meta(path: Path, payload: dict) -> None:
    """The dataset metadata a classifier is rebuilt from (a file from before datasets existed has none)."""
    from nndl.data import REGISTRY

    if "class_names" in payload:
        names(path, payload, "class_names", at_least=2)
    if not (payload.get("input_shape") and payload.get("mean") is not None and payload.get("dataset")):
        return  # Fashion-MNIST's metadata (nndl.data.from_meta)
    if payload["dataset"] not in REGISTRY:
        raise bad(path, "dataset", payload["dataset"], f"expected one of {', '.join(REGISTRY)}")
    shape = payload["input_shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3)
            or not all(is_int(v) and v >= 1 for v in shape) or math.prod(shape) > MAX_INPUT_VALUES):
        raise bad(path, "input_shape", shape, "expected (channels, height, width) or (features,) of whole numbers "
                   f">= 1, at most {MAX_INPUT_VALUES:,} values in all")
    if "class_names" not in payload:
        raise bad(path, "class_names", None, "missing")
    per = shape[0]  # channels of an image, features of a table row
    for key in ("mean", "std"):
        value = payload.get(key)
        if (not isinstance(value, (list, tuple)) or len(value) != per
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
                or (key == "std" and not all(v > 0 for v in value))):
            raise bad(path, key, value, f"expected {per} finite numbers{' > 0' if key == 'std' else ''}, one per "
                       f"{'channel' if len(shape) == 3 else 'feature'}")
    if payload.get("feature_names") or len(shape) == 1:
        names(path, payload, "feature_names", length=per if len(shape) == 1 else None)


def rebuild(payload: dict, path: Path, cfg) -> LoadedClassifier:
    """The classifier of a checked ``model.pt`` payload, with the dataset metadata its inputs need."""
    from nndl.data import from_meta
    from nndl.nn.models import build_classifier

    meta = from_meta(payload)
    shape = tuple(meta["input_shape"])
    model = built_checked(lambda: build_classifier(cfg, shape if len(shape) == 3 else (1, 1, shape[0]),
                                                   len(meta["class_names"])), payload["state_dicts"][0], path)
    return LoadedClassifier(payload["task"], cfg, model, path=str(path), class_names=meta["class_names"], meta=meta)


def predict_files(run: LoadedClassifier, files: Sequence[str | Path], top: int, json: bool,
                  table: bool) -> tuple[list[dict], str]:
    """The ``top`` classes of every input in ``files`` and their text: JSON, a CSV ``table`` or one line each
    (see :func:`nndl.tools.predict.predict`)."""
    results = _classify_files(run, files, top)
    if json:
        return results, _json.dumps(results, indent=2)
    if table:  # a .csv file is a table, not text lines
        return results, csv_text(*_classes_table(results, top)).rstrip("\n")
    return results, _format_classes(results)


# ----------------------------------------------------------------------------- images


def _fashion_size() -> tuple[int, int]:
    from nndl.data.fashion_mnist import INPUT_SHAPE

    return INPUT_SHAPE[1], INPUT_SHAPE[2]


def preprocess_image(image, size: tuple[int, int] | None = None) -> np.ndarray:
    """Turn a photo or drawing into an MNIST-like ``size`` uint8 image (default Fashion-MNIST's size).

    Fashion-MNIST shows a *light object on a black background*, trimmed so the
    object's longer side spans the frame. Steps:

    1. Read with Pillow, apply the EXIF orientation, flatten transparency onto
       white (product shots are usually on white), convert to grayscale.
    2. **Polarity**: the border is the outer 4% of each side (at least one
       pixel). If the mean of the border pixels is > 127 the background is
       light, and the image is inverted (``255 - x``), so a dark shoe on white
       paper becomes a light shoe on black. A dark-background image is kept.
    3. **Levels**: the background grey (median of the border) maps to 0 and the
       brightest pixel to 255, as in the dataset (a photo's grey backdrop
       becomes black).
    4. **Trim**: crop to the bounding box of pixels that differ from the
       background by more than 30 grey levels (Fashion-MNIST trimmed its
       product images the same way); an image with no such pixel is kept whole
       (and ``predict`` reports it as holding no object instead of classifying it).
    5. Pad to a square with the background colour (keeping the aspect ratio,
       object centred) and resize to ``size`` (height, width) with Lanczos filtering.

    Parameters
    ----------
    image : str, Path or PIL.Image.Image
        Any size up to :data:`MAX_IMAGE_PIXELS` pixels, any mode (RGB, RGBA,
        palette, grayscale, ...).

    size : (int, int), optional
        Height and width of the result (the model's input size).

    Returns
    -------
    np.ndarray
        ``uint8`` array of shape ``size``, light object on a dark background.

    Raises
    ------
    NndlError
        Not an image Pillow can read, or more pixels than :data:`MAX_IMAGE_PIXELS`
        (a decompression bomb is refused from its header, before it is decoded).
    """
    return _preprocess(image, size)[0]


def _open_image(path: str | Path):
    """The image at ``path`` decoded as in training (:func:`nndl.data.image_folder.open_image`: upright,
    8-bit, no transparency), after checking its pixel count from the header."""
    from nndl.data.image_folder import open_image

    Image, _ = _pil()
    unreadable = "give a PNG or JPEG file, or an IDX/CSV batch"
    try:
        with warnings.catch_warnings():
            # Pillow warns about (and past twice its own limit, refuses) huge images; nndl's own
            # limit below is lower and explicit, so its warning would only be noise before our line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise NndlError(f"{path}: image too large to decode safely (a decompression bomb?); predict reads at "
                        f"most {MAX_IMAGE_PIXELS:,} pixels") from None
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError; truncated files too
        raise NndlError(f"{path}: not an image Pillow can read ({type(e).__name__}); {unreadable}") from None
    if w * h > MAX_IMAGE_PIXELS:
        raise NndlError(f"{path}: {w}x{h} = {w * h:,} pixels, more than predict's limit of "
                        f"{MAX_IMAGE_PIXELS:,}; downscale the image (the model sees a small image anyway)")
    return open_image(Path(path), fix=unreadable)


def _preprocess(image, size: tuple[int, int] | None = None) -> tuple[np.ndarray, bool]:
    """:func:`preprocess_image` and whether the image holds an object: False when no pixel differs from
    the background by more than 30 grey levels (a blank or uniform picture: nothing to name)."""
    from nndl.data.image_folder import upright_image

    h_out, w_out = size or _fashion_size()
    Image, ImageOps = _pil()
    if isinstance(image, (str, Path)):
        img = _open_image(image)
    else:  # a PIL image given in Python: the decoder's steps after the file is read
        img = upright_image(ImageOps.exif_transpose(image), "the image")
    gray = np.asarray(img.convert("L"), dtype=np.float32)
    h, w = gray.shape
    b = max(1, round(BORDER_FRACTION * min(h, w)))
    border = np.concatenate([gray[:b].ravel(), gray[-b:].ravel(), gray[:, :b].ravel(), gray[:, -b:].ravel()])
    if border.mean() > 127:
        gray, border = 255.0 - gray, 255.0 - border
    bg = float(np.median(border))
    span = float(gray.max()) - bg
    if span >= 1:
        gray = np.clip((gray - bg) * (255.0 / span), 0, 255)
        mask = gray > TRIM_THRESHOLD * 255.0 / span  # TRIM_THRESHOLD grey levels before the stretch
    else:  # a blank image: nothing to stretch or trim
        gray = np.zeros_like(gray)
        mask = np.zeros(gray.shape, bool)
    if mask.any():
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        gray = gray[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    h, w = gray.shape
    side = max(h, w)
    canvas = np.zeros((side, side), np.float32)  # the background is 0 after the levels step
    y0, x0 = (side - h) // 2, (side - w) // 2
    canvas[y0: y0 + h, x0: x0 + w] = gray
    small = Image.fromarray(canvas.round().astype(np.uint8)).resize((w_out, h_out), Image.LANCZOS)
    return np.asarray(small, dtype=np.uint8).copy(), bool(mask.any())


def _pil():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise NndlError("reading images needs Pillow: pip install pillow") from None
    return Image, ImageOps


# ----------------------------------------------------------------------------- batches


def _file_kind(path: Path) -> str:
    if path.suffix.lower() == ".csv":
        return "csv"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as e:
        raise NndlError(f"{path}: cannot read ({e.strerror}); check the path") from None
    if head[:2] == b"\x1f\x8b" or head[:3] == b"\x00\x00\x08":
        return "idx"
    return "image"


def read_pixel_csv(path: str | Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """A CSV batch: the Kaggle form (``label,pixel1..pixel784``) or H*W pixel columns (header optional).

    Returns
    -------
    images : uint8 (N, H, W), ``size = (H, W)`` (default Fashion-MNIST's)
    labels : int array (N,) or None
    """
    from nndl.data.fashion import read_csv_form

    h, w = size or _fashion_size()
    path = Path(path)
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            first = fh.readline().strip().split(",")
    except OSError as e:
        raise NndlError(f"{path}: cannot read ({e.strerror}); check the path") from None
    if first and first[0].strip().lower() == "label" and (h, w) == _fashion_size():
        images, labels = read_csv_form(path)
        return images, labels.astype(np.int64)
    has_header = is_header(first, path)
    try:
        data = np.loadtxt(path, delimiter=",", skiprows=int(has_header), dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise NndlError(f"{path}: not a CSV of pixel values ({str(e).splitlines()[0][:100]})") from None
    if data.shape[0] == 0 or data.shape[1] != h * w:
        raise NndlError(f"{path}: {data.shape[1] if data.size else 0} columns; a pixel CSV needs {h * w} columns "
                        f"({h}x{w} pixels, 0..255)" + (" or the Kaggle form label,pixel1,...,pixel784"
                                                         if (h, w) == _fashion_size() else ""))
    bad = np.argwhere((data < 0) | (data > 255) | ~np.isfinite(data))
    if len(bad):
        r, c = bad[0]
        raise NndlError(f"{path}: row {r + 1}, column {c + 1}: {data[r, c]} outside 0..255")
    return data.round().astype(np.uint8).reshape(-1, h, w), None


def read_batch(path: str | Path, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an IDX (gzipped or raw) or CSV batch of ``size = (H, W)`` images (default Fashion-MNIST's).

    Returns
    -------
    images : uint8 (N, H, W)
    labels : int array (N,) or None (only the Kaggle CSV form carries labels)
    """
    from nndl.data.readers import read_idx

    h, w = size or _fashion_size()
    path = Path(path)
    if _file_kind(path) == "csv":
        return read_pixel_csv(path, (h, w))
    arr = read_idx(path)
    if arr.ndim == 2 and arr.shape == (h, w):
        arr = arr[None]
    if arr.ndim == 1:
        raise NndlError(f"{path}: an IDX labels file; give the images file (…-images-idx3-ubyte[.gz])")
    if arr.ndim != 3 or arr.shape[1:] != (h, w):
        raise NndlError(f"{path}: IDX images of shape {arr.shape}; expected (N, {h}, {w})")
    return arr, None


# ----------------------------------------------------------------------------- classification


def class_probabilities(run: LoadedClassifier, inputs) -> np.ndarray:
    """Softmax probabilities (N, classes) for raw inputs, exactly as nndl evaluates.

    ``inputs`` are uint8 images ``(N, H, W)`` or ``(N, C, H, W)`` of the model's input shape,
    or float table rows ``(N, F)``. They go through :class:`nndl.nn.inference.Predictor` with the
    run's normalisation; with ``tta_flip`` the logits of each image and its mirror are averaged.
    """
    from nndl.nn.inference import Predictor, input_transform

    meta = run.meta or _fashion_meta()
    is_image = len(meta["input_shape"]) == 3
    x = torch.as_tensor(np.asarray(inputs, dtype=np.uint8 if is_image else np.float32))
    if len(x) == 0:
        return np.empty((0, len(run.class_names)), np.float32)
    transform = input_transform(meta)
    predictor = Predictor(run.model, lambda xb: transform(xb, None), tta_flip=getattr(run.cfg, "tta_flip", False),
                          batch_size=_EVAL_BATCH)
    return predictor.probs(x).numpy()


def _fashion_meta() -> dict:
    from nndl.data.fashion_mnist import META

    return META


NO_OBJECT = (f"no object in the image: every pixel is within {TRIM_THRESHOLD} grey levels of the background "
             "(blank or uniform); not classified")


def _read_for_model(run: LoadedClassifier, path: Path) -> tuple[np.ndarray, np.ndarray | None, bool, list[bool]]:
    """``(inputs, labels or None, single image?, has-object flags)`` of one file, as the model's dataset reads it."""
    from nndl.data import module

    meta = run.meta or _fashion_meta()
    style = module(meta["dataset"]).PREDICT_INPUT
    shape = tuple(meta["input_shape"])
    if style == "table":
        from nndl.data.csv_table import read_inputs as read_rows

        x, labels = read_rows(path, meta["feature_names"], run.class_names)
        return x, labels, False, [True] * len(x)
    kind = _file_kind(path)
    if style == "resized":
        if kind != "image":
            raise NndlError(f"{path}: this model was trained on an image folder; give image files (PNG/JPEG)")
        from nndl.data.image_folder import to_array

        if path.stat().st_size == 0:
            raise NndlError(f"{path}: empty file; give a PNG or JPEG image")
        arr = to_array(_open_image(path), shape[0], shape[1:])  # decoded once, as in training
        return arr[None], None, True, [int(arr.max()) - int(arr.min()) > 0]
    if kind == "image":
        image, has_object = _preprocess(path, shape[1:])
        return image[None], None, True, [has_object]
    images, labels = read_batch(path, shape[1:])
    # an IDX/CSV image is already model-sized on a black background: blank when it has no contrast
    return images, labels, False, [int(im.max()) - int(im.min()) > TRIM_THRESHOLD for im in images]


def _classify_files(run: LoadedClassifier, files: Sequence[str | Path], top: int) -> list[dict]:
    results = []
    for f in files:
        path = Path(f)
        if not path.exists():
            raise NndlError(f"{path}: no such file")
        images, labels, single, objects = _read_for_model(run, path)
        probs = class_probabilities(run, images)
        k = min(top, probs.shape[1])
        for i, p in enumerate(probs):
            order = np.argsort(-p, kind="stable")[:k]
            item: dict[str, Any] = {"file": str(path), "index": 0 if single else i}
            if objects[i]:
                item["top"] = [{"class": run.class_names[j], "probability": round(float(p[j]), 4)} for j in order]
            else:  # a confident "Sandal 79%" for a blank picture would be a made-up answer
                item["top"], item["warning"] = [], NO_OBJECT
            if labels is not None:
                item["label"] = run.class_names[int(labels[i])]
            results.append(item)
    return results


def _format_classes(results: list[dict]) -> str:
    lines = []
    for r in results:
        name = r["file"] if r["index"] == 0 and not _is_batch(r["file"]) else f"{r['file']}[{r['index']}]"
        label = f"  (label: {r['label']})" if "label" in r else ""
        answer = (f"warning: {r['warning']}" if "warning" in r
                  else ", ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"]))
        lines.append(f"{name}: {answer}{label}")
    return "\n".join(lines)


def _classes_table(results: list[dict], top: int) -> tuple[list[str], list[dict]]:
    """Classification results as CSV columns and rows: file, index, label (when known), then
    ``class_i``/``probability_i`` for the ``top`` classes, and ``warning`` when an input had no object."""
    columns = ["file", "index"] + (["label"] if any("label" in r for r in results) else [])
    k = max((len(r["top"]) for r in results), default=0) or top
    columns += [f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "probability")]
    columns += ["warning"] if any("warning" in r for r in results) else []
    rows = []
    for r in results:
        row = {key: r.get(key) for key in ("file", "index", "label", "warning")}
        for i, t in enumerate(r["top"], 1):
            row[f"class_{i}"], row[f"probability_{i}"] = t["class"], t["probability"]
        rows.append(row)
    return columns, rows


def _is_batch(file: str) -> bool:
    return _file_kind(Path(file)) != "image"
