"""Prediction intervals for regression ensembles: the members' spread plus the estimated noise.

A new observation at ``x`` is ``f(x) + noise``. Two things are uncertain: ``f(x)`` itself
(estimated by how much the ensemble members disagree at ``x``, which grows in gaps of the
training data) and the noise (its variance estimated once, from out-of-fold residuals). The
interval is ``mean ± z * sqrt(spread_scale * member_variance + noise_var)``.

Members trained on overlapping data agree more than independent fits would, so their spread
understates the error in a gap. ``spread_scale`` corrects that: it is fitted on held-out
blocks of the training data (gap-shaped validation folds), never on a test set; plain runs
use 1.

Everything a saved run needs is the dict :func:`interval_info` returns (stored in ``model.pt``
under ``"interval"``); :func:`predict_interval` turns it and the members into bounds.

``interval=cv_plus`` replaces that interval by a conformal one from the same fold models
(:mod:`nndl.nn.conformal`); its dict (:func:`cv_plus_info`) adds ``method: "cv_plus"``, the
training rows' held-out residuals, their folds and each interval model's fold.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nndl.nn import conformal


def z_value(level: float) -> float:
    """The two-sided standard-normal quantile: 1.645 for a 90% interval."""
    return NormalDist().inv_cdf(0.5 + level / 2)


@torch.no_grad()
def member_predictions(models: Sequence[nn.Module], x) -> np.ndarray:
    """Predictions of each model at ``x`` (N, D): an array (M, N) in float64."""
    out = []
    for m in models:
        m.eval()
        device = next(m.parameters()).device
        out.append(m(torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)).reshape(-1).double().cpu())
    return torch.stack(out).numpy()


def members_of(model: nn.Module) -> list[nn.Module]:
    """The members of an :class:`~nndl.nn.models.Ensemble` (or ``[model]`` for a single model)."""
    return list(getattr(model, "members", [model]))


def interval_bounds(center: np.ndarray, member_preds: np.ndarray, noise_var: float, spread_scale: float = 1.0,
                    level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` around ``center`` from the members' variance and the noise variance.

    Parameters
    ----------
    center : array (N,)
        The point prediction (the ensemble mean, or a refit model).
    member_preds : array (M, N)
        Predictions of the members whose spread measures the model uncertainty; with
        one member the spread is zero.
    noise_var : float
        Estimated variance of the observation noise.
    spread_scale : float
        Multiplier on the members' variance (see the module notes).
    level : float
        Nominal coverage, e.g. 0.9.
    """
    preds = np.asarray(member_preds, dtype=np.float64)
    spread_var = preds.var(0, ddof=1) if len(preds) > 1 else np.zeros(preds.shape[1])
    half = z_value(level) * np.sqrt(spread_scale * spread_var + max(noise_var, 0.0))
    center = np.asarray(center, dtype=np.float64)
    return center - half, center + half


def coverage(y, lower, upper) -> float:
    """Fraction of ``y`` inside ``[lower, upper]`` (ends included); NaN for no points."""
    y = np.asarray(y, dtype=np.float64)
    if y.size == 0:
        return float("nan")
    return float(np.mean((y >= lower) & (y <= upper)))


def noise_variance(y, oof_pred) -> float:
    """Noise variance from out-of-fold residuals: their mean square.

    A held-out residual is noise plus the model's error at that point, so this errs on
    the wide side -- the safe side for an interval.
    """
    r = np.asarray(y, dtype=np.float64) - np.asarray(oof_pred, dtype=np.float64)
    return float(np.mean(r ** 2))


def fit_spread_scale(y, member_preds: np.ndarray, noise_var: float, level: float = 0.9,
                     bounds: tuple[float, float] = (1.0, 100.0)) -> float:
    """The smallest multiplier on the members' variance that makes ``level`` of held-out points
    fall inside the interval around the members' mean (clipped to ``bounds``).

    ``member_preds`` (M, N) are predictions for held-out points by members that did not see
    them (e.g. several configs' fold models on a blocked split), ``y`` their targets.
    Point i is covered when ``r_i^2 <= z^2 (s * v_i + noise_var)``, i.e. ``s >= (r_i^2/z^2 -
    noise_var) / v_i``; the ``level`` quantile of that bound over points is the answer.
    """
    preds = np.asarray(member_preds, dtype=np.float64)
    if len(preds) < 2 or preds.shape[1] == 0:
        return bounds[0]
    r2 = (np.asarray(y, dtype=np.float64) - preds.mean(0)) ** 2
    v = np.maximum(preds.var(0, ddof=1), 1e-12)
    need = (r2 / z_value(level) ** 2 - noise_var) / v
    s = float(np.quantile(np.maximum(need, 0.0), level))
    return float(min(max(s, bounds[0]), bounds[1])) if math.isfinite(s) else bounds[1]


