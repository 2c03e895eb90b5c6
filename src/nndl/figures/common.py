"""Plot helpers shared by every task: saving, loss curves, weight histograms."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                     "axes.spines.right": False, "font.size": 9})


def save(fig, path: str | Path) -> Path:
    """Save ``fig`` as PNG (parents created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def loss_curves(histories: list[list[dict]], path: str | Path, title: str, labels: list[str] | None = None,
                keys: tuple[str, ...] = ("train_loss", "val_loss"), ylabel: str = "loss", log: bool = True) -> Path:
    """One line per history and key (train solid, validation dashed), over epochs."""
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, history in enumerate(histories):
        label = labels[i] if labels else ""
        for key, style in zip(keys, ("-", "--", ":")):
            epochs = [r["epoch"] for r in history if key in r]
            values = [r[key] for r in history if key in r]
            if values:
                ax.plot(epochs, values, style, color=colors[i % len(colors)], lw=1.2,
                        label=f"{label} {key.replace('_', ' ')}".strip())
    if log and all(r.get(k, 1) > 0 for h in histories for r in h for k in keys):
        ax.set_yscale("log")
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.legend(fontsize=7, ncol=2 if len(histories) > 2 else 1)
    return save(fig, path)


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
