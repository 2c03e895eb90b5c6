"""Figures of a classification run (any image dataset; tables get the non-image figures).

Confusion matrices, a reliability diagram (calibration), the most confidently wrong
test images, first-layer filters, feature maps, activation maximisation and accuracy curves; each
function writes one PNG and returns its path (:func:`maximise_activations` is the optimisation behind
one of them, returning tensors). :func:`write_classification_figures` writes the whole set into a
run's ``figures/`` folder.

Conventions shared by the functions here:

- ``images`` are raw ``uint8`` tensors of shape (N, H, W) (grey) or (N, C, H, W), exactly as
  loaded;
- ``to_input`` maps such a batch to the model's float input (B, C, H, W)
  (it normalises; nothing here assumes its constants or the image size);
- the model is switched to eval mode inside each function and its previous
  train/eval flags are restored afterwards;
- everything runs under :func:`torch.no_grad` in small batches, except
  :func:`activation_maximisation`, which needs input gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import matplotlib
import matplotlib.ticker
import numpy as np
import torch
from torch import nn

from nndl.figures.common import plt, save, styled, weight_histograms
from nndl.figures.curves import draw_accuracy_curves
from nndl.nn.inference import Predictor, eval_mode
from nndl.nn.metrics import CALIBRATION_BINS, calibration_bins, expected_calibration_error

__all__ = ["confusion_matrix", "confusion_matrices", "misclassified_gallery", "first_layer_filters",
           "feature_maps", "activation_maximisation", "maximise_activations", "draw_maximised",
           "MaximisedInputs", "accuracy_curves", "reliability_diagram",
           "write_classification_figures",
           "predict_probs"]

ToInput = Callable[[torch.Tensor], torch.Tensor]
_BATCH = 256  # images per forward pass: small enough for a laptop CPU, big enough to be quick


# ----------------------------------------------------------------------------- helpers
def _numpy(x) -> np.ndarray:
    """A CPU numpy copy of a tensor / array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _uint8_images(images) -> torch.Tensor:
    """``images`` as a CPU uint8 tensor: (N, H, W) for grey, (N, C, H, W) for colour."""
    t = images.detach().cpu() if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if t.dim() == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if t.dim() not in (3, 4):
        raise ValueError(f"images must have shape (N, H, W) or (N, C, H, W), got {tuple(t.shape)}")
    return t.to(torch.uint8)


def _show(ax, image, vmax: float = 255) -> None:
    """Draw one image: (H, W) grey, or (C, H, W) colour (channels moved last)."""
    a = _numpy(image)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        ax.imshow(np.clip(a.transpose(1, 2, 0) / vmax, 0, 1))
    else:
        ax.imshow(a, cmap="gray", vmin=0, vmax=vmax)


def _image_shape(model: nn.Module, input_shape) -> tuple[int, int, int]:
    """(C, H, W) of the model's input: as given, else Fashion-MNIST's (the figures' historical default)."""
    if input_shape is not None:
        return tuple(int(v) for v in input_shape)
    from nndl.data.fashion_mnist import INPUT_SHAPE

    return INPUT_SHAPE


def _blank(shape: tuple[int, int, int], value: int = 0) -> torch.Tensor:
    """One raw image of ``shape`` filled with ``value``, laid out as the figures' images are."""
    c, h, w = shape
    return torch.full((1, h, w) if c == 1 else (1, c, h, w), value, dtype=torch.uint8)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


_eval_mode = eval_mode  # every submodule in eval mode, each one's flag restored on exit


def _conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every ``nn.Conv2d`` in module order (nested Sequentials / residual blocks included)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _mosaic(tiles: np.ndarray, ncols: int, gap: int = 1) -> np.ndarray:
    """Tile (K, H, W) arrays into one 2-D array, NaN in the gaps (drawn as background)."""
    k, h, w = tiles.shape
    nrows = max(1, math.ceil(k / ncols))
    out = np.full((nrows * (h + gap) - gap, ncols * (w + gap) - gap), np.nan)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out


