"""Figures of a regression run: the fitted function with fold spread, and hidden-unit activation profiles."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .common import plt, save


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


def fitted_function(final_model: nn.Module, fold_models: list[nn.Module], x_train, y_train, x_test, y_test,
                    path: str | Path, x_name: str = "x", y_name: str = "y") -> Path:
    """The final model's curve over the training and test points, the fold models' range as a band,
    and the gaps in the training inputs shaded (1-D inputs); predicted-vs-true for several inputs."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if x_train.shape[1] == 1:
        lo = min(x_train.min(), x_test.min() if len(x_test) else x_train.min())
        hi = max(x_train.max(), x_test.max() if len(x_test) else x_train.max())
        pad = 0.05 * (hi - lo)
        grid = np.linspace(lo - pad, hi + pad, 400, dtype=np.float32)[:, None]
        folds = np.stack([_predict(m, grid) for m in fold_models])
        for i, (a, b) in enumerate(find_gaps(x_train[:, 0])):
            ax.axvspan(a, b, color="0.9", zorder=0, label="gap in training data" if i == 0 else None)
        ax.fill_between(grid[:, 0], folds.min(0), folds.max(0), color="#4c72b0", alpha=0.25,
                        label=f"range of {len(fold_models)} fold models")
        ax.plot(grid[:, 0], _predict(final_model, grid), color="#4c72b0", lw=2, label="final model")
        ax.scatter(x_train[:, 0], y_train, s=14, color="0.25", label="training points", zorder=3)
        if len(x_test):
            ax.scatter(x_test[:, 0], y_test, s=14, marker="x", color="#dd8452", label="test points", zorder=3)
        ax.set(xlabel=x_name, ylabel=y_name, title="Fitted function, fold spread and training gaps")
    else:
        x_eval, y_eval, which = (x_test, y_test, "test") if len(x_test) else (x_train, y_train, "train")
        pred = _predict(final_model, x_eval)
        ax.scatter(y_eval, pred, s=14)
        lims = [min(y_eval.min(), pred.min()), max(y_eval.max(), pred.max())]
        ax.plot(lims, lims, "k--", lw=1, label="perfect prediction")
        ax.set(xlabel=f"true {y_name}", ylabel=f"predicted {y_name}", title=f"Predicted vs true ({which} set)")
    ax.legend(fontsize=8)
    return save(fig, path)


@torch.no_grad()
def activation_profiles(model: nn.Module, probe_inputs: np.ndarray, path: str | Path, title_note: str = "",
                        labels: list[str] | None = None) -> Path:
    """Each hidden layer's unit activations for a few chosen inputs: one heat-map row per input,
    plus each input's activations sorted by size (how many units it switches on)."""
    model.eval()
    device = next(model.parameters()).device
    x = torch.as_tensor(probe_inputs, dtype=torch.float32, device=device)
    _, hidden = model(x, return_hidden=True)
    labels = labels or [f"x = {v:g}" for v in probe_inputs[:, 0]]
    fig, axes = plt.subplots(len(hidden), 2, figsize=(11, 2.2 + 1.1 * len(hidden) * max(1, len(labels) / 5)),
                             squeeze=False, gridspec_kw={"width_ratios": [3, 1]})
    for i, h in enumerate(hidden):
        acts = h.float().cpu().numpy()
        ax = axes[i, 0]
        im = ax.imshow(acts, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("hidden unit")
        ax.set_title(f"hidden layer {i + 1} ({acts.shape[1]} units)")
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.03, label="activation")
        ax2 = axes[i, 1]
        for row, label in zip(acts, labels):
            ax2.plot(np.sort(row)[::-1], lw=1.2, label=label)
        ax2.set(title="sorted activations", xlabel="rank", ylabel="activation")
    axes[0, 1].legend(fontsize=7)
    fig.suptitle(f"Activation profiles {title_note}".strip())
    return save(fig, path)
