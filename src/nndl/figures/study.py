"""Figures of a tuning study, drawn in nndl's own style from the trials of an Optuna study.

Four PNGs, each labelled with the real metric (``val MSE (5-fold mean)``, not
"Objective Value"): the search history with the best value so far, parameter
importances (with a caution when few trials back them), one slice per
parameter, and parallel coordinates. Log-scaled parameters get plain tick
labels (``0.001``, ``1e-7``), categorical ones evenly spaced labels that do not
overlap.

The drawing functions take plain records (:class:`TrialRecord`, :class:`ParamSpec`),
so they work on any list of trials; :func:`write_study_figures` reads them from an
Optuna study. Matplotlib is imported only when a figure is drawn, so importing
:func:`metric_label` stays cheap.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["TrialRecord", "ParamSpec", "metric_label", "history_figure", "importances_figure", "slices_figure",
           "parallel_coordinate_figure", "write_study_figures", "FEW_TRIALS"]

FEW_TRIALS = 20  # fewer completed trials than this: importances are a rough hint at best
_METRIC_NAMES = {"val_mse": "val MSE", "val_accuracy": "val accuracy", "val_loss": "val loss",
                 "test_mse": "test MSE", "test_accuracy": "test accuracy"}
_BLUE, _RED, _GREY = "#4c72b0", "#c44e52", "#8c8c8c"


@dataclass
class TrialRecord:
    """One trial: its number, state (``COMPLETE``, ``FAIL``, ``PRUNED``, ...), value and parameters."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETE" and self.value is not None and math.isfinite(self.value)


@dataclass
class ParamSpec:
    """How a parameter was searched: ``kind`` is ``float``, ``int`` or ``categorical``."""

    name: str
    kind: str
    log: bool = False
    choices: list[Any] = field(default_factory=list)


def metric_label(metric: str | None, folds: Any = None) -> str:
    """The metric as a reader says it: ``val_mse`` with 5 folds is ``val MSE (5-fold mean)``."""
    name = _METRIC_NAMES.get(str(metric), str(metric or "objective").replace("_", " "))
    return f"{name} ({folds}-fold mean)" if isinstance(folds, int) and folds > 1 else name


def _choice_text(v: Any, width: int = 14) -> str:
    text = str(v)
    return text if len(text) <= width else text[: width - 1] + "…"


def _best(trials: Sequence[TrialRecord], direction: str) -> TrialRecord | None:
    ok = [t for t in trials if t.ok]
    if not ok:
        return None
    return (max if direction.startswith("max") else min)(ok, key=lambda t: t.value)


def _value_scale(ax, values: Sequence[float], axis: str = "y") -> bool:
    """Log scale with plain tick labels when the values are positive and span more than 20x."""
    from nndl.figures.curves import readable_log_axis

    if values and min(values) > 0 and max(values) / min(values) > 20:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        readable_log_axis(ax, axis, values)
        return True
    return False


# ----------------------------------------------------------------------------- history
def history_figure(trials: Sequence[TrialRecord], label: str, direction: str = "minimize"):
    """Every completed trial's value in the order the trials ran, the best so far as a step line, and the
    trials that did not complete marked along the bottom. Returns the matplotlib Figure."""
    import matplotlib.ticker as mticker

    from nndl.figures.common import plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ok = sorted((t for t in trials if t.ok), key=lambda t: t.number)
    if ok:
        xs, ys = [t.number for t in ok], [t.value for t in ok]
        ax.scatter(xs, ys, s=22, color=_BLUE, zorder=3, label=f"completed trial ({len(ok)})")
        pick = max if direction.startswith("max") else min
        best_so_far = [pick(ys[: i + 1]) for i in range(len(ys))]
        ax.step(xs, best_so_far, where="post", color=_RED, lw=1.6, label="best so far")
        _value_scale(ax, ys)
        best = _best(ok, direction)
        right = best.number > (xs[0] + xs[-1]) / 2  # keep the label inside the axes
        ax.annotate(f"best {best.value:.4g} (trial #{best.number})", (best.number, best.value),
                    textcoords="offset points", xytext=(-6 if right else 6, 8), ha="right" if right else "left",
                    fontsize=8, color=_RED)
    others = [t for t in trials if not t.ok]
    if others:
        ax.scatter([t.number for t in others], [0.02] * len(others), marker="x", color=_GREY, s=28, zorder=3,
                   transform=ax.get_xaxis_transform(), clip_on=False,
                   label=f"did not complete ({len(others)}: " + ", ".join(sorted({t.state.lower() for t in others}))
                   + ")")
    ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    better = "lower" if not direction.startswith("max") else "higher"
    ax.set(xlabel="trial number", ylabel=label, title=f"Search history: {label} per trial ({better} is better)")
    if ax.collections or ax.lines:
        ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------- importances
