"""Reference models for regression: the baseline a statistician would fit first, beside the net.

Every regression run fits one on the same training rows as the network (``reference`` in the
config): a Gaussian process (RBF + white noise, marginal likelihood with restarts) for one input
column, ridge regression (:class:`~sklearn.linear_model.RidgeCV` on standardised inputs) for
several. Both give a 90% interval for a new observation: the GP's predictive standard deviation
(the white-noise kernel is part of it, so the noise is included), ridge's leave-one-out residual
standard deviation. The scores and intervals are computed as the net's are, so ``metrics.json``
can put them side by side (:func:`regression_scores`, :func:`nndl.nn.intervals.coverage`).

scikit-learn is the ``sklearn`` extra: without it an ``auto`` reference is skipped with one
line, and an explicit ``gp`` or ``ridge`` is one :class:`~nndl.base.errors.NndlError` line.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from nndl.base.errors import NndlError
from nndl.nn.intervals import coverage, z_value

# The config's ``reference`` choices (auto, gp, ridge, none) are declared with the other settings in
# nndl.tasks.regress.config; ``auto`` is a GP for one input column up to GP_MAX_ROWS rows, else ridge (:func:`choose`).
#: Above this many training rows ``auto`` fits ridge: a GP's fit grows as rows cubed (on one busy core,
#: 5 restarts: ~1.4 s at 300 rows and ~5 s at 500, and the run refits it on each CV fold as well).
GP_MAX_ROWS = 500
#: The penalties RidgeCV chooses from (by leave-one-out error), on standardised inputs.
RIDGE_ALPHAS = tuple(np.logspace(-3, 3, 13))
MISSING_EXTRA = "pip install 'nndl[sklearn]'"
LABELS = {"gp": "GP", "ridge": "ridge"}


def sklearn_available() -> bool:
    """Whether scikit-learn can be imported (the ``sklearn`` extra)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def check_available(setting: str) -> bool:
    """Whether the reference ``setting`` asks for can be fitted here.

    ``none`` and a missing scikit-learn under ``auto`` are False (the run goes on without one);
    an explicit ``gp`` or ``ridge`` without scikit-learn raises :class:`NndlError` naming the extra.
    """
    if setting == "none":
        return False
    if sklearn_available():
        return True
    if setting == "auto":
        return False
    raise NndlError(f"config key 'reference' = {setting!r} needs scikit-learn: {MISSING_EXTRA} "
                    "(or --no-reference)")


def choose(setting: str, rows: int, columns: int) -> str:
    """The kind ``setting`` resolves to for a training table of ``rows`` x ``columns`` inputs."""
    if setting != "auto":
        return setting
    return "gp" if columns == 1 and rows <= GP_MAX_ROWS else "ridge"


