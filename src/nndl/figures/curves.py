"""nndl's figure style, readable axes and the one curve drawer, without pyplot.

Every loss or accuracy curve nndl draws goes through :func:`draw_curves`: a run's ``losses.png``
(:func:`nndl.figures.common.loss_curves`, :func:`nndl.figures.classification.accuracy_curves`),
``Run.figure("losses")`` and the curves of ``nndl compare``. Nothing here imports
``matplotlib.pyplot``, so a notebook's ``Run.figure`` draws in a kernel that never loaded it
(pyplot would pick a backend and register its own display hooks).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import matplotlib
import matplotlib.style
import matplotlib.ticker as mticker

from nndl.base.best_epoch import best_epoch

NNDL_STYLE = {"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
              "axes.spines.right": False, "font.size": 9}


def styled(func):
    """Draw ``func``'s figure in nndl's style whatever the process-wide matplotlib style is now.

    Other libraries change the global style as a side effect (each of Optuna's
    matplotlib plots calls ``plt.style.use("ggplot")``), which would turn every
    later nndl figure grey; the style is restored when ``func`` returns.
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.style.context(["default", NNDL_STYLE]):
            return func(*args, **kwargs)

    return wrapper


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
    target.set_tick_params(which="minor", labelsize=matplotlib.rcParams["font.size"] * 0.85)


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


CURVE_STYLES = ("-", "--", ":")  # the first key of a panel solid (train), the second dashed (validation), ...


@dataclass(frozen=True)
class Panel:
    """One axes of a curves figure: the history keys it draws and how its y axis reads.

    ``log`` says when the y axis is logarithmic: ``"positive"`` when every value is > 0,
    ``"spread"`` when they are also more than a factor 20 apart (a loss that hardly moves reads
    better on a linear axis), None never.
    """

    keys: tuple[str, ...]
    ylabel: str
    title: str = ""
    log: str | None = "positive"


def draw_curves(fig, series: Sequence[tuple[str, Sequence[dict]]], panels: Sequence[Panel], *,
                label: Callable[[str, str], str], key_colors: Sequence[str] | None = None, lw: float = 1.2,
                markers_below: int = 0, legend: dict | None = None, no_data: str | None = None) -> list:
    """The one loss-curve drawer: histories as lines over epochs, one axes of ``fig`` per panel.

    Every loss or accuracy curve nndl draws (a run's ``losses.png``, ``Run.figure("losses")``,
    the curves of ``nndl compare``) goes through here; the callers choose panels and options.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        An empty figure; its axes are made here, side by side.
    series : list of (name, rows)
        One history per run or fold: ``rows`` are dicts with ``epoch`` and the panels' keys.
        A key that is missing, None or empty is skipped; NaN is drawn as a gap.
    panels : list of Panel
    label : callable
        ``label(name, key)``: the legend entry of a series' line for ``key``.
    key_colors : list of str, optional
        A colour per key of a panel (one series); by default a colour per series from the style's cycle.
    lw : float
        Line width.
    markers_below : int
        Lines of fewer points than this get a dot at each epoch.
    legend : dict, optional
        Keyword arguments of ``Axes.legend``.
    no_data : str, optional
        Written in a panel with no line instead of its legend (None: the legend anyway).

    Returns
    -------
    list of matplotlib.axes.Axes
        One per panel.
    """
    axes = list(fig.subplots(1, len(panels), squeeze=False)[0])
    colors = list(key_colors or matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])
    epochs = [r["epoch"] for _, rows in series for r in rows if _is_number(r.get("epoch"))]
    for ax, panel in zip(axes, panels):
        for i, (name, rows) in enumerate(series):
            for k, (key, style) in enumerate(zip(panel.keys, CURVE_STYLES)):
                points = [(r["epoch"], r[key]) for r in rows if _is_value(r.get(key))]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, style, color=colors[(k if key_colors else i) % len(colors)], lw=lw,
                            marker="o" if len(points) < markers_below else None, ms=3, label=label(name, key))
        _curve_scale(ax, panel, [r[k] for _, rows in series for r in rows for k in panel.keys
                                 if _is_number(r.get(k))])
        epoch_axis(ax, epochs)
        ax.set(title=panel.title, xlabel="epoch", ylabel=panel.ylabel)
        if ax.lines or no_data is None:
            ax.legend(**(legend or {}))
        else:
            ax.text(0.5, 0.5, no_data, ha="center", va="center", transform=ax.transAxes)
    return axes


def _curve_scale(ax, panel: Panel, values: list[float]) -> None:
    """A log y axis where the panel asks for one and the (finite) values allow it."""
    if not panel.log or not values or min(values) <= 0:
        return
    if panel.log == "spread" and max(values) / min(values) <= 20:
        return
    ax.set_yscale("log")
    readable_log_axis(ax, "y", values)


def draw_loss_curves(fig, histories: Sequence[Sequence[dict]], title: str, labels: Sequence[str] | None = None,
                     keys: tuple[str, ...] = ("train_loss", "val_loss"), ylabel: str = "loss", log: bool = True) -> list:
    """:func:`loss_curves` drawn on ``fig`` (a notebook figure, say) instead of saved; returns its axes."""
    series = list(zip(labels or [""] * len(histories), histories))
    return draw_curves(fig, series, [Panel(tuple(keys), ylabel, title, "positive" if log else None)],
                       label=lambda name, key: f"{name} {key.replace('_', ' ')}".strip(),
                       legend={"fontsize": 7, "ncol": 2 if len(histories) > 2 else 1})


ACCURACY_PANELS = (Panel(("train_loss", "val_loss"), "cross-entropy loss", "Loss", log="spread"),
                   Panel(("train_acc", "val_acc"), "accuracy", "Accuracy", log=None))


def draw_accuracy_curves(fig, history: Sequence[dict], title: str = "Training curves") -> list:
    """:func:`accuracy_curves` drawn on ``fig`` (a notebook figure, say) instead of saved; returns its two axes."""
    history = list(history or [])
    a_loss, a_acc = draw_curves(fig, [("", history)], ACCURACY_PANELS,
                                label=lambda _name, key: key.replace("_", " ").replace("acc", "accuracy"),
                                key_colors=("#4c72b0", "#dd8452"), lw=1.5, markers_below=30,
                                legend={"fontsize": 8}, no_data="no data")
    best = best_epoch(history, "val_acc", higher=True)  # the epoch metrics.json names (ties: the first)
    if best:
        ep, acc = best
        a_acc.plot([ep], [acc], "*", color="#c44e52", ms=11, zorder=3)
        epochs = [r["epoch"] for r in history]
        right = ep > (min(epochs) + max(epochs)) / 2
        a_acc.annotate(f"best val {acc:.2%} (epoch {ep:g})", (ep, acc), textcoords="offset points",
                       xytext=(-8 if right else 8, -16), ha="right" if right else "left", fontsize=8,
                       color="#c44e52", bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))
    a_acc.yaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    fig.suptitle(title)
    return [a_loss, a_acc]


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_value(v) -> bool:
    """A point to draw: any number, NaN included (a gap where training diverged); not None or an empty cell."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)
