"""Tasks as plug-ins, and the one skeleton every run follows.

A :class:`Task` bundles what differs between kinds of problem: reading and checking its data,
the training tensors, model builder and input transform, cross-validation scores, training
(CV plus a final model, or one model), the one test evaluation, what it saves and its
figures. :func:`run_task` is the skeleton every ``nndl regress`` / ``nndl classify`` run
follows, in one order::

    config -> data (all input checks; nothing written yet) -> run folder -> config.json
           -> fit (train / CV) -> test once -> history + model.pt -> metrics.json
           -> environment.json -> figures -> report and summary

so the run-folder guard, the clean-up of a failed run, the callbacks' run events, the files
every run folder has and the report are written once. The tasks themselves live in
:mod:`nndl.regression` and :mod:`nndl.classification` and are listed in :mod:`nndl.tasks`;
search, bench and the lr finder use their building blocks (:meth:`Task.load`,
:meth:`Task.setup`, :meth:`Task.cross_validate`), never the end-to-end functions.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from . import config as config_mod
from .errors import function_argument, path_argument


@dataclass
class Setup:
    """What a task trains on: a model factory, the training tensors and the input transform."""

    make_model: Callable[[int], Any]  # make_model(i): model i (seeded by cfg.seed + i), on the device
    x: Any
    y: Any
    transform: Callable | None  # transform(xb, generator) -> model input, or None
    loss: str  # "regression" or "classification" (what :func:`nndl.training.train` calls the task)


@dataclass
class RunContext:
    """How a run was asked for: its folder, output switches and callbacks."""

    run_dir: Path
    progress: bool
    figures: bool
    echo: Callable[[str], None]
    callbacks: Any  # a CallbackList
    verbose: bool
    resume: bool = False


class Task(ABC):
    """One kind of problem, as the skeleton and the tools (search, bench, lr finder) see it.

    Subclasses set :attr:`name` (``regress`` / ``classify``: the config, preset and run-folder
    name) and implement the methods below; the skeleton calls ``load``, ``fit``, ``test``,
    ``save``, ``figures`` and ``warnings`` in that order.
    """

    name: ClassVar[str]
    #: Exceptions after which a new run folder is kept (classify keeps its checkpoint on Ctrl-C).
    keep_on: ClassVar[tuple[type[BaseException], ...]] = ()

    def threads(self, cfg) -> contextlib.AbstractContextManager:
        """The thread setting for the whole run (default: the task sets it where it trains)."""
        return contextlib.nullcontext()

    @abstractmethod
    def inputs(self, cfg) -> list[str]:
        """The files and folders the run reads (never replaced by ``--overwrite``)."""

    @abstractmethod
    def load(self, cfg, data=None) -> Any:
        """Read and check the data ``cfg`` names (or take ``data``): every input error is raised
        here, before anything is written."""

    @abstractmethod
    def setup(self, cfg, data, device) -> Setup:
        """A model factory, the training tensors and the input transform of ``cfg`` on ``device``."""

    @abstractmethod
    def cross_validate(self, cfg, data, folds: int | None = None, on_fold=None) -> list[dict]:
        """K-fold scores of ``cfg`` on the training data (never the test set), one dict per fold
        with ``score``, ``diverged``, ``timed_out`` and ``stop_reason``."""

    def header(self, cfg, data) -> list[str]:
        """Lines printed under "run folder:" (e.g. what the data are)."""
        return []

    @abstractmethod
    def fit(self, cfg, data, ctx: RunContext) -> Any:
        """Train (cross-validation and final model, or one model); returns what the later steps need."""

    @abstractmethod
    def test(self, cfg, data, fitted) -> dict:
        """The flat numbers of ``metrics.json``; the test set is touched once, here."""

    @abstractmethod
    def save(self, cfg, data, fitted, run_dir: Path) -> None:
        """``history.csv`` and ``model.pt``."""

    @abstractmethod
    def figures(self, cfg, data, fitted, fig_dir: Path) -> None:
        """The task's PNG figures."""

    def warnings(self, metrics: dict, fitted) -> list[str]:
        """Lines printed once after the run (e.g. a model whose loss diverged)."""
        return []


def run_task(task: Task, cfg, *, data=None, out: str | Path | None = None, overwrite: bool = False,
             resume_dir: Path | None = None, progress: bool = True, figures: bool = True,
             echo: Callable[[str], None] = print, callbacks=None, verbose: bool = True):
    """Run ``task`` on config ``cfg`` end to end and return the :class:`~nndl.results.Run`.

    Parameters
    ----------
    task : Task
    cfg : config dataclass of the task
    data : optional
        Already loaded data for :meth:`Task.load`.
    out, overwrite : optional
        The run folder (default: a new timestamped one under ``runs/``) and whether an existing
        one nndl made may be replaced.
    resume_dir : Path, optional
        Continue the interrupted run in this folder (its config.json is kept as it is).
    callbacks : CallbackList
        Receive the run events and every model's training events.
    """
    from .runs import new_run_dir, removed_on_failure, write_json

    out = path_argument(out, "out")  # the Python API's wrong types: one line before any work
    echo = function_argument(echo, "echo") or (lambda s: None)
    with task.threads(cfg):
        loaded = task.load(cfg, data)  # every input problem surfaces before anything is written
        if resume_dir is not None:
            return _run(task, cfg, loaded, RunContext(Path(resume_dir), progress, figures, echo, callbacks, verbose,
                                                      resume=True))
        run_dir = new_run_dir(out, task.name, overwrite, inputs=task.inputs(cfg))
        # a run that fails is removed (unless the task keeps it, e.g. a checkpoint for --resume)
        with removed_on_failure(run_dir, keep=task.keep_on):
            write_json(run_dir / "config.json", config_mod.to_dict(cfg))
            return _run(task, cfg, loaded, RunContext(run_dir, progress, figures, echo, callbacks, verbose))


def _run(task: Task, cfg, data, ctx: RunContext):
    """The skeleton's steps after the run folder exists."""
    from .callbacks import RunInfo
    from .results import finish
    from .runs import environment, write_json

    lines = [f"run folder: {ctx.run_dir}", *task.header(cfg, data)]
    if ctx.verbose:
        lines.append(f"resolved config:\n{config_mod.format_config(cfg)}")
    ctx.echo("\n".join(lines))
    ctx.callbacks.run_begin(RunInfo(ctx.run_dir, task.name, config_mod.to_dict(cfg)))
    fitted = task.fit(cfg, data, ctx)
    metrics = task.test(cfg, data, fitted)
    task.save(cfg, data, fitted, ctx.run_dir)
    write_json(ctx.run_dir / "metrics.json", metrics)  # written last of the results: it marks a finished run
    write_json(ctx.run_dir / "environment.json", environment())
    if ctx.figures:
        task.figures(cfg, data, fitted, ctx.run_dir / "figures")
    for line in task.warnings(metrics, fitted):
        ctx.echo(f"WARNING: {line}")
    return finish(ctx.run_dir, task.name, metrics, ctx.callbacks, ctx.echo, ctx.verbose)