def _cmap(name: str, bad: str = "white"):
    return matplotlib.colormaps[name].with_extremes(bad=bad)


def _image_axis(ax) -> None:
    """No ticks, no grid, no frame: the axis only holds a picture."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def predict_probs(model: nn.Module, to_input: ToInput, images, batch_size: int = _BATCH,
                  tta_flip: bool = False) -> np.ndarray:
    """Softmax probabilities (N, classes) of ``model`` on uint8 ``images``, in batches, in eval mode,
    through :class:`nndl.nn.inference.Predictor` (the path every other prediction takes).

    Parameters
    ----------
    model : nn.Module
        A classifier that outputs logits.
    to_input : callable
        Maps a uint8 batch to the model's float input (B, C, H, W).
    images : uint8 tensor (N, H, W) or (N, C, H, W)
    batch_size : int
    tta_flip : bool
        Average each image's logits with its mirror image's (as the run evaluated).

    Returns
    -------
    np.ndarray of float32, shape (N, classes)
    """
    images = _uint8_images(images)
    predictor = Predictor(model, lambda xb: to_input(xb).to(_device(model)), tta_flip=tta_flip,
                          batch_size=batch_size)
    return predictor.probs(images).numpy()


# ----------------------------------------------------------------------------- confusion matrix
def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Count matrix of (true, predicted) label pairs.

    Parameters
    ----------
    y_true, y_pred : array-like or tensor of int, shape (N,)
        Labels in ``0 .. num_classes - 1``.
    num_classes : int

    Returns
    -------
    np.ndarray of int64, shape (num_classes, num_classes)
        ``cm[i, j]`` is the number of samples of true class ``i`` predicted as ``j``
        (rows true, columns predicted; the same layout as scikit-learn's).
    """
    t = _numpy(y_true).astype(np.int64).ravel()
    p = _numpy(y_pred).astype(np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.size} vs {p.size}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}")
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _matrix_panel(ax, m: np.ndarray, class_names: Sequence[str], fmt: str, title: str, vmax: float):
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=vmax)
    k = len(class_names)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    ax.grid(False)
    ax.tick_params(length=0)
    fontsize = 8 if k <= 10 else 6
    for i in range(k):
        for j in range(k):
            v = m[i, j]
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=fontsize,
                    color="white" if v > 0.55 * vmax else ("#222222" if v else "#bbbbbb"))
    return im


@styled
def confusion_matrices(y_true, y_pred, class_names: Sequence[str], path: str | Path) -> Path:
    """Counts and row-normalised confusion matrices side by side.

    Parameters
    ----------
    y_true, y_pred : array-like or tensor of int, shape (N,)
    class_names : list of str
        One name per class, in label order.
    path : str or Path
        Where the PNG goes.

    Returns
    -------
    Path
        ``path``. The right panel's rows sum to 1: its diagonal is each class's recall.
    """
    k = len(class_names)
    cm = confusion_matrix(y_true, y_pred, k)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    acc = np.trace(cm) / max(cm.sum(), 1)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 6))
    im1 = _matrix_panel(a1, cm, class_names, "d", "Counts", max(cm.max(), 1))
    fig.colorbar(im1, ax=a1, fraction=0.046, pad=0.03, label="images")
    im2 = _matrix_panel(a2, norm, class_names, ".2f", "Row-normalised (diagonal = recall per true class)", 1.0)
    fig.colorbar(im2, ax=a2, fraction=0.046, pad=0.03, label="fraction of the true class")
    fig.suptitle(f"Confusion matrix: {cm.sum()} images, accuracy {acc:.2%}", fontsize=12)
    return save(fig, path)


