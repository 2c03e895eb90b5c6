"""Figures of a regression run: the fitted function with fold spread, and hidden-unit activation profiles."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from nndl.figures.common import plt, save, styled


def find_gaps(x: np.ndarray, factor: float = 6.0) -> list[tuple[float, float]]:
    """Intervals between neighbouring training inputs much wider than the typical spacing."""
    xs = np.sort(np.asarray(x, dtype=float))
    if len(xs) < 3:
        return []
    spacing = np.diff(xs)
    threshold = max(factor * np.median(spacing), 0.05 * (xs[-1] - xs[0]))
    return [(xs[i], xs[i + 1]) for i in np.flatnonzero(spacing > threshold)]


@torch.no_grad()
def _predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    return model(torch.as_tensor(x, dtype=torch.float32, device=device)).reshape(-1).cpu().numpy()


def curve_inputs(x_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Where :func:`fitted_function` evaluates the models: a 400-point grid over the training and test
    inputs (padded 5%) for one input column, else the test rows (the training rows without a test set)."""
    if x_train.shape[1] != 1:
        return x_test if len(x_test) else x_train
    lo = min(x_train.min(), x_test.min() if len(x_test) else x_train.min())
    hi = max(x_train.max(), x_test.max() if len(x_test) else x_train.max())
    pad = 0.05 * (hi - lo)
    return np.linspace(lo - pad, hi + pad, 400, dtype=np.float32)[:, None]


def _method_note(interval: dict) -> str:
    """The legend's note on how the band was made (nothing for the default)."""
    return " (conformal CV+)" if interval.get("method") == "cv_plus" else ""


def fitted_function(final_model: nn.Module, fold_models: list[nn.Module], x_train, y_train, x_test, y_test,
                    path: str | Path, x_name: str = "x", y_name: str = "y", interval: dict | None = None,
                    members_label: str = "fold models", reference: dict | None = None) -> Path:
    """The final model's curve over the training and test points with its prediction interval as a band
    and the gaps in the training inputs shaded (1-D inputs); predicted-vs-true for several inputs.

    ``interval`` is a run's interval dict (:func:`nndl.nn.intervals.interval_info`); the band is
    then the interval for a new observation (members' spread plus noise), and the fold models'
    range is drawn faintly inside it. Without it the band is the fold models' range.
    ``members_label`` names the models in ``fold_models`` in the legend (e.g. "ensemble members").
    ``reference`` holds a reference model's arrays at :func:`curve_inputs` (``x``, ``mean``,
    ``lower``, ``upper``) and its legend ``label``: its mean is drawn dashed with its band in outline
    beside the net's (as crosses with their interval for several inputs).
    """
    from nndl.nn.intervals import bounds, member_predictions

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if x_train.shape[1] == 1:
        grid = curve_inputs(x_train, x_test)
        folds = member_predictions(fold_models, grid)
        center = _predict(final_model, grid)
        for i, (a, b) in enumerate(find_gaps(x_train[:, 0])):
            ax.axvspan(a, b, color="0.9", zorder=0, label="gap in training data" if i == 0 else None)
        if interval is not None:
            lower, upper = bounds(center, folds, interval)
            ax.fill_between(grid[:, 0], lower, upper, color="#4c72b0", alpha=0.18,
                            label=f"{interval.get('level', 0.9):.0%} prediction interval{_method_note(interval)}")
        ax.fill_between(grid[:, 0], folds.min(0), folds.max(0), color="#4c72b0",
                        alpha=0.25 if interval is None else 0.3,
                        label=f"range of {len(fold_models)} {members_label}")
        ax.plot(grid[:, 0], center, color="#4c72b0", lw=2, label="final model")
        if reference is not None:
            _reference_band(ax, reference)
        ax.scatter(x_train[:, 0], y_train, s=14, color="0.25", label="training points", zorder=3)
        if len(x_test):
            ax.scatter(x_test[:, 0], y_test, s=14, marker="x", color="#dd8452", label="test points", zorder=3)
        title = "Fitted function, prediction interval and training gaps" if interval is not None else \
            "Fitted function, fold spread and training gaps"
        ax.set(xlabel=x_name, ylabel=y_name, title=title)
    else:
        x_eval, y_eval, which = (x_test, y_test, "test") if len(x_test) else (x_train, y_train, "train")
        pred = _predict(final_model, x_eval)
        if interval is not None:
            lower, upper = bounds(pred, member_predictions(fold_models, x_eval), interval)
            # a CV+ interval need not hold the final model's prediction: clip the bars at it
            ax.errorbar(y_eval, pred, yerr=[np.maximum(pred - lower, 0), np.maximum(upper - pred, 0)], fmt="none",
                        ecolor="#4c72b0", alpha=0.3, lw=1,
                        label=f"{interval.get('level', 0.9):.0%} prediction interval{_method_note(interval)}")
        ax.scatter(y_eval, pred, s=14, color="#4c72b0", label="net")
        if reference is not None:
            ref_err = [reference["mean"] - reference["lower"], reference["upper"] - reference["mean"]]
            ax.errorbar(y_eval, reference["mean"], yerr=ref_err, fmt="x", color="#55a868", ecolor="#55a868",
                        alpha=0.6, ms=4, lw=0.8, label=f"{reference['label']} (90% interval)")
        shown = np.concatenate([pred, reference["mean"]]) if reference is not None else pred
        lims = [min(y_eval.min(), shown.min()), max(y_eval.max(), shown.max())]
        ax.plot(lims, lims, "k--", lw=1, label="perfect prediction")
        ax.set(xlabel=f"true {y_name}", ylabel=f"predicted {y_name}", title=f"Predicted vs true ({which} set)")
    ax.legend(fontsize=8)
    return save(fig, path)


