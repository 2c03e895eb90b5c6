"""The task registry: name -> :class:`~nndl.tasks.base.Task`, each loaded on first use.

Search, bench, the lr finder and the CLI look a task up here and use its interface (metric,
direction, default preset, ``load``, ``setup``, ``cross_validate``); ``nndl regress`` / ``nndl
classify`` run it through :func:`nndl.tasks.base.run_task`. A new task is one package under
``tasks/`` whose module defines ``TASK`` (a ``Task`` subclass instance) and whose ``config``
module registers its config dataclass and presets (:func:`nndl.base.config.register`), plus one
line here. Importing this package imports every task's config module (torch-free), so
``nndl.base.config.resolve``, ``nndl presets`` and the report know every task; the ``TASK`` modules
load on first use: ``--help`` and option checks stay torch-free.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from nndl.base.errors import NndlError

if TYPE_CHECKING:
    from nndl.tasks.base import Task

# name -> the module that defines its TASK
TASK_MODULES = {"regress": "nndl.tasks.regress.task", "classify": "nndl.tasks.classify.task"}
# The task a tool runs when none is named (``nndl.lr_find()``).
DEFAULT_TASK = "regress"

for _module in TASK_MODULES.values():  # nndl.tasks.NAME.config registers the task's config on import
    importlib.import_module(_module.rpartition(".")[0] + ".config")


def task_names() -> list[str]:
    """The registered task names, without loading any task."""
    return list(TASK_MODULES)


def get_task(name: str) -> "Task":
    """The task called ``name`` (one of :func:`task_names`), loaded on first use."""
    if name not in TASK_MODULES:
        raise NndlError(f"unknown task '{name}': choose one of {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name]).TASK
