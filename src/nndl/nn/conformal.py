"""CV+ prediction intervals (jackknife+-after-K-fold; Barber, Candes, Ramdas & Tibshirani 2021,
"Predictive inference with the jackknife+", Ann. Statist. 49(1)): numpy only, no torch.

The K fold models of a cross-validation are already trained; each training row ``i`` was held
out by exactly one of them, ``mu_{-k(i)}``, whose absolute residual there is ``R_i``. For a new
``x`` the interval is

    lower = the floor(alpha (n + 1))-th smallest of  mu_{-k(i)}(x) - R_i   (i = 1 .. n)
    upper = the ceil((1 - alpha) (n + 1))-th smallest of  mu_{-k(i)}(x) + R_i

with ``alpha = 1 - level``. Unlike a split-conformal interval it uses every row both to train
and to calibrate, and unlike ``mu(x) +- quantile(R)`` it carries the fold models' disagreement
at ``x`` into the bounds.
"""
from __future__ import annotations

import math

import numpy as np


def cv_plus_ranks(n: int, level: float = 0.9) -> tuple[int, int]:
    """The 1-based ranks ``(floor(alpha (n+1)), ceil((1-alpha) (n+1)))`` of the CV+ bounds among n values.

    Raises ``ValueError`` when ``n`` is too small for ``level`` (the lower rank would be 0,
    i.e. an infinite interval): ``n >= 1 / alpha - 1`` rows are needed (9 for 90%).
    """
    alpha = 1.0 - level
    # a hair of slack so that 0.1 * 20 = 2.0000000000000004 and 0.9 * 20 = 18.000000000000004 count as whole
    lo = math.floor(alpha * (n + 1) + 1e-9)
    hi = math.ceil((1 - alpha) * (n + 1) - 1e-9)
    if lo < 1:
        raise ValueError(f"CV+ at level {level:g} needs at least {min_rows(level)} calibration rows, got {n}")
    return lo, hi


def min_rows(level: float = 0.9) -> int:
    """The fewest held-out rows for which a CV+ interval at ``level`` is finite."""
    return max(1, math.ceil(1.0 / (1.0 - level) - 1 - 1e-9))


def cv_plus_bounds(fold_preds, residuals, row_fold, level: float = 0.9,
                   chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """CV+ ``(lower, upper)`` at N new points from the fold models' predictions there.

    Parameters
    ----------
    fold_preds : array (K, N)
        Prediction of fold model k at each new point (fold model k = the model that did not
        see the rows held out in fold k; for an ensemble of several configs, their mean).
    residuals : array (n,)
        ``|y_i - mu_{-k(i)}(x_i)|``, each training row's absolute held-out residual.
    row_fold : array (n,) of int
        ``k(i)``: the fold (row of ``fold_preds``) that held row ``i`` out.
    level : float
        Nominal coverage ``1 - alpha``.
    chunk : int
        New points handled at once (the work array is n x chunk).

    Returns
    -------
    lower, upper : arrays (N,)

    Notes
    -----
    Guarantee: when the n training rows and the new point are exchangeable (drawn i.i.d. from
    one distribution, say) and the fold assignment does not look at the data, the new
    observation falls in ``[lower, upper]`` with probability at least ``1 - 2 alpha`` (less a
    term of order K/n) in the worst case, and about ``1 - alpha`` in practice (Barber et al.
    2021, Theorem 4 and their experiments). Nothing is assumed about the model.

    Why clustered data with test points in gaps weaken it: the guarantee is marginal over
    test points drawn like the training rows. A test point in a gap between clusters is not such
    a draw; its error is extrapolation, larger than any held-out residual of a shuffled fold
    (where every held-out row has close neighbours in the training fold), so the interval is
    too narrow there and too wide between points. Held-out *blocks* (a blocked or per-cluster
    split) make the residuals gap-like and widen every interval instead; the folds then depend
    on x, so the exchangeability argument no longer holds and the coverage is what the data
    give, not a guarantee.
    """
    preds = np.asarray(fold_preds, dtype=np.float64)
    r = np.asarray(residuals, dtype=np.float64).reshape(-1)
    k = np.asarray(row_fold, dtype=np.int64).reshape(-1)
    if preds.ndim != 2 or len(r) != len(k) or (len(k) and not 0 <= k.min() <= k.max() < len(preds)):
        raise ValueError("cv_plus_bounds: fold_preds (K, N), residuals (n,) and row_fold (n,) in 0..K-1 expected")
    lo_rank, hi_rank = cv_plus_ranks(len(r), level)
    n_new = preds.shape[1]
    lower, upper = np.empty(n_new), np.empty(n_new)
    for s in range(0, n_new, chunk):
        at_rows = preds[k, s:s + chunk]  # (n, c): mu_{-k(i)}(x) for every training row i
        lower[s:s + chunk] = np.partition(at_rows - r[:, None], lo_rank - 1, axis=0)[lo_rank - 1]
        upper[s:s + chunk] = np.partition(at_rows + r[:, None], hi_rank - 1, axis=0)[hi_rank - 1]
    return lower, upper


def fold_means(model_preds, model_fold, folds: int) -> np.ndarray:
    """``(K, N)`` per-fold means of several models' predictions ``(M, N)``; ``model_fold[m]`` is
    the fold model m held out (several configs' fold-k models together form ``mu_{-k}``)."""
    preds = np.asarray(model_preds, dtype=np.float64)
    which = np.asarray(model_fold, dtype=np.int64)
    return np.stack([preds[which == f].mean(0) for f in range(folds)])