# ----------------------------------------------------------------------------- misclassified
@styled
def misclassified_gallery(images, y_true, probs, class_names: Sequence[str], path: str | Path,
                          n: int = 24) -> Path:
    """A grid of the ``n`` most confidently wrong images.

    Parameters
    ----------
    images : uint8 tensor (N, H, W) or (N, C, H, W)
    y_true : array-like or tensor of int, shape (N,)
    probs : array-like or tensor, shape (N, classes)
        Softmax probabilities; the prediction is their argmax and its probability
        the confidence that orders the errors.
    class_names : list of str
    path : str or Path
    n : int
        Most images shown (8 per row).

    Returns
    -------
    Path
    """
    images = _uint8_images(images).numpy()
    t = _numpy(y_true).astype(np.int64).ravel()
    p = _numpy(probs).astype(np.float64)
    pred = p.argmax(1)
    conf = p[np.arange(len(p)), pred]
    wrong = np.flatnonzero(pred != t)
    chosen = wrong[np.argsort(-conf[wrong], kind="stable")][:n]
    cols = min(8, max(len(chosen), 1))
    rows = max(1, math.ceil(len(chosen) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.55 * cols + 0.4, 1.85 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        _image_axis(ax)
        ax.axis("off")
    for ax, i in zip(axes.flat, chosen):
        ax.axis("on")
        _show(ax, images[i])
        ax.set_title(f"true: {class_names[t[i]]}\npred: {class_names[pred[i]]} (p={conf[i]:.2f})",
                     fontsize=7, color="#b2182b" if conf[i] >= 0.5 else "#333333")
    if not len(chosen):
        axes[0, 0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(f"Most confidently wrong: {len(chosen)} of {len(wrong)} errors in {len(t)} images "
                 f"({len(wrong) / max(len(t), 1):.1%} error rate)", fontsize=10)
    return save(fig, path)


# ----------------------------------------------------------------------------- first-layer filters
@styled
def first_layer_filters(model: nn.Module, path: str | Path, max_units: int = 64, input_shape=None) -> Path:
    """The first layer's weights drawn as images.

    For a model with convolutions, the first ``nn.Conv2d``'s kernels (averaged over
    input channels if it has several) on one shared colour scale. For an MLP, the
    first ``nn.Linear``'s weight rows reshaped to the input image (channels averaged), each on its own symmetric
    scale (the pattern each hidden unit responds to). Red is positive, blue negative,
    white zero.

    Parameters
    ----------
    model : nn.Module
    path : str or Path
    max_units : int
        Most filters / units shown (the first ones).
    input_shape : (C, H, W), optional
        The image shape an MLP sees flattened (default: Fashion-MNIST's).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        If the model has neither a ``Conv2d`` nor a ``Linear`` taking ``input_shape`` images.
    """
    convs = _conv_layers(model)
    if convs:
        name, conv = convs[0]
        w = conv.weight.detach().float().cpu().mean(1).numpy()[:max_units]  # (K, kh, kw)
        tiles, scale = w, float(np.abs(w).max()) or 1.0
        label = "weight"
        what = (f"first conv layer '{name}': {len(w)} of {conv.out_channels} kernels, "
                f"{conv.kernel_size[0]}x{conv.kernel_size[1]}")
    else:
        c, h, wd = _image_shape(model, input_shape)
        linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears or linears[0][1].in_features != c * h * wd:
            raise ValueError(f"first_layer_filters needs a Conv2d or a first Linear layer with {c * h * wd} inputs "
                             f"({c}x{h}x{wd} images)")
        name, lin = linears[0]
        w = lin.weight.detach().float().cpu().numpy()[:max_units].reshape(-1, c, h, wd).mean(1)
        peak = np.abs(w).reshape(len(w), -1).max(1)
        tiles, scale = w / np.where(peak > 0, peak, 1)[:, None, None], 1.0
        label = "weight / max |weight| of the unit"
        what = f"first layer '{name}': weights of {len(w)} of {lin.out_features} hidden units as {h}x{wd} images"
    cols = math.ceil(math.sqrt(len(tiles)))
    gap = 1 if tiles.shape[-1] < 10 else 2
    fig, ax = plt.subplots(figsize=(7.5, 7))
    im = ax.imshow(_mosaic(tiles, cols, gap), cmap=_cmap("RdBu_r", "#dddddd"), vmin=-scale, vmax=scale,
                   interpolation="nearest")
    _image_axis(ax)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label=label)
    ax.set_title(what, fontsize=9)
    return save(fig, path)


# ----------------------------------------------------------------------------- feature maps
def _pick_layers(convs: list, k: int) -> list:
    """At most ``k`` of the conv layers, evenly spread from the first to the last (deep nets have many)."""
    if len(convs) <= k:
        return list(convs)
    idx = sorted({round(i * (len(convs) - 1) / (k - 1)) for i in range(k)})
    return [convs[i] for i in idx]


@styled
def feature_maps(model: nn.Module, to_input: ToInput, images, path: str | Path, n_images: int = 10,
                 max_channels: int = 4, titles: Sequence[str] | None = None, max_layers: int = 4) -> Path:
    """Convolution outputs for a few images (in a run: one image of each class), one row per image.

    Forward hooks on the chosen ``nn.Conv2d`` layers capture their outputs (before
    any batch norm or activation). Each row shows the input image, then the first
    ``max_channels`` channels of each chosen layer; the column headers name the
    layer and its output shape. Each map has its own min-max colour scale
    (bright = strong response).

    Parameters
    ----------
    model : nn.Module
    to_input : callable
        Maps a uint8 batch to the model's float input.
    images : uint8 tensor (N, H, W) or (N, C, H, W)
        The first ``n_images`` are used.
    path : str or Path
    n_images : int
    max_channels : int
        Channels shown per layer (the first ones).
    titles : list of str, optional
        A label per image (e.g. its class), written beside it.
    max_layers : int
        Conv layers shown, evenly spread from the first to the last.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        If the model has no ``nn.Conv2d`` layer.
    """
    convs = _conv_layers(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer: no feature maps to show")
    main_path = [(n, c) for n, c in convs if c.kernel_size != (1, 1)] or convs  # not residual 1x1 shortcuts
    chosen = _pick_layers(main_path, max_layers)
    images = _uint8_images(images)[:n_images]
    captured: dict[str, torch.Tensor] = {}
    hooks = [conv.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach()))
             for name, conv in chosen]
    try:
        with _eval_mode(model), torch.no_grad():
            model(to_input(images).to(_device(model)))
    finally:
        for h in hooks:
            h.remove()
    maps = {name: captured[name].float().cpu().numpy() for name, _ in chosen}  # (B, C, H, W)
    n_img, k = len(images), max_channels
    fig = plt.figure(figsize=(1.4 + 0.78 * k * len(chosen), 0.82 * n_img + 1.3))
    grid = fig.add_gridspec(n_img, 1 + len(chosen), width_ratios=[1.0] + [float(k)] * len(chosen),
                            wspace=0.12, hspace=0.12)
    for b in range(n_img):
        ax_in = fig.add_subplot(grid[b, 0])
        _show(ax_in, images[b])
        _image_axis(ax_in)
        ax_in.set_ylabel(titles[b] if titles is not None else f"image {b}", rotation=0, ha="right", va="center",
                         fontsize=8)
        if b == 0:
            ax_in.set_title("input", fontsize=8)
        for li, (name, _conv) in enumerate(chosen):
            fm = maps[name][b][:k]  # (C, H, W)
            lo = fm.reshape(len(fm), -1).min(1)[:, None, None]
            hi = fm.reshape(len(fm), -1).max(1)[:, None, None]
            fm = (fm - lo) / np.where(hi > lo, hi - lo, 1)
            if len(fm) < k:
                fm = np.concatenate([fm, np.full((k - len(fm), *fm.shape[1:]), np.nan)])
            ax = fig.add_subplot(grid[b, 1 + li])
            ax.imshow(_mosaic(fm, k, gap=max(1, fm.shape[-1] // 10)), cmap=_cmap("viridis"), vmin=0, vmax=1,
                      interpolation="nearest")
            _image_axis(ax)
            if b == 0:
                c, h, w = maps[name].shape[1:]
                ax.set_title(f"{name}: {c} ch, {h}x{w}\nchannels 0-{min(k, c) - 1}", fontsize=8)
    skipped = f"{len(chosen)} of {len(convs)} conv layers" if len(chosen) < len(convs) else f"{len(convs)} conv layers"
    fig.suptitle(f"Feature maps: {n_img} images ({'one per class' if titles is not None else 'test images'}), "
                 f"{skipped}; each map scaled to its own range", fontsize=10)
    fig.subplots_adjust(left=0.11, right=0.99, top=1 - 0.75 / fig.get_figheight(), bottom=0.02)
    return save(fig, path, tight=False)  # tight_layout fights the image grid; margins are set above


# ----------------------------------------------------------------------------- activation maximisation
def _blur(u: torch.Tensor) -> torch.Tensor:
    """A 3x3 Gaussian blur (sigma ~ 0.85) of a (B, C, H, W) batch, each channel alone, edges replicated."""
    k = torch.tensor([0.25, 0.5, 0.25], dtype=u.dtype, device=u.device)
    c = u.shape[1]
    k2 = (k[:, None] * k[None, :]).view(1, 1, 3, 3).expand(c, 1, 3, 3)
    return nn.functional.conv2d(nn.functional.pad(u, (1, 1, 1, 1), mode="replicate"), k2, groups=c)


def activation_maximisation(model: nn.Module, to_input: ToInput, path: str | Path, target: str = "class",
                            index=None, steps: int = 200, lr: float = 0.1, seed: int = 0,
                            class_names: Sequence[str] | None = None, l2: float = 0.1,
                            blur_every: int = 1, jitter: int = 2, input_shape=None) -> Path:
    """Images optimised to excite a class logit or a conv channel.

    Each image lives in pixel space ``u`` in [0, 1] (0 = black background) and
    reaches the model as ``lo + u * (hi - lo)``, where ``lo``/``hi`` are
    ``to_input`` of an all-black/all-white image, so the normalisation is taken
    from ``to_input`` itself (assumed affine per pixel, as a normalisation is).
    Starting from faint noise, Adam ascends the target with a decoupled L2
    penalty on ``u`` (AdamW weight decay, which shrinks every pixel towards black
    by ``lr * l2`` per step whatever the target's scale, so one setting suits
    logits and channel means alike); each step sees the image randomly shifted
    by up to ``jitter`` pixels, and after every ``blur_every`` steps (but the
    last) the image is blurred slightly, which keeps high-frequency adversarial
    patterns out. All images are optimised as one batch. Parameters, their ``requires_grad`` flags and the train/eval flags
    are restored afterwards; the model runs in eval mode.

    Parameters
    ----------
    model : nn.Module
    to_input : callable
        Maps a uint8 batch to the model's float input.
    path : str or Path
    target : {"class", "channel"}
        Maximise a logit, or the mean activation of one channel of a conv layer.
    index : None, int or (int, int)
        ``target="class"``: a class number, or None for every class (a 2x5 grid
        for 10 classes). ``target="channel"``: ``(layer, channel)`` with ``layer``
        counting the model's ``Conv2d`` modules from 0 in module order, or a layer
        number alone (or None for the last conv layer) for its first 10 channels.
    steps, lr : int, float
        Adam steps and step size (pixel units).
    seed : int
        Seeds the starting noise and the jitter (a private generator; the global
        RNG is untouched).
    class_names : list of str, optional
        Titles for class targets.
    l2, blur_every, jitter : float, int, int
        Regulariser strengths (see above); 0 switches one off.
    input_shape : (C, H, W), optional
        The model's input image shape (default: Fashion-MNIST's).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        An unknown ``target``, a channel target on a model without convolutions,
        or a class / layer / channel out of range.
    """
    maximised = maximise_activations(model, to_input, target, index, steps=steps, lr=lr, seed=seed,
                                     class_names=class_names, l2=l2, blur_every=blur_every, jitter=jitter,
                                     input_shape=input_shape)
    return draw_maximised(maximised, path)


@dataclass
class MaximisedInputs:
    """What :func:`maximise_activations` found: one image per unit, and what it was optimised for.

    Attributes
    ----------
    images : torch.Tensor
        (B, C, H, W) on the CPU, pixels in [0, 1] (0 = black).
    scores : torch.Tensor
        (B,) the target's value at the last step.
    labels : list of str
        A title per image ("Sandal", "channel 3").
    target : {"class", "channel"}
    what : str
        The quantity maximised, in words ("class logit", "mean activation of ...").
    steps : int
    """

    images: torch.Tensor
    scores: torch.Tensor
    labels: list[str]
    target: str
    what: str
    steps: int


def maximise_activations(model: nn.Module, to_input: ToInput, target: str = "class", index=None, *,
                         steps: int = 200, lr: float = 0.1, seed: int = 0, class_names: Sequence[str] | None = None,
                         l2: float = 0.1, blur_every: int = 1, jitter: int = 2,
                         input_shape=None) -> MaximisedInputs:
    """The optimisation of :func:`activation_maximisation` (same parameters but ``path``), without the drawing.

    Returns
    -------
    MaximisedInputs
    """
    device = _device(model)
    gen = torch.Generator().manual_seed(seed)
    shape = _image_shape(model, input_shape)
    units, labels, what, conv = _target_units(model, to_input, shape, target, index, class_names)
    captured: list[torch.Tensor] = []
    hook = conv.register_forward_hook(lambda _m, _i, out: captured.append(out)) if conv is not None else None
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        with _eval_mode(model), torch.enable_grad():
            lo = to_input(_blank(shape)).to(device).float()
            hi = to_input(_blank(shape, 255)).to(device).float()
            b = len(units)
            u = (0.1 + 0.02 * torch.randn(b, *shape, generator=gen)).clamp(0, 1).to(device).requires_grad_(True)
            shifts = torch.randint(-jitter, jitter + 1, (steps, 2), generator=gen).tolist()
            opt = torch.optim.AdamW([u], lr=lr, weight_decay=l2)
            idx = torch.tensor(units, device=device)
            rows = torch.arange(b, device=device)
            dtype = next(model.parameters()).dtype if flags else torch.float32
            for step in range(steps):
                x = torch.roll(u, shifts=tuple(shifts[step]), dims=(2, 3)) if jitter else u
                captured.clear()
                out = model((lo + x * (hi - lo)).to(dtype))
                score = out.float()[rows, idx] if conv is None else captured[0].float()[rows, idx].mean((1, 2))
                opt.zero_grad(set_to_none=True)
                (-score.sum()).backward()
                opt.step()
                with torch.no_grad():
                    if blur_every and (step + 1) % blur_every == 0 and step < steps - 1:
                        u.copy_(_blur(u))
                    u.clamp_(0, 1)
    finally:
        if hook is not None:
            hook.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
    return MaximisedInputs(u.detach().cpu(), score.detach().float().cpu(), labels, target, what, steps)


def _target_units(model: nn.Module, to_input: ToInput, shape, target: str, index, class_names):
    """``(units, labels, what, conv)``: the logits or channels to maximise, their titles, the quantity in
    words, and the ``Conv2d`` whose output holds them (None for class logits); ValueError when out of range."""
    if target == "class":
        with torch.no_grad(), _eval_mode(model):
            n_classes = model(to_input(_blank(shape)).to(_device(model))).shape[1]
        units = list(range(n_classes)) if index is None else [int(index)]
        if not all(0 <= c < n_classes for c in units):
            raise ValueError(f"class {index} out of range: the model has {n_classes} outputs")
        names = list(class_names) if class_names is not None else [f"class {c}" for c in range(n_classes)]
        return units, [f"{names[c]}" for c in units], "class logit", None
    if target != "channel":
        raise ValueError(f"target must be 'class' or 'channel', not {target!r}")
    convs = _conv_layers(model)
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer: no channel to maximise")
    if isinstance(index, (tuple, list)):
        layer, chans = int(index[0]), [int(index[1])]
    else:
        layer, chans = (len(convs) - 1 if index is None else int(index)), None
    if not -len(convs) <= layer < len(convs):
        raise ValueError(f"layer {layer} out of range: the model has {len(convs)} Conv2d layers")
    lname, conv = convs[layer]
    chans = chans if chans is not None else list(range(min(10, conv.out_channels)))
    if not all(0 <= c < conv.out_channels for c in chans):
        raise ValueError(f"channel out of range: '{lname}' has {conv.out_channels} channels")
    what = f"mean activation of\nconv layer {layer % len(convs)} (raw output of '{lname}')"
    return chans, [f"channel {c}" for c in chans], what, conv


@styled
def draw_maximised(maximised: MaximisedInputs, path: str | Path) -> Path:
    """The images of :func:`maximise_activations` in a grid of up to five columns, each titled with its score."""
    imgs, b = maximised.images.numpy(), len(maximised.labels)
    cols = min(5, b)
    rows_n = math.ceil(b / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(max(2.3 * cols, 6.5), 2.75 * rows_n + 0.6), squeeze=False)
    for ax in axes.flat:
        _image_axis(ax)
        ax.axis("off")
    kind = "logit" if maximised.target == "class" else "activation"
    for ax, img, label, s in zip(axes.flat, imgs, maximised.labels, maximised.scores.numpy()):
        ax.axis("on")
        _show(ax, img, vmax=1)
        ax.set_title(f"{label}\n{kind} {s:.2f}", fontsize=9)
    fig.suptitle(f"Activation maximisation: inputs that maximise the {maximised.what}\n"
                 f"({maximised.steps} Adam steps from faint noise; L2 decay, jitter and blur keep them smooth)",
                 fontsize=10)
    return save(fig, path)


# ----------------------------------------------------------------------------- accuracy curves
@styled
def accuracy_curves(history: Sequence[dict], path: str | Path, title: str = "Training curves") -> Path:
    """Loss and accuracy over epochs, train solid and validation dashed.

    Parameters
    ----------
    history : list of dict
        One dict per epoch with ``epoch``, ``train_loss``, ``train_acc`` and,
        when there is a validation set, ``val_loss`` / ``val_acc`` (missing
        keys are skipped). Accuracy is a fraction in [0, 1].
    path : str or Path
    title : str

    Returns
    -------
    Path
    """
    fig = plt.figure(figsize=(11, 4))
    draw_accuracy_curves(fig, history, title)
    return save(fig, path)


@styled
def reliability_diagram(labels, probs, path: str | Path, bins: int = CALIBRATION_BINS,
                        title: str = "Calibration (test set)") -> Path:
    """Reliability diagram: accuracy against confidence in equal-width bins, with the share of predictions per bin.

    Parameters
    ----------
    labels : array-like of int, shape (N,)
    probs : array-like (N, classes)
        Predicted probabilities; the confidence of a prediction is its top probability.
    path : str or Path
    bins : int
        Equal-width confidence bins of (0, 1] (the bins of :func:`nndl.nn.metrics.expected_calibration_error`).
    title : str

    Returns
    -------
    Path
    """
    b = calibration_bins(_numpy(labels), _numpy(probs), bins)
    ece = expected_calibration_error(_numpy(labels), _numpy(probs), bins)
    centres, width = (b["edges"][:-1] + b["edges"][1:]) / 2, 1.0 / bins
    filled = b["count"] > 0
    fig, (ax, a_count) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ":", color="0.4", lw=1, label="perfectly calibrated")
    ax.bar(centres[filled], b["accuracy"][filled], width=width * 0.9, color="#4c72b0", alpha=0.8, label="accuracy")
    ax.plot(b["confidence"][filled], b["accuracy"][filled], "o", color="#dd8452", ms=4,
            label="mean confidence of the bin")
    ax.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"{title}: ECE {ece:.3f} ({bins} bins)" if np.isfinite(ece) else title)
    ax.legend(fontsize=8, loc="best")
    total = max(b["count"].sum(), 1)
    a_count.bar(centres, b["count"] / total, width=width * 0.9, color="0.55")
    a_count.set(xlabel="confidence (top probability)", ylabel="share")
    a_count.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    return save(fig, path)


# ----------------------------------------------------------------------------- all of them
def _one_per_class(labels: np.ndarray, k: int) -> list[int]:
    """Indices of the first image of each of up to ``k`` different classes, in class order."""
    _, first = np.unique(labels, return_index=True)  # unique labels come sorted: rows read class 0, 1, ...
    return first.tolist()[:k]


def write_classification_figures(model: nn.Module, to_input: ToInput, test_images, test_labels, probs,
                                 history: Sequence[dict] | None, class_names: Sequence[str],
                                 fig_dir: str | Path, *, steps: int = 200, n_feature_images: int | None = None,
                                 input_shape=None, tta_flip: bool = False) -> list[Path]:
    """Write every classification figure of a run into ``fig_dir``.

    Parameters
    ----------
    model : nn.Module
        The trained classifier (its train/eval flags are left as found).
    to_input : callable
        Maps a raw batch to the model's float input.
    test_images : uint8 tensor (N, H, W) or (N, C, H, W); float rows (N, F) for a table
    test_labels : array-like or tensor of int, shape (N,)
    probs : array-like or tensor (N, classes), or None
        Softmax outputs on ``test_images``; computed here when None.
    history : list of dict or None
        Per-epoch records (see :func:`accuracy_curves`).
    class_names : list of str
    fig_dir : str or Path
    steps : int
        Activation-maximisation steps.
    n_feature_images : int, optional
        Images (of different classes) shown in the feature maps; default one per class.
    input_shape : tuple, optional
        ``(C, H, W)`` of an image, or ``(F,)`` for a table (then only the losses, the confusion
        matrix and the weight histograms are drawn); default Fashion-MNIST's.
    tta_flip : bool
        Used when ``probs`` is None: predict as the run evaluated.

    Returns
    -------
    list of Path
        ``losses.png``, ``confusion_matrix.png``, ``calibration.png``, ``misclassified.png``,
        ``first_layer.png``, ``feature_maps.png`` (conv models only),
        ``activation_max.png``, ``weight_histograms.png``.
    """
    fig_dir = Path(fig_dir)
    labels = _numpy(test_labels).astype(np.int64).ravel()
    if input_shape is not None and len(input_shape) == 1:  # table rows: no pictures to draw
        if probs is None:
            probs = Predictor(model, to_input).probs(torch.as_tensor(test_images))
        probs = _numpy(probs)
        return [accuracy_curves(history or [], fig_dir / "losses.png"),
                confusion_matrices(labels, probs.argmax(1), class_names, fig_dir / "confusion_matrix.png"),
                reliability_diagram(labels, probs, fig_dir / "calibration.png"),
                weight_histograms(model, fig_dir / "weight_histograms.png")]
    images = _uint8_images(test_images)
    if probs is None:
        probs = predict_probs(model, to_input, images, tta_flip=tta_flip)
    probs = _numpy(probs)
    out = [accuracy_curves(history or [], fig_dir / "losses.png"),
           confusion_matrices(labels, probs.argmax(1), class_names, fig_dir / "confusion_matrix.png"),
           reliability_diagram(labels, probs, fig_dir / "calibration.png"),
           misclassified_gallery(images, labels, probs, class_names, fig_dir / "misclassified.png"),
           first_layer_filters(model, fig_dir / "first_layer.png", input_shape=input_shape)]
    if _conv_layers(model):
        chosen = _one_per_class(labels, len(class_names) if n_feature_images is None else n_feature_images)
        out.append(feature_maps(model, to_input, images[chosen], fig_dir / "feature_maps.png",
                                n_images=len(chosen), titles=[class_names[labels[i]] for i in chosen]))
    out.append(activation_maximisation(model, to_input, fig_dir / "activation_max.png", steps=steps,
                                       class_names=class_names, input_shape=input_shape))
    out.append(weight_histograms(model, fig_dir / "weight_histograms.png"))
    return out
