"""The task registry: name -> :class:`~nndl.tasks.base.Task`.

Search, bench and the lr finder look a task up here and use its building blocks
(``load``, ``setup``, ``cross_validate``); ``nndl regress`` / ``nndl classify`` run it
through :func:`nndl.tasks.base.run_task`. A new task is one module with a ``Task`` subclass
plus one line here.
"""
from __future__ import annotations

from nndl.tasks.classify.task import TASK as CLASSIFY
from nndl.base.errors import NndlError
from nndl.tasks.base import Task
from nndl.tasks.regress.task import TASK as REGRESS

TASKS: dict[str, Task] = {REGRESS.name: REGRESS, CLASSIFY.name: CLASSIFY}


def get_task(name: str) -> Task:
    """The task called ``name`` (``regress`` or ``classify``)."""
    if name not in TASKS:
        raise NndlError(f"unknown task '{name}': choose one of {', '.join(TASKS)}")
    return TASKS[name]