@dataclass
class ReferenceModel:
    """A fitted reference: ``predict`` gives the mean and the standard deviation of a new observation."""

    kind: str  # "gp" or "ridge"
    estimator: Any
    noise_var: float = 0.0  # ridge: leave-one-out residual variance (a GP's std includes its own noise)
    x_mean: np.ndarray | None = None  # a several-input GP works on standardised columns
    x_scale: np.ndarray | None = None

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def detail(self) -> str:
        """What was fitted: the GP's kernel with its fitted hyperparameters, or ridge's penalty."""
        if self.kind == "gp":
            return str(self.estimator.kernel_)
        return f"alpha={self.estimator[-1].alpha_:.3g} on standardised inputs"

    def _inputs(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x if self.x_mean is None else (x - self.x_mean) / self.x_scale

    def predict(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of a new observation at each row of ``x`` (N, D)."""
        if self.kind == "gp":
            mean, std = self.estimator.predict(self._inputs(x), return_std=True)
            return mean, std
        mean = self.estimator.predict(self._inputs(x))
        return mean, np.full(len(mean), np.sqrt(self.noise_var))

    def interval(self, x, level: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(mean, lower, upper)``: the ``level`` prediction interval at ``x``, as the net's is formed."""
        mean, std = self.predict(x)
        half = z_value(level) * std
        return mean, mean - half, mean + half


def fit_gp(x, y, seed: int = 0) -> ReferenceModel:
    """A GP with ``ConstantKernel * RBF + WhiteKernel``, standardised targets and 5 optimiser restarts.

    Deterministic for a given ``seed`` (the restarts' starting points). One input column is fitted
    on the raw x (the setup of bench/regression_suite.py's ``gp`` numbers); several are
    standardised and get one length scale each, which start at 1 on that scale.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    x = np.asarray(x, dtype=np.float64)
    mean = scale = None
    if x.shape[1] > 1:
        mean, scale = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
    rbf = RBF() if x.shape[1] == 1 else RBF(length_scale=np.ones(x.shape[1]))
    gp = GaussianProcessRegressor(ConstantKernel() * rbf + WhiteKernel(), normalize_y=True, n_restarts_optimizer=5,
                                  random_state=int(seed) % 2**32)
    model = ReferenceModel("gp", gp, x_mean=mean, x_scale=scale)
    with warnings.catch_warnings():  # a hyperparameter at its bound is a fine fit here, not news for the user
        warnings.simplefilter("ignore", ConvergenceWarning)
        gp.fit(model._inputs(x), np.asarray(y, dtype=np.float64))
    return model


def fit_ridge(x, y) -> ReferenceModel:
    """Ridge regression on standardised inputs, its penalty chosen by leave-one-out error
    (:data:`RIDGE_ALPHAS`); the noise variance is the chosen penalty's leave-one-out mean square."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS, store_cv_results=True))
    pipe.fit(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    ridge = pipe[-1]
    loo_squared = ridge.cv_results_[:, list(RIDGE_ALPHAS).index(ridge.alpha_)]
    return ReferenceModel("ridge", pipe, noise_var=float(np.mean(loo_squared)))


def fit_reference(kind: str, x, y, seed: int = 0) -> ReferenceModel:
    """Fit the reference ``kind`` (``gp`` or ``ridge``) to training rows ``x`` (N, D), ``y`` (N,)."""
    return fit_gp(x, y, seed) if kind == "gp" else fit_ridge(x, y)


def cross_val_mse(kind: str, x, y, val_sets: list, seed: int = 0) -> float:
    """Mean held-out MSE of the reference refitted on each fold's training rows (the complement of
    each index array in ``val_sets``): the net's CV folds, so it compares with the net's ``val_mse``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    mses = []
    for val in val_sets:
        val = np.asarray(val, dtype=np.int64)
        train = np.setdiff1d(np.arange(len(y)), val)
        mean, _ = fit_reference(kind, x[train], y[train], seed).predict(x[val])
        mses.append(float(np.mean((mean - y[val]) ** 2)))
    return float(np.mean(mses))


def regression_scores(y, pred, prefix: str = "test_") -> dict[str, float]:
    """``{prefix}r2``, ``{prefix}mae`` and ``{prefix}rmse`` of ``pred`` against ``y`` (NaN for no points).

    The definitions are scikit-learn's ``r2_score``, ``mean_absolute_error`` and
    ``root_mean_squared_error``; R² is NaN when ``y`` has fewer than 2 points or no variance.
    """
    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if y.size == 0:
        return {f"{prefix}r2": float("nan"), f"{prefix}mae": float("nan"), f"{prefix}rmse": float("nan")}
    residual = y - pred
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(residual ** 2)) / total if y.size > 1 and total > 0 else float("nan")
    return {f"{prefix}r2": r2, f"{prefix}mae": float(np.mean(np.abs(residual))),
            f"{prefix}rmse": float(np.sqrt(np.mean(residual ** 2)))}


@dataclass
class Reference:
    """A run's reference: the fitted model, its CV score on the net's folds and the fitting time."""

    model: ReferenceModel
    val_mse: float
    seconds: float


def fit_for_run(kind: str, x, y, val_sets: list, seed: int = 0) -> Reference:
    """Fit the reference ``kind`` on all training rows and score it on the net's CV folds."""
    t0 = time.perf_counter()
    model = fit_reference(kind, x, y, seed)
    val_mse = cross_val_mse(kind, x, y, val_sets, seed)
    return Reference(model, val_mse, time.perf_counter() - t0)


def run_metrics(ref: Reference, x_test, y_test, level: float = 0.9) -> dict[str, Any]:
    """The ``reference_*`` keys of ``metrics.json``: each the net's key of the same meaning with
    ``reference_`` in front (test scores NaN without a test set)."""
    out: dict[str, Any] = {"reference_model": ref.model.kind, "reference_detail": ref.model.detail,
                           "reference_val_mse": ref.val_mse, "reference_seconds": ref.seconds}
    y_test = np.asarray(y_test, dtype=np.float64)
    if len(y_test):
        mean, lower, upper = ref.model.interval(x_test, level)
        out["reference_test_mse"] = float(np.mean((mean - y_test) ** 2))
        out.update(regression_scores(y_test, mean, "reference_test_"))
        out["reference_test_coverage_90"] = coverage(y_test, lower, upper)
        out["reference_test_width_90"] = float(np.mean(upper - lower))
    else:
        out["reference_test_mse"] = float("nan")
        out.update(regression_scores(y_test, y_test, "reference_test_"))
        out["reference_test_coverage_90"] = out["reference_test_width_90"] = float("nan")
    return out


def summary_line(metrics: dict) -> str | None:
    """``reference GP: test MSE 0.070, 90% coverage 0.91 (net: test MSE 0.125)`` for a run's metrics
    (the val MSE when there is no test set); None when the run has no reference."""
    kind = metrics.get("reference_model")
    if kind is None:
        return None
    test = metrics.get("reference_test_mse", float("nan"))
    if np.isfinite(test):
        return (f"reference {LABELS[kind]}: test MSE {test:.4g}, R² {metrics['reference_test_r2']:.3f}, "
                f"90% coverage {metrics['reference_test_coverage_90']:.2f} "
                f"(net: test MSE {metrics['test_mse']:.4g}, R² {metrics['test_r2']:.3f}, "
                f"90% coverage {metrics['test_coverage_90']:.2f})")
    return (f"reference {LABELS[kind]}: val MSE {metrics['reference_val_mse']:.4g} on the same folds "
            f"(net: val MSE {metrics['val_mse']:.4g})")


ADVICE_MARGIN = 0.9  # the reference must be clearly better (10% lower val MSE), not better by fold noise


def advice_line(metrics: dict) -> str | None:
    """A hint when the reference model beats the net on the net's own CV folds, else None.

    Judged on validation MSE (the test set stays a final score, never a guide), and only for a run
    that did not search already: ``--preset auto`` is then the next thing to try.
    """
    ref, net = metrics.get("reference_val_mse", float("nan")), metrics.get("val_mse", float("nan"))
    if metrics.get("search") == "auto" or not (np.isfinite(ref) and np.isfinite(net)) or ref >= ADVICE_MARGIN * net:
        return None
    return (f"the reference {LABELS[metrics['reference_model']]} beats the net on the same CV folds (val MSE "
            f"{ref:.4g} vs {net:.4g}): try --preset auto, a search over smaller, regularised nets")