def importances_figure(importances: dict[str, float], label: str, n_complete: int,
                       method: str = "fANOVA"):
    """Horizontal bars of each parameter's share of the explained variation in the metric, largest on top,
    with a caution in the plot when fewer than :data:`FEW_TRIALS` completed trials back them."""
    import matplotlib.ticker as mticker

    from nndl.figures.common import plt

    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.45 * max(len(items), 2)))
    names = [k for k, _ in items]
    vals = [float(v) for _, v in items]
    ax.barh(range(len(items)), vals, color=_BLUE, height=0.6)
    ax.set_yticks(range(len(items)), names)
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.0%}", va="center", fontsize=8)
    ax.set_xlim(0, max(vals + [0.01]) * 1.18)
    ax.xaxis.set_major_formatter(mticker.PercentFormatter(1.0))
    ax.grid(axis="y", visible=False)
    ax.set(xlabel=f"share of the variation in {label} explained ({method})",
           title=f"Parameter importance, from {n_complete} completed trials")
    if n_complete < FEW_TRIALS:
        ax.text(0.98, 0.04, f"Caution: only {n_complete} completed trials (fewer than ~{FEW_TRIALS});\n"
                "these importances are a rough hint, not a ranking.", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=8, color="#7a4b00",
                bbox=dict(boxstyle="round,pad=0.35", fc="#fff8c5", ec="#d4a72c"))
    return fig


# ----------------------------------------------------------------------------- slices
def _categorical_ticks(ax, choices: Sequence[Any], panel_points: float = 170.0) -> None:
    """Evenly spaced category labels on the x axis, turned upright when the widest would not fit in its slot.

    ``panel_points`` is the axis width in points (a slice panel is about 3.3 inches
    less margins); a tick label is about 0.6 em wide per character.
    """
    labels = [_choice_text(c) for c in choices]
    size = _font_size() * 0.9
    slot = panel_points / max(len(labels), 1)
    upright = max((len(s) for s in labels), default=0) * 0.6 * size > 0.9 * slot
    ax.set_xticks(range(len(labels)), labels, rotation=90 if upright else 0, fontsize=size)
    ax.set_xlim(-0.6, len(labels) - 0.4)


def _font_size() -> float:
    from nndl.figures.common import plt

    return float(plt.rcParams["font.size"])


def slices_figure(trials: Sequence[TrialRecord], params: Sequence[ParamSpec], label: str,
                  direction: str = "minimize"):
    """The metric against each parameter, one panel each (shared metric axis); colour is the trial number
    and the best trial is a red star."""
    import numpy as np

    from nndl.figures.common import plt
    from nndl.figures.curves import readable_log_axis

    ok = [t for t in trials if t.ok]
    cols = min(4, max(len(params), 1))
    rows = math.ceil(max(len(params), 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols + 1.2, 3.1 * rows + 0.5), squeeze=False, sharey=True,
                             layout="constrained")
    values = [t.value for t in ok]
    numbers = [t.number for t in ok]
    best = _best(ok, direction)
    rng = np.random.default_rng(0)  # a little horizontal jitter separates points on one category
    scatter = None
    for ax, spec in zip(axes.flat, params):
        have = [t for t in ok if spec.name in t.params]
        ys = [t.value for t in have]
        if spec.kind == "categorical":
            index = {str(c): i for i, c in enumerate(spec.choices)}
            xs = [index.get(str(t.params[spec.name]), -1) + rng.uniform(-0.12, 0.12) for t in have]
            _categorical_ticks(ax, spec.choices)
        else:
            xs = [float(t.params[spec.name]) for t in have]
            if spec.log:
                ax.set_xscale("log")
                readable_log_axis(ax, "x", xs)
        scatter = ax.scatter(xs, ys, c=[t.number for t in have], cmap="viridis", s=24, vmin=min(numbers, default=0),
                             vmax=max(numbers, default=1), edgecolors="white", linewidths=0.4, zorder=3)
        if best is not None and spec.name in best.params:
            bx = (index.get(str(best.params[spec.name]), -1) if spec.kind == "categorical"
                  else float(best.params[spec.name]))
            ax.plot([bx], [best.value], "*", color=_RED, ms=13, zorder=4, markeredgecolor="white")
        ax.set_xlabel(spec.name + (" (log scale)" if spec.log else ""))
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(label)
    _value_scale(axes[0, 0], values)
    if scatter is not None:
        fig.colorbar(scatter, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label="trial number")
    fig.suptitle(f"{label} against each parameter ({len(ok)} completed trials; red star: best)")
    return fig


