"""Plot helpers shared by every task: saving, readable axes, loss curves, weight histograms."""
from __future__ import annotations

import functools
import io
import math
from pathlib import Path
from typing import Iterable

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from nndl.base.fileio import atomic_write_bytes  # noqa: E402

NNDL_STYLE = {"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
              "axes.spines.right": False, "font.size": 9}
plt.rcParams.update(NNDL_STYLE)


def styled(func):
    """Draw ``func``'s figure in nndl's style whatever the process-wide matplotlib style is now.

    Other libraries change the global style as a side effect (each of Optuna's
    matplotlib plots calls ``plt.style.use("ggplot")``), which would turn every
    later nndl figure grey; the style is restored when ``func`` returns.
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with plt.style.context(["default", NNDL_STYLE]):
            return func(*args, **kwargs)

    return wrapper


def save(fig, path: str | Path, tight: bool = True) -> Path:
    """Save ``fig`` as PNG (parents created) and close it; ``tight=False`` keeps margins set by hand."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight and fig.get_layout_engine() is None:  # a figure made with layout="constrained" lays itself out
        fig.tight_layout()
    buffer = io.BytesIO()  # drawn in memory, written atomically: a full disk leaves no half PNG
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def tick_text(value: float, sci: bool | None = None) -> str:
    """A tick label in plain decimals (``0.6``, ``3``, ``0.0001``), or short E notation (``1e-7``) when
    decimals would be unreadable; never matplotlib's ``6×10⁻¹``. ``sci`` forces one style (an axis
    that reaches 1e-7 labels all its ticks ``1e-k`` rather than mixing ``1e-5`` and ``0.001``)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if not sci and (sci is False or 1e-4 <= abs(value) < 1e5):
        return f"{value:.6g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def readable_log_axis(ax, axis: str = "y", values: Iterable[float] | None = None) -> None:
    """Label a log axis in plain numbers: decades always, and 2 and 5 (or every integer multiple) of each
    decade when the data span few decades, so a loss from 2.2 to 30 reads ``2 3 5 10 20 30``."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = (ax.get_ylim() if axis == "y" else ax.get_xlim())
    if values is not None:
        vals = [v for v in values if v > 0 and math.isfinite(v)]
        if vals:
            lo, hi = min(vals), max(vals)
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    sci = lo > 0 and (lo < 1e-4 or hi >= 1e5)
    formatter = mticker.FuncFormatter(lambda v, _pos: tick_text(v, sci or None))
    target.set_major_locator(mticker.LogLocator(base=10))
    target.set_major_formatter(formatter)
    if decades <= 0.7:
        subs: tuple[float, ...] | None = tuple(range(2, 10))
    elif decades <= 2.2:
        subs = (2.0, 3.0, 5.0) if decades <= 1.3 else (2.0, 5.0)
    else:
        subs = None
    if subs is None:
        target.set_minor_formatter(mticker.NullFormatter())
    else:
        target.set_minor_locator(mticker.LogLocator(base=10, subs=subs))
        target.set_minor_formatter(formatter)
    target.set_tick_params(which="minor", labelsize=plt.rcParams["font.size"] * 0.85)


def epoch_axis(ax, epochs: Iterable[float]) -> None:
    """Whole epochs on the x axis: every epoch when there are few (a 1-epoch run shows ``1``, not 0.96..1.04)."""
    epochs = sorted({float(e) for e in epochs})
    if not epochs:
        return
    if len(epochs) <= 12 and all(e.is_integer() for e in epochs):
        ax.set_xticks(epochs, [str(int(e)) for e in epochs])
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
    else:
        ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))


@styled
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
    values = [r[k] for h in histories for r in h for k in keys if _is_number(r.get(k))]
    if log and values and min(values) > 0:
        ax.set_yscale("log")
        readable_log_axis(ax, "y", values)
    epoch_axis(ax, [r["epoch"] for h in histories for r in h if _is_number(r.get("epoch"))])
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.legend(fontsize=7, ncol=2 if len(histories) > 2 else 1)
    return save(fig, path)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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