def interval_info(noise_var: float, spread_scale: float = 1.0, level: float = 0.9, spread_from: str = "members") -> dict:
    """What ``model.pt`` stores under ``"interval"``: plain numbers and a string.

    ``spread_from`` is ``"members"`` (the spread of the final ensemble's members) or
    ``"folds"`` (the fold models', for a refit final model).
    """
    return {"level": float(level), "noise_var": float(noise_var), "spread_scale": float(spread_scale),
            "spread_from": spread_from}


def cv_plus_info(base: dict, residuals, row_fold, model_fold) -> dict:
    """``base`` (an :func:`interval_info` dict, kept for its noise numbers) turned into a CV+ interval.

    ``residuals``/``row_fold``: each calibration row's absolute held-out residual and the fold that
    held it out; ``model_fold[m]``: the fold held out by interval model m (the spread models, in
    their order). Plain lists, so ``model.pt`` still loads with ``weights_only=True``.
    """
    return {**base, "method": "cv_plus", "residuals": [float(r) for r in residuals],
            "row_fold": [int(k) for k in row_fold], "model_fold": [int(k) for k in model_fold]}


def method_of(info: dict) -> str:
    """``"cv_plus"`` or ``"model"`` (members' spread plus noise, the default)."""
    return str(info.get("method", "model"))


def bounds(center: np.ndarray, model_preds: np.ndarray, info: dict) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` from the centre and the interval models' predictions ``(M, N)`` for either method."""
    if method_of(info) == "cv_plus":
        folds = max(info["model_fold"]) + 1
        return conformal.cv_plus_bounds(conformal.fold_means(model_preds, info["model_fold"], folds),
                                        info["residuals"], info["row_fold"], info.get("level", 0.9))
    return interval_bounds(center, model_preds, info["noise_var"], info.get("spread_scale", 1.0),
                           info.get("level", 0.9))


def predict_interval(final_model: nn.Module, fold_models: Sequence[nn.Module], x, info: dict
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(prediction, lower, upper)`` at ``x`` for a saved run's models and its ``"interval"`` dict.

    The centre is the final model's prediction; the spread comes from the final ensemble's
    members, or from the fold models when ``info["spread_from"] == "folds"``. For a CV+ dict
    (``method: "cv_plus"``) those same models, grouped by ``model_fold``, give the CV+ bounds.
    """
    center = member_predictions([final_model], x)[0]
    spread_models = list(fold_models) if info.get("spread_from") == "folds" and fold_models else members_of(final_model)
    lower, upper = bounds(center, member_predictions(spread_models, x), info)
    return center, lower, upper


class IntervalModel(nn.Module):
    """:func:`predict_interval` as one torch graph (for export): ``forward(x)`` returns
    ``(prediction, lower, upper)``, each float32 ``(N, 1)``, so an ONNX or TorchScript file
    gives the same 90% interval ``nndl predict`` writes, without nndl.

    Parameters
    ----------
    final_model : nn.Module
        The run's final model (the centre).
    fold_models : list of nn.Module
        The run's saved fold models (the spread when ``info["spread_from"] == "folds"``).
    info : dict
        The run's ``"interval"`` dict (:func:`interval_info`).
    """

    def __init__(self, final_model: nn.Module, fold_models: Sequence[nn.Module], info: dict):
        super().__init__()
        spread = list(fold_models) if info.get("spread_from") == "folds" and fold_models else members_of(final_model)
        self.final, self.spread = final_model, nn.ModuleList(spread)
        self.z = z_value(info.get("level", 0.9))
        self.spread_scale, self.noise_var = float(info.get("spread_scale", 1.0)), max(float(info["noise_var"]), 0.0)
        self.cv_plus = method_of(info) == "cv_plus"
        if self.cv_plus:  # the CV+ bounds as constant tensors: fold means, then a sort over training rows
            which = torch.as_tensor(info["model_fold"])
            groups = torch.stack([(which == k).float() for k in range(int(which.max()) + 1)])
            self.register_buffer("fold_weights", groups / groups.sum(1, keepdim=True))  # (K, M)
            self.register_buffer("row_fold", torch.as_tensor(info["row_fold"], dtype=torch.long))
            self.register_buffer("residuals", torch.as_tensor(info["residuals"], dtype=torch.float32)[:, None])
            self.ranks = conformal.cv_plus_ranks(len(info["residuals"]), info.get("level", 0.9))

    def forward(self, x):
        center = self.final(x).reshape(-1, 1)
        preds = torch.stack([m(x).reshape(-1, 1) for m in self.spread])
        if self.cv_plus:
            at_rows = (self.fold_weights @ preds[:, :, 0])[self.row_fold]  # (n, N)
            lower = torch.sort(at_rows - self.residuals, dim=0).values[self.ranks[0] - 1]
            upper = torch.sort(at_rows + self.residuals, dim=0).values[self.ranks[1] - 1]
            return center, lower.reshape(-1, 1), upper.reshape(-1, 1)
        m = len(self.spread)  # fixed at export: a plain Python branch, not a graph one
        spread_var = ((preds - preds.mean(0)) ** 2).sum(0) / (m - 1) if m > 1 else torch.zeros_like(center)
        half = self.z * torch.sqrt(self.spread_scale * spread_var + self.noise_var)
        return center, center - half, center + half
