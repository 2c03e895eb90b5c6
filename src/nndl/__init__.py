"""nndl: train, tune and inspect small neural networks end to end.

The functional core is importable directly: :func:`train`, :func:`evaluate`,
:func:`cross_validate`, and the task entry points :func:`regress`,
:func:`classify` and :func:`tune`.

Every public name is loaded on first use (PEP 562), so ``import nndl``,
``nndl --version`` and every ``--help`` start without importing torch,
matplotlib or Optuna.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute). Add a line here to export a new name.
_LAZY = {
    "train": (".training.trainer", "train"),
    "evaluate": (".training.trainer", "evaluate"),
    "cross_validate": (".training.crossval", "cross_validate"),
    "regress": (".tasks.regress.task", "regress"),
    "classify": (".tasks.classify.task", "classify"),
    # Optuna loads only when a search is asked for: training, the bench and the GPU check need none of it.
    "tune": (".search", "tune"),
    "load_run": (".runfolder.objects", "load_run"),
    "Run": (".runfolder.objects", "Run"),
    "Study": (".runfolder.objects", "Study"),
    # no submodule may be called nndl/train.py, nndl/lr_find.py ...: importing it would replace the function
    "lr_find": (".tools.lr_find", "lr_find"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'nndl' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value  # look it up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", *_LAZY]
