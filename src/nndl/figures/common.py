"""Plot helpers shared by every task: saving, loss curves, weight histograms (style and axes: ``curves``)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from nndl.base.fileio import atomic_write_bytes  # noqa: E402
from nndl.figures.curves import NNDL_STYLE, draw_loss_curves, styled  # noqa: E402  (the pyplot-free part)

plt.rcParams.update(NNDL_STYLE)


def save(fig, path: str | Path, tight: bool = True) -> Path:
    """Save ``fig`` as PNG (parents created) and close it; ``tight=False`` keeps margins set by hand."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # drawn in memory, written atomically: a full disk leaves no half PNG
    return atomic_write_bytes(path, image_bytes(fig, tight, path.suffix.lstrip(".") or "png"))


def image_bytes(fig, tight: bool = True, fmt: str = "png") -> bytes:
    """``fig`` drawn as an image file's bytes (PNG by default), then closed; ``tight`` as in :func:`save`."""
    if tight and fig.get_layout_engine() is None:  # a figure made with layout="constrained" lays itself out
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    plt.close(fig)
    return buffer.getvalue()


@styled
def loss_curves(histories: list[list[dict]], path: str | Path, title: str, labels: list[str] | None = None,
                keys: tuple[str, ...] = ("train_loss", "val_loss"), ylabel: str = "loss", log: bool = True) -> Path:
    """One line per history and key (train solid, validation dashed), over epochs."""
    fig = plt.figure(figsize=(7, 4))
    draw_loss_curves(fig, histories, title, labels, keys, ylabel, log)
    return save(fig, path)


@styled
def weight_histograms(model: nn.Module, path: str | Path, title: str = "Weight histograms per layer") -> Path:
    """A histogram of every weight matrix / kernel (biases and norm scales left out), one panel each."""
    weights = [(name, p.detach().float().cpu().numpy().ravel()) for name, p in model.named_parameters() if p.dim() > 1]
    cols = min(4, len(weights))
    rows = int(np.ceil(len(weights) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, w) in zip(axes.flat, weights):
        ax.hist(w, bins=60, color="#4c72b0", alpha=0.85)
        ax.set_title(f"{name}\n{w.size} weights, mean {w.mean():.3f}, std {w.std():.3f}", fontsize=8)
        ax.set_xlabel("weight value")
        ax.set_ylabel("count")
    for ax in list(axes.flat)[len(weights):]:
        ax.axis("off")
    fig.suptitle(title)
    return save(fig, path)
