"""The reference model of a classification run: the baseline a statistician would try first.

Beside the network, every classify run fits scikit-learn's ``LogisticRegression`` (defaults: L2,
C = 1, lbfgs; ``max_iter`` high enough to converge on digits and wine in well under a second) on
standardised inputs (flattened pixels scaled to [0, 1], or table columns), on the rows the network
trained on, and scores it on the same test rows. So a reader can tell from the run whether the
network was worth it.

The ``reference`` setting: ``auto`` (logistic regression, skipped with one printed line when
scikit-learn, the ``sklearn`` extra, is missing), ``logistic``, ``hgb`` (scikit-learn's
HistGradientBoostingClassifier, tables only) or ``none``. A large training set is subsampled
(stratified, seeded) to :data:`MAX_ROWS` rows so that the baseline stays a matter of seconds
(Fashion-MNIST: 5,000 of 54,000 rows, ~5 s on one core) and the metrics say how many rows it saw.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from nndl.base.errors import NndlError
from nndl.nn.metrics import macro_f1

# Training rows the reference sees at most (a stratified, seeded subsample beyond): 5,000 Fashion-MNIST rows
# fit in ~5 s on one core and score 79.3% on the test set, 10,000 rows in ~11 s for 79.9%.
MAX_ROWS = 5_000
MAX_ITER = 1000  # lbfgs iterations: digits converges in ~30, wine in ~20, 5,000 Fashion-MNIST rows in ~320
MODEL_NAMES = {"logistic": "LogisticRegression", "hgb": "HistGradientBoostingClassifier"}
INSTALL_HINT = "pip install 'nndl[sklearn]'"
SKIPPED_LINE = f"reference model skipped: {INSTALL_HINT}"


def have_sklearn() -> bool:
    """Whether scikit-learn can be imported (the ``sklearn`` extra)."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def choose(setting: str, is_image: bool) -> str | None:
    """The reference model to fit for ``setting`` (``"logistic"``, ``"hgb"``, or None for none).

    Raises
    ------
    NndlError
        One line: ``hgb`` for images, or an explicit model while scikit-learn is missing (checked
        when the data are loaded, before a run folder exists).
    """
    if setting == "none":  # the config has checked the choice (ClassifyConfig.reference)
        return None
    if setting == "hgb" and is_image:
        raise NndlError("config key 'reference' = 'hgb': gradient boosting is the reference for tables; use "
                        "reference=logistic (or auto) for images")
    if not have_sklearn():
        if setting == "auto":
            return None
        raise NndlError(f"config key 'reference' = {setting!r} needs scikit-learn: {INSTALL_HINT} "
                        "(or set reference=none)")
    return "logistic" if setting == "auto" else setting


def _features(x) -> np.ndarray:
    """Rows as float64: images ``uint8 (N, C, H, W)`` flattened and scaled to [0, 1]; table rows as they are."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim > 2:
        return arr.reshape(len(arr), -1).astype(np.float64) / 255.0
    return arr.astype(np.float64)


def _subsample(y: np.ndarray, seed: int) -> np.ndarray:
    """Indices of at most :data:`MAX_ROWS` rows, each class keeping its share (seeded)."""
    if len(y) <= MAX_ROWS:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=MAX_ROWS, stratify=y, random_state=seed % 2**32)
    return np.sort(keep)


def _estimator(kind: str, seed: int):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed % 2**32)
    from sklearn.linear_model import LogisticRegression

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=MAX_ITER, random_state=seed % 2**32))


def fit_reference(kind: str, x_train, y_train, x_test, y_test, seed: int = 0) -> dict:
    """Fit the reference model ``kind`` on the training rows and score it on the test rows.

    Parameters
    ----------
    kind : {"logistic", "hgb"}
    x_train, x_test : tensor or array
        Images ``uint8 (N, C, H, W)`` or table rows ``(N, F)``.
    y_train, y_test : tensor or array of int
    seed : int
        Seeds the subsample and the estimator.

    Returns
    -------
    dict
        ``reference_model`` (the scikit-learn class name), ``reference_test_accuracy``,
        ``reference_test_macro_f1``, ``reference_train_rows`` and ``reference_seconds``.
    """
    y = np.asarray(y_train.cpu() if hasattr(y_train, "cpu") else y_train).astype(np.int64)
    y_true = np.asarray(y_test.cpu() if hasattr(y_test, "cpu") else y_test).astype(np.int64)
    rows = _subsample(y, seed)
    start = time.perf_counter()
    model = _estimator(kind, seed)
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    # One BLAS thread: beside torch's threads on a busy 2-core machine, two BLAS threads made the
    # Fashion-MNIST fit 5x slower (26 s instead of 5 s); a ConvergenceWarning would print mid-run.
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        warnings.simplefilter("ignore")
        model.fit(_features(x_train)[rows], y[rows])
        predicted = model.predict(_features(x_test))
    return {"reference_model": MODEL_NAMES[kind],
            "reference_test_accuracy": float(np.mean(predicted == y_true)) if len(y_true) else float("nan"),
            "reference_test_macro_f1": macro_f1(y_true, predicted),
            "reference_train_rows": int(len(rows)), "reference_seconds": time.perf_counter() - start}