# ----------------------------------------------------------------------------- parallel coordinates
def _axis_position(spec: ParamSpec, values: list[Any]) -> tuple[list[float], list[tuple[float, str]]]:
    """Each value's height in [0, 1] on the parameter's axis, and (height, label) ticks for that axis."""
    from nndl.figures.curves import tick_text

    if spec.kind == "categorical":
        k = len(spec.choices)
        index = {str(c): i for i, c in enumerate(spec.choices)}
        pos = (lambda i: 0.5) if k == 1 else (lambda i: i / (k - 1))
        return ([pos(index.get(str(v), 0)) for v in values],
                [(pos(i), _choice_text(c)) for i, c in enumerate(spec.choices)])
    nums = [float(v) for v in values]
    f = (lambda v: math.log10(v)) if spec.log and min(nums) > 0 else (lambda v: v)
    lo, hi = f(min(nums)), f(max(nums))
    span = hi - lo or 1.0
    heights = [(f(v) - lo) / span for v in nums]
    if spec.log and min(nums) > 0:
        decades = range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)
        sci = min(nums) < 1e-4 or max(nums) >= 1e5 or None  # one style on the whole axis
        ticks = [((d - lo) / span, tick_text(10.0 ** d, sci)) for d in decades]
        if len(ticks) < 2:  # less than a decade: the ends instead
            ticks = [(0.0, tick_text(float(f"{min(nums):.2g}"))), (1.0, tick_text(float(f"{max(nums):.2g}")))]
    else:
        ends = (min(nums), (min(nums) + max(nums)) / 2, max(nums))
        ticks = [(h, tick_text(float(f"{v:.3g}"))) for h, v in zip((0.0, 0.5, 1.0), ends)]
    return heights, ticks


def parallel_coordinate_figure(trials: Sequence[TrialRecord], params: Sequence[ParamSpec], label: str,
                               direction: str = "minimize"):
    """One line per completed trial through its parameter values and, on the last axis, its metric; colour
    is the metric (dark = better) and the best trial is drawn in red on top."""
    import matplotlib as mpl

    from nndl.figures.common import plt

    ok = [t for t in trials if t.ok and all(p.name in t.params for p in params)]
    specs = list(params) + [ParamSpec(label, "float", log=False)]
    columns = [[t.params[p.name] for t in ok] for p in params] + [[t.value for t in ok]]
    positions, ticks = zip(*[_axis_position(s, c) for s, c in zip(specs, columns)]) if ok else ((), ())
    fig, ax = plt.subplots(figsize=(max(7.0, 2.0 * len(specs)), 4.6))
    values = [t.value for t in ok]
    if ok:
        lo, hi = min(values), max(values)
        norm = mpl.colors.Normalize(lo, hi if hi > lo else lo + 1)
        cmap = mpl.colormaps["viridis_r" if direction.startswith("max") else "viridis"]  # better = darker
        order = sorted(range(len(ok)), key=lambda i: values[i], reverse=not direction.startswith("max"))
        best = order[-1]
        for i in order:  # worst first, so the better lines lie on top
            ys = [positions[a][i] for a in range(len(specs))]
            ax.plot(range(len(specs)), ys, color=_RED if i == best else cmap(norm(values[i])),
                    lw=2.4 if i == best else 1.1, alpha=1.0 if i == best else 0.75, zorder=3 if i == best else 2)
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, pad=0.02, label=label)
    for a, spec in enumerate(specs):
        ax.axvline(a, color="0.3", lw=0.8, zorder=1)
        for h, text in (ticks[a] if ok else []):
            ax.text(a - 0.04, h, text, ha="right", va="center", fontsize=7, zorder=4,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85))
    ax.set_xticks(range(len(specs)), [s.name + (" (log)" if s.log else "") for s in specs])
    ax.set_xlim(-0.5, len(specs) - 0.8)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    ax.grid(False)
    ax.spines["left"].set_visible(False)
    ax.set_title(f"Parallel coordinates: {len(ok)} completed trials (best in red)")
    return fig


