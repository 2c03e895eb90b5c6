"""Predictions from a saved run: images, IDX/CSV batches or table rows for classifiers, CSV rows for regressors.

The model is rebuilt from ``model.pt`` alone (config, state dicts and the dataset's input
shape, classes and normalisation, loaded with ``weights_only=True``), so a run folder can be
copied anywhere and used. How a file becomes model input follows the dataset kind the model
was trained on (:mod:`nndl.data`): MNIST-style sets get the trimmed, light-on-dark
preprocessing of :func:`preprocess_image`; image folders get their images resized as in
training (colour kept for a colour model); tables get their rows read by column name.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json as _json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from nndl.data.regression_table import read_table
from nndl.data.readers import is_header
from nndl.base.errors import NndlError, function_argument, path_argument, paths_argument
from nndl.runfolder.files import first_line

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
BORDER_FRACTION = 0.04  # the outer 4% of each side (at least 1 pixel) is "the border"
TRIM_THRESHOLD = 30  # grey levels a pixel must differ from the background to count as the object
MAX_IMAGE_PIXELS = 40_000_000  # a 40-megapixel photo decodes to ~120 MB of RGB; beyond that, downscale first
_EVAL_BATCH = 512


@dataclass
class LoadedRun:
    """A model rebuilt from a run's ``model.pt``.

    Attributes
    ----------
    task : {"classify", "regress"}
    cfg : ClassifyConfig or RegressConfig
    model : nn.Module
        The final model in eval mode (for ``final="ensemble"`` the mean of the fold models).
    fold_models : list of nn.Module
        The cross-validation fold models (regression; empty when not saved).
    class_names : list of str
    meta : dict
        Classifiers: the dataset metadata (``dataset``, ``input_shape``, ``class_names``,
        ``mean``, ``std``, ``feature_names``; Fashion-MNIST's for files that predate it).
    in_features : int
        Regression inputs (0 for classifiers).
    x_names, y_name : list of str, str
        Regression column names from the training CSV.
    """

    task: str
    cfg: Any
    model: nn.Module
    fold_models: list[nn.Module] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    in_features: int = 0
    x_names: list[str] = field(default_factory=list)
    y_name: str = ""
    path: str = ""
    interval: dict = field(default_factory=dict)  # regression: what nndl.nn.intervals needs for the 90% interval


# ----------------------------------------------------------------------------- model.pt metadata
# model.pt is a file anyone can edit or forge: every value that decides what is built is checked first,
# and the network is built on the "meta" device (shapes, no memory) and compared with the weights before
# it is built for real, so a shape of huge, negative or text values is one line, never an allocation.
MAX_INPUT_VALUES = 2**31  # values in one input (C*H*W or features): beyond it, torch's indexing overflows


def _bad(path: Path, key: str, value: Any, why: str) -> NndlError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return NndlError(f"{path}: '{key}' = {shown}: {why}; the file is damaged or not from nndl: use the model.pt "
                     "its run wrote")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _names(path: Path, payload: dict, key: str, length: int | None = None, at_least: int = 0) -> None:
    value = payload[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise _bad(path, key, value, "expected a list of names (str)")
    if (length is not None and len(value) != length) or len(value) < at_least:
        want = f"{length}" if length is not None else f"at least {at_least}"
        raise _bad(path, key, value, f"expected {want} names, found {len(value)}")


def _state_dicts(path: Path, payload: dict, key: str) -> None:
    value = payload.get(key) or []
    if not isinstance(value, list) or not all(isinstance(sd, dict) and all(
            isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in sd.items()) for sd in value):
        raise _bad(path, key, value, "expected a list of state dicts (names -> tensors)")


def _check_classifier_meta(path: Path, payload: dict) -> None:
    """The dataset metadata a classifier is rebuilt from (a file from before datasets existed has none)."""
    from nndl.data import REGISTRY

    if "class_names" in payload:
        _names(path, payload, "class_names", at_least=2)
    if not (payload.get("input_shape") and payload.get("mean") is not None and payload.get("dataset")):
        return  # Fashion-MNIST's metadata (nndl.data.from_meta)
    if payload["dataset"] not in REGISTRY:
        raise _bad(path, "dataset", payload["dataset"], f"expected one of {', '.join(REGISTRY)}")
    shape = payload["input_shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) not in (1, 3)
            or not all(_is_int(v) and v >= 1 for v in shape) or math.prod(shape) > MAX_INPUT_VALUES):
        raise _bad(path, "input_shape", shape, "expected (channels, height, width) or (features,) of whole numbers "
                   f">= 1, at most {MAX_INPUT_VALUES:,} values in all")
    if "class_names" not in payload:
        raise _bad(path, "class_names", None, "missing")
    per = shape[0]  # channels of an image, features of a table row
    for key in ("mean", "std"):
        value = payload.get(key)
        if (not isinstance(value, (list, tuple)) or len(value) != per
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
                or (key == "std" and not all(v > 0 for v in value))):
            raise _bad(path, key, value, f"expected {per} finite numbers{' > 0' if key == 'std' else ''}, one per "
                       f"{'channel' if len(shape) == 3 else 'feature'}")
    if payload.get("feature_names") or len(shape) == 1:
        _names(path, payload, "feature_names", length=per if len(shape) == 1 else None)


def _check_regressor_meta(path: Path, payload: dict) -> None:
    n = payload.get("in_features")
    if n is not None and not (_is_int(n) and 1 <= n <= MAX_INPUT_VALUES):
        raise _bad(path, "in_features", n, f"expected a whole number in 1..{MAX_INPUT_VALUES:,}")
    if payload.get("x_names") is not None:
        _names(path, payload, "x_names", length=n)
    if payload.get("y_name") is not None and not isinstance(payload["y_name"], str):
        raise _bad(path, "y_name", payload["y_name"], "expected a name (str)")
    members = payload.get("member_configs") or []
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise _bad(path, "member_configs", members, "expected a list of config dicts")
    interval = payload.get("interval") or {}
    numbers = {k: interval.get(k) for k in ("noise_var", "spread_scale", "level")} if isinstance(interval, dict) else {}
    if not isinstance(interval, dict) or (interval and not (
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in numbers.values()) and 0 < numbers["level"] < 1
            and interval.get("spread_from", "members") in ("members", "folds"))):
        raise _bad(path, "interval", interval, "expected noise_var, spread_scale >= 0, level in (0, 1) and "
                   "spread_from members or folds")
    if interval.get("method", "model") != "model":
        _check_cv_plus(path, interval, len(payload.get("state_dicts") or []), len(payload.get("fold_state_dicts") or []))


def _check_cv_plus(path: Path, interval: dict, members: int, folds: int) -> None:
    """A CV+ interval dict: residuals >= 0, each row's fold and each interval model's fold in range."""
    from nndl.nn.conformal import min_rows

    r, rows, models = (interval.get(k) for k in ("residuals", "row_fold", "model_fold"))
    n_models = folds if interval.get("spread_from") == "folds" and folds else members
    ok = (interval.get("method") == "cv_plus" and all(isinstance(v, list) for v in (r, rows, models))
          and len(r) == len(rows) >= min_rows(interval["level"]) and len(models) == n_models
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in r)
          and all(_is_int(k) for k in rows + models))
    if ok:
        kinds = set(models)
        ok = kinds == set(range(len(kinds))) and set(rows) <= kinds
    if not ok:
        raise _bad(path, "interval", {k: interval.get(k) for k in ("method", "level", "spread_from")},
                   "expected method cv_plus with residuals >= 0 and row_fold (one per calibration row, enough "
                   "for the level) and model_fold (one per interval model) naming folds 0..K-1")


def _built_checked(build: Callable[[], nn.Module], state: dict, path: Path) -> nn.Module:
    """``build()`` on the meta device first: when its parameter shapes are not the weights', one line, before
    any memory is taken; then built for real and loaded."""
    try:
        with torch.device("meta"):
            skeleton = build()
    except (ValueError, RuntimeError, TypeError) as e:  # e.g. a CNN on images smaller than it needs
        raise NndlError(f"{path}: its config and metadata describe no model nndl can build "
                        f"({first_line(e, 160)})") from None
    wanted = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if wanted != found:
        key = next((k for k in wanted if found.get(k) != wanted[k]), None) or next(k for k in found if k not in wanted)
        raise NndlError(f"{path}: weights do not fit the model its config and metadata describe ('{key}': "
                        f"{found.get(key, 'missing')} in the file, {wanted.get(key, 'none')} in the model); use the "
                        "model.pt its run wrote")
    torch.manual_seed(0)  # construction randomness is overwritten by the weights; keep it deterministic anyway
    return _load_state(build(), state, path)


def _load_state(model: nn.Module, state: dict, path: Path) -> nn.Module:
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise NndlError(f"{path}: weights do not fit the model its config describes ({first_line(e, 160)})") from None
    return model.eval()


def _regressor(cfg, in_features: int, state: dict, path: Path) -> nn.Module:
    from nndl.nn.models import Standardized, build_regressor

    stats = ("x_mean", "x_std", "y_mean", "y_std")
    if cfg.standardize and not all(k in state for k in stats):
        raise NndlError(f"{path}: standardize=true but the checkpoint has no input/target statistics")

    def build() -> nn.Module:
        net = build_regressor(cfg, in_features)
        # the statistics are buffers in the state dict: built with their shapes, then loaded
        return Standardized(net, *(state[k] for k in stats)) if cfg.standardize else net

    return _built_checked(build, state, path)


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild the model of a run folder (or a ``model.pt`` path).

    Raises
    ------
    NndlError
        Missing file, a file that is not an nndl checkpoint, or weights that do not
        match the saved config.
    """
    from nndl.base import config as config_mod
    from nndl.nn.models import Ensemble, build_classifier
    from nndl.runfolder.files import load_model_file

    payload = load_model_file(run_dir)
    path = Path(run_dir) / "model.pt" if Path(run_dir).is_dir() else Path(run_dir)
    task = payload.get("task")
    states = payload.get("state_dicts")
    if task not in ("classify", "regress") or not isinstance(states, list) or not states:
        raise NndlError(f"{path}: checkpoint has no task/weights nndl can use (task={task!r})")
    if not isinstance(payload.get("config"), dict):
        raise NndlError(f"{path}: checkpoint has no config")
    for key in ("state_dicts", "fold_state_dicts"):
        _state_dicts(path, payload, key)
    (_check_classifier_meta if task == "classify" else _check_regressor_meta)(path, payload)
    # Keys this nndl version does not know (a checkpoint from another version) cannot change the
    # architecture it rebuilds, so they are dropped instead of refusing the file.
    known = {f.name for f in dataclasses.fields(config_mod.TASK_CONFIGS[task])}

    def saved_config(values: dict):
        try:
            return config_mod.from_dict(task, {k: v for k, v in values.items() if k in known})
        except NndlError as e:
            raise NndlError(f"{path}: its saved config: {e}") from None

    cfg = saved_config(payload["config"])
    if task == "classify":
        from nndl.data import from_meta

        meta = from_meta(payload)
        shape = tuple(meta["input_shape"])
        model = _built_checked(lambda: build_classifier(cfg, shape if len(shape) == 3 else (1, 1, shape[0]),
                                                        len(meta["class_names"])), states[0], path)
        return LoadedRun(task, cfg, model, class_names=meta["class_names"], meta=meta, path=str(path))
    first_weight = next((v for k, v in states[0].items() if k.endswith("layers.0.weight")), None)
    in_features = int(payload.get("in_features") or (first_weight.shape[1] if first_weight is not None
                                                     and first_weight.dim() == 2 else 1))
    # An auto ensemble mixes networks: each member is rebuilt with its own config fields.
    mixed = payload.get("member_configs") or []
    member_cfgs = ([saved_config({**config_mod.to_dict(cfg), **m}) if m else cfg for m in mixed]
                   if len(mixed) == len(states) else [cfg] * len(states))
    members = [_regressor(c, in_features, sd, path) for c, sd in zip(member_cfgs, states)]
    model = members[0] if len(members) == 1 else Ensemble(members).eval()
    folds = [_regressor(cfg, in_features, sd, path) for sd in payload.get("fold_state_dicts") or []]
    x_names = list(payload.get("x_names") or [f"x{i}" for i in range(in_features)])
    if len(x_names) != in_features:
        raise _bad(path, "x_names", x_names, f"expected {in_features} names, one per input")
    return LoadedRun(task, cfg, model, folds, in_features=in_features, x_names=x_names,
                     y_name=str(payload.get("y_name") or "y"), path=str(path),
                     interval=dict(payload.get("interval") or {}))


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
def class_probabilities(run: LoadedRun, inputs) -> np.ndarray:
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


def _read_for_model(run: LoadedRun, path: Path) -> tuple[np.ndarray, np.ndarray | None, bool, list[bool]]:
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


def _classify_files(run: LoadedRun, files: Sequence[str | Path], top: int) -> list[dict]:
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


# ----------------------------------------------------------------------------- regression
def _generated_names(names: Sequence[str]) -> bool:
    """True when the training CSV had no header (its columns were named ``col0, col1, ...`` by nndl)."""
    return all(re.fullmatch(r"col\d+", n) for n in names)


def read_inputs(path: str | Path, x_names: list[str], y_name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read regression inputs from a CSV, optionally with the target column too (float32, as the model
    computes; see :func:`_read_columns` for the rules)."""
    x, y = _read_columns(path, x_names, y_name)
    return x.astype(np.float32), (y.astype(np.float32) if y is not None else None)


def _read_columns(path: str | Path, x_names: list[str], y_name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Regression inputs (and the target, when present) from a CSV, as the float64 values written there.

    A first row without numbers is a header (as in training; a mixed one is refused).

    - Training CSV with a header: a file with a header is read **by name** (the
      target column is optional; other columns are ignored), and a missing input
      column is an error naming it. A file without a header is read by position
      only when the model has one input (nothing can be swapped); with several
      inputs it must name them, since a silent column swap gives wrong numbers.
    - Training CSV without a header (columns ``col0, col1, ...``): by position,
      ``len(x_names)`` columns are inputs only, one more is inputs then the target
      (the training layout).

    Returns
    -------
    x : float64 (N, D)
    y : float64 (N,) or None

    Raises
    ------
    NndlError
        The file names the wrong columns, has no header where one is needed, or
        has a column count that fits neither layout.
    """
    path = Path(path)
    values, header, has_header = read_table(path)
    d = len(x_names)
    by_position = _generated_names(x_names + [y_name]) or (not has_header and d == 1)
    if has_header and not by_position:
        missing = [n for n in x_names if n not in header]
        if missing:
            raise NndlError(f"{path}: no column '{missing[0]}'; the model was trained on the input columns "
                            f"{', '.join(x_names)} (found {', '.join(header)}); rename the header to match")
        x_idx = [header.index(n) for n in x_names]
        y_idx = header.index(y_name) if y_name in header else None
    elif not by_position:
        raise NndlError(f"{path}: no header row; the model has {d} inputs ({', '.join(x_names)}), read by name so "
                        "that columns cannot be swapped silently; add the header row")
    elif len(header) in (d, d + 1):
        x_idx, y_idx = list(range(d)), (d if len(header) == d + 1 else None)
    else:
        raise NndlError(f"{path}: {len(header)} columns; expected the input columns {', '.join(x_names)} ({d} by "
                        f"position, optionally followed by {y_name})")
    y = values[:, y_idx] if y_idx is not None else None
    return values[:, x_idx], y


def regression_predictions(run: LoadedRun, x: np.ndarray) -> dict[str, np.ndarray]:
    """``prediction`` of the final model, ``fold_mean``/``fold_std`` of the fold models when saved, and
    ``lower``/``upper``, the 90% interval (ensemble spread plus noise), for runs that saved one."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    with torch.no_grad():
        out = {"prediction": run.model(xt).reshape(-1).numpy()}
        if run.fold_models:
            folds = torch.stack([m(xt).reshape(-1) for m in run.fold_models]).numpy()
            out["fold_mean"], out["fold_std"] = folds.mean(0), folds.std(0)
    if run.interval:
        from nndl.nn.intervals import predict_interval

        with torch.no_grad():
            _, out["lower"], out["upper"] = predict_interval(run.model, run.fold_models, xt, run.interval)
    return out


def _regress_files(run: LoadedRun, files: Sequence[str | Path]) -> tuple[list[str], list[dict]]:
    rows: list[dict] = []
    any_y = False
    parts = []
    for f in files:
        x, y = _read_columns(f, run.x_names, run.y_name)  # float64: the user's values are echoed exactly
        parts.append((str(f), x, y, regression_predictions(run, x)))
        any_y |= y is not None
    columns = (["file"] if len(files) > 1 else []) + run.x_names + ([run.y_name] if any_y else []) + ["prediction"]
    if run.fold_models:
        columns += ["fold_mean", "fold_std"]
    if run.interval:
        columns += ["lower", "upper"]
    for name, x, y, pred in parts:
        for i in range(len(x)):
            row: dict[str, Any] = {"file": name} if len(files) > 1 else {}
            row.update({n: float(x[i, j]) for j, n in enumerate(run.x_names)})
            if any_y:
                row[run.y_name] = float(y[i]) if y is not None else None
            row.update({k: _short(v[i]) for k, v in pred.items()})
            rows.append(row)
    return columns, rows


def _short(value: np.floating) -> float:
    """A float32 model output as the shortest decimal that reads back as the same float32
    (``0.1``, not ``0.10000000149011612``): digits past float32 precision are noise."""
    return float(str(np.float32(value)))


def _csv_text(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:  # repr: the shortest text that reads back as the same number
        writer.writerow(["" if r.get(c) is None else (repr(r[c]) if isinstance(r[c], float) else r[c])
                         for c in columns])
    return buf.getvalue()


# ----------------------------------------------------------------------------- entry point
def predict(run_dir: str | Path, files: Sequence[str | Path], json: bool = False, out: str | Path | None = None,
            top: int = 3, echo: Callable[[str], None] | None = print) -> list[dict]:
    """Predict with the model of a run folder.

    Parameters
    ----------
    run_dir : str or Path
        A run folder (or its ``model.pt``).
    files : list of str or Path
        Classification: PNG/JPEG images (any size and colour; brought to the model's
        input shape, see :func:`preprocess_image` for MNIST-style models), IDX image files
        (gzipped or raw) and CSV batches (Kaggle form with labels, or H*W pixel
        columns); for a model trained on a CSV table, CSV files with its feature columns
        (one prediction per row). Regression: CSV files of input rows (see :func:`read_inputs`).
    json : bool
        Emit JSON instead of text (classification) or CSV (regression).
    out : str or Path, optional
        Write the output to this file instead of ``echo``. Classification into a ``.csv`` file
        (without ``json``) writes a CSV: ``file, index, [label,] class_1, probability_1, ...``.
    top : int
        How many classes to list per image (at least 1).
    echo : callable or None
        Where the output goes when ``out`` is not given.

    Returns
    -------
    list of dict
        Classification: ``{"file", "index", "top": [{"class", "probability"}, ...]}``
        (plus ``"label"`` when the batch has labels), the ``top`` most probable classes
        (the key is ``top`` whatever ``top`` is), sorted by probability,
        probabilities rounded to 4 decimals. An image with no object (blank or
        uniform) gets an empty list and a ``"warning"`` instead of made-up classes.
        Regression: one dict per input row with the input columns (the values as
        written in the file), ``prediction`` and, when the fold models were saved,
        ``fold_mean`` and ``fold_std`` (float32 outputs as their shortest decimals).

    Raises
    ------
    NndlError
        Not an nndl run / checkpoint, an unreadable, oversized or mismatched input
        file, ``top < 1``, or an ``out`` that cannot be written.
    """
    run_dir, out = path_argument(run_dir, "run_dir") or Path("."), path_argument(out, "out")
    files, echo = paths_argument(files, "files"), function_argument(echo, "echo")
    if not files:
        raise NndlError("give at least one input file")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise NndlError(f"--top {top}: list at least 1 class per image (e.g. --top 3)")
    if out is not None:  # never over an input, nor over a file of the run it reads
        from nndl.runfolder.files import check_output

        run_folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
        check_output(out, inputs=[*files, run_dir], folders=[run_folder])
    with warnings.catch_warnings():
        # numpy/Pillow/torch notes about an odd input (an empty text file, a palette PNG, a legacy
        # pickle) are noise here: a bad input ends in one NndlError line, a good one in the predictions.
        warnings.simplefilter("ignore")
        run = load_run(run_dir)
        if run.task == "classify":
            results = _classify_files(run, files, top)
            if json:
                text = _json.dumps(results, indent=2)
            elif out is not None and out.suffix.lower() == ".csv":  # a .csv file is a table, not text lines
                text = _csv_text(*_classes_table(results, top)).rstrip("\n")
            else:
                text = _format_classes(results)
        else:
            columns, results = _regress_files(run, files)
            text = _json.dumps(results, indent=2) if json else _csv_text(columns, results).rstrip("\n")
    if out is not None:
        from nndl.base.fileio import atomic_write_text
        from nndl.runfolder.files import record

        try:
            atomic_write_text(out, text + "\n")  # a failed write leaves no half file (and an older one intact)
            record(out)
        except OSError as e:
            fix = {28: "free some disk space", 27: "the file-size limit (ulimit -f) was reached"}.get(
                e.errno, "check the folder exists and is writable")
            raise NndlError(f"{out}: cannot write the predictions ({e.strerror}); {fix}") from None
        if echo is not None:
            echo(f"wrote {len(results)} predictions to {out}")
    elif echo is not None:
        echo(text)
    return results