def _reference_band(ax, reference: dict) -> None:
    """A reference model's mean (dashed) and its prediction interval (dotted edges) on a 1-D fit plot:
    outlines, so the net's filled band stays readable beneath."""
    x = np.asarray(reference["x"])[:, 0]
    ax.plot(x, reference["mean"], color="#55a868", lw=1.6, ls="--", label=f"{reference['label']} mean")
    ax.plot(x, reference["lower"], color="#55a868", lw=1, ls=":", label=f"{reference['label']} 90% interval")
    ax.plot(x, reference["upper"], color="#55a868", lw=1, ls=":")


def probe_labels(probe_inputs: np.ndarray, x_names: list[str] | None = None, max_inputs: int = 3) -> list[str]:
    """A row label per probe input that shows its values: ``x = 0.1``, or ``a=0.1, b=2`` for several inputs."""
    probe_inputs = np.asarray(probe_inputs)
    if probe_inputs.ndim == 1:
        probe_inputs = probe_inputs[:, None]
    d = probe_inputs.shape[1]
    names = list(x_names or [])
    names = names + [f"x{i}" for i in range(len(names), d)]
    if d == 1:
        return [f"{names[0] if x_names else 'x'} = {v:.3g}" for v in probe_inputs[:, 0]]
    labels = []
    for row in probe_inputs:
        parts = [f"{n}={v:.3g}" for n, v in zip(names[:max_inputs], row[:max_inputs])]
        labels.append(", ".join(parts) + (", ..." if d > max_inputs else ""))
    return labels


@styled
@torch.no_grad()
def activation_profiles(model: nn.Module, probe_inputs: np.ndarray, path: str | Path, title_note: str = "",
                        labels: list[str] | None = None, x_names: list[str] | None = None) -> Path:
    """Each hidden layer's unit activations for a few chosen inputs: one heat-map row per input,
    plus each input's activations sorted by size (how many units it switches on).

    Parameters
    ----------
    model : nn.Module
        A regression MLP (``model(x, return_hidden=True)`` gives the hidden activations).
    probe_inputs : array (P, D)
        The inputs to profile.
    path : str or Path
    title_note : str
        Appended to the title (e.g. which model is shown).
    labels : list of str, optional
        Row labels; default: each input's values (see :func:`probe_labels`).
    x_names : list of str, optional
        Input column names used in the default labels.

    Returns
    -------
    Path
    """
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(probe_inputs, dtype=torch.float32, device=device)
    _, hidden = model(x, return_hidden=True)
    labels = labels or probe_labels(probe_inputs, x_names)
    fig, axes = plt.subplots(len(hidden), 2, figsize=(11.5, 2.2 + 1.1 * len(hidden) * max(1, len(labels) / 5)),
                             squeeze=False, gridspec_kw={"width_ratios": [3, 1]}, layout="constrained")
    for i, h in enumerate(hidden):
        acts = h.float().cpu().numpy()
        ax = axes[i, 0]
        im = ax.imshow(acts, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("hidden unit")
        ax.set_title(f"hidden layer {i + 1} ({acts.shape[1]} units); colour = activation")
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)  # unlabelled: the title says what colour means
        ax2 = axes[i, 1]
        for row, label in zip(acts, labels):
            ax2.plot(np.sort(row)[::-1], lw=1.2, label=label)
        ax2.set(title="sorted activations", xlabel="rank", ylabel="activation")
    axes[0, 1].legend(fontsize=7)
    fig.suptitle(f"Activation profiles {title_note}".strip())
    return save(fig, path)
