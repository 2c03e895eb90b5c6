"""nndl: train, tune and inspect small neural networks end to end.

The functional core is importable directly: :func:`train`, :func:`evaluate`,
:func:`cross_validate`, and the task entry points :func:`regress`,
:func:`classify` and :func:`tune`.
"""
__version__ = "0.1.0"

from .crossval import cross_validate  # noqa: E402
from .classification import classify  # noqa: E402
from .regression import regress  # noqa: E402
from .training import evaluate, train  # noqa: E402


def __getattr__(name: str):
    # Optuna loads only when a search is asked for: training, the bench and the GPU check need none of it.
    if name == "tune":
        from .search import tune

        globals()["tune"] = tune  # look it up once
        return tune
    raise AttributeError(f"module 'nndl' has no attribute {name!r}")


__all__ = ["__version__", "train", "evaluate", "cross_validate", "regress", "classify", "tune"]