# ----------------------------------------------------------------------------- from an Optuna study
def _records(study) -> tuple[list[TrialRecord], list[ParamSpec]]:
    """Trial records and parameter specs (in first-seen order) from an Optuna study."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    trials, specs = [], {}
    for t in study.get_trials(deepcopy=False):
        value = t.value if t.values is not None and len(t.values) == 1 else None
        trials.append(TrialRecord(t.number, t.state.name, value, dict(t.params)))
        for name, dist in t.distributions.items():
            if name in specs:
                continue
            if isinstance(dist, CategoricalDistribution):
                specs[name] = ParamSpec(name, "categorical", choices=list(dist.choices))
            elif isinstance(dist, (FloatDistribution, IntDistribution)):
                specs[name] = ParamSpec(name, "int" if isinstance(dist, IntDistribution) else "float", log=dist.log)
    return trials, list(specs.values())


def write_study_figures(*args, **kwargs) -> dict[str, str]:
    """Write ``history.png``, ``importances.png``, ``slices.png`` and ``parallel_coordinate.png``
    in nndl's style (see :func:`_write_study_figures` for the parameters)."""
    from nndl.figures.curves import styled

    return styled(_write_study_figures)(*args, **kwargs)


def _write_study_figures(study, folder: str | Path, n_complete: int | None = None, n_params: int | None = None,
                        *, metric: str | None = None, folds: int | None = None,
                        direction: str | None = None) -> dict[str, str]:
    """Write ``history.png``, ``importances.png``, ``slices.png`` and ``parallel_coordinate.png``.

    Parameters
    ----------
    study : optuna.Study
    folder : str or Path
        The study's ``figures/`` folder (created).
    n_complete, n_params : int, optional
        Completed trials and searched parameters (counted from the study when not given).
    metric, folds : str, int, optional
        The objective's name (``val_mse``) and the K of its K-fold mean, for the axis labels.
    direction : str, optional
        ``minimize`` or ``maximize`` (default: the study's).

    Returns
    -------
    dict
        ``{figure: why it was skipped}`` for the figures not written (too few trials
        or parameters, or an importance evaluator that failed).
    """
    from nndl.figures.common import plt, save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trials, specs = _records(study)
    n_complete = sum(t.ok for t in trials) if n_complete is None else n_complete
    n_params = len(specs) if n_params is None else n_params
    direction = direction or study.direction.name.lower()
    label = metric_label(metric, folds)
    notes: dict[str, str] = {}
    draw = {"history": lambda: history_figure(trials, label, direction),
            "importances": lambda: importances_figure(_importances(study), label, n_complete),
            "slices": lambda: slices_figure(trials, specs, label, direction),
            "parallel_coordinate": lambda: parallel_coordinate_figure(trials, specs, label, direction)}
    for name, make in draw.items():
        need = 1 if name == "history" else 2
        if n_complete < need:
            notes[name] = f"skipped: {n_complete} completed trial(s), the plot needs {need}"
            continue
        if name in ("importances", "parallel_coordinate") and n_params < 2:
            notes[name] = "skipped: needs at least 2 searched parameters"
            continue
        try:
            save(make(), folder / f"{name}.png")
        except Exception as e:  # e.g. importances of parameters that never varied: the other figures still come
            notes[name] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            plt.close("all")
    return notes


def _importances(study) -> dict[str, float]:
    """Optuna's default importance evaluator (fANOVA) with a fixed seed, its warnings kept off the user's screen.

    Unseeded, fANOVA's random forest draws from the process's global RNG: the same study would draw
    a different figure depending on what ran before it."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
