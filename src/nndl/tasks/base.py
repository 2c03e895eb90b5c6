"""Tasks as plug-ins, and the one skeleton every run follows.

A :class:`Task` bundles what differs between kinds of problem: reading and checking its data,
the training tensors, model builder and input transform, cross-validation scores, training
(CV plus a final model, or one model), the one test evaluation, what it saves and its
figures. :func:`run_task` is the skeleton every ``nndl regress`` / ``nndl classify`` run
follows, in one order::

    config -> data (all input checks; nothing written yet) -> run folder -> config.json
           -> fit (train / CV) -> test once -> history + model.pt + metrics.json + environment.json
           -> figures -> report -> complete (moved over the run it replaces) -> summary

so the run-folder guard, the clean-up of a failed run, what an interrupt keeps, the callbacks'
run events, the files every run folder has and the report are written once.

A run folder's state (in its marker, :data:`nndl.runfolder.files.STATES`) says how far it got: "training",
"tested" (its results are written, as one step a Ctrl-C cannot split) and "complete". A Ctrl-C
keeps whatever is worth keeping and names the next step: a task with a resume command (a
classification's checkpoint) keeps its folder at any moment; any task keeps a tested run (finish
it with ``nndl report``); a regression interrupted in training keeps nothing, and its folder is
removed. A run that fails (full disk, a bug) is removed. With ``--overwrite`` the new run is built
beside the old one, which stays intact until the new one is complete; an interrupted one never
replaces it. The tasks themselves live in
:mod:`nndl.tasks.regress.task` and :mod:`nndl.tasks.classify.task` and are listed in :mod:`nndl.tasks`;
search, bench and the lr finder use their building blocks (:meth:`Task.load`,
:meth:`Task.setup`, :meth:`Task.cross_validate`), never the end-to-end functions.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from nndl.base import config as config_mod
from nndl.base.errors import NndlError, function_argument, path_argument


@dataclass
class Setup:
    """What a task trains on: a model factory, the training tensors and the input transform."""

    make_model: Callable[[int], Any]  # make_model(i): model i (seeded by cfg.seed + i), on the device
    x: Any
    y: Any
    transform: Callable | None  # transform(xb, generator) -> model input, or None
    loss: str  # "regression" or "classification" (what :func:`nndl.training.trainer.train` calls the task)


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
    stage: str = "starting"  # what the run is doing: the words of an interrupt's message
    final: Path | None = None  # where the run ends up (run_dir, or the run it replaces)


class Task(ABC):
    """One kind of problem, as the skeleton and the tools (search, bench, lr finder) see it.

    Subclasses set :attr:`name` (``regress`` / ``classify``: the config, preset and run-folder
    name) and implement the methods below; the skeleton calls ``load``, ``fit``, ``test``,
    ``save``, ``figures`` and ``warnings`` in that order.
    """

    name: ClassVar[str]
    #: The command that continues an interrupted run in ``{run_dir}`` from its checkpoint (None: the task
    #: has none, so a Ctrl-C in training keeps nothing).
    resume_command: ClassVar[str | None] = None
    #: The ``metrics.json`` key cross-validation and searches rank by, and which way is better.
    val_metric: ClassVar[str]
    direction: ClassVar[str]  # "minimize" or "maximize"
    #: The test-set key a retrained best config is reported by.
    test_metric: ClassVar[str]
    #: The preset a search or the lr finder starts from when none is given.
    default_preset: ClassVar[str]
    #: The search space shipped in ``nndl/spaces/`` for ``nndl tune TASK`` without ``--space`` (None: none).
    default_space: ClassVar[str | None] = None
    #: Whether trials whose configs share a network train as one stack (:meth:`cross_validate_stacked`,
    #: ``nndl tune --batch-trials``).
    stacked_trials: ClassVar[bool] = False
    #: Whether a trial run alone (no ``--batch-trials``) also trains through :meth:`cross_validate_stacked`
    #: (its folds scored when all are done) rather than fold by fold through :meth:`cross_validate`, where a
    #: pruner can stop it after any fold.
    lone_trials_stacked: ClassVar[bool] = False
    #: The fewest optimiser steps of an lr sweep (shorter sweeps are too noisy to read).
    lr_find_min_steps: ClassVar[int] = 100

    #: Config keys that ``nndl TASK`` takes as its own flags (key -> flag; the others are ``--set key=value``),
    #: so a tool can print the command that repeats a run.
    cli_flags: ClassVar[dict[str, str]] = {}

    #: How a run folder of this task is shown (``Run``'s summary and notebook view): its headline
    #: metrics, in order, and the figures drawn inline.
    key_metrics: ClassVar[tuple[str, ...]] = ()
    main_figures: ClassVar[tuple[str, ...]] = ("losses",)
    #: How the report names and heads a run of this task: its label ("a regression run"), the summary
    #: cards (see :func:`nndl.runfolder.report.summary_cards` for the fields of one) and the captions of
    #: the task's own figures (others have generic captions).
    label: ClassVar[str] = ""
    cards: ClassVar[tuple[dict[str, str], ...]] = ()
    captions: ClassVar[dict[str, str]] = {}

    def view(self) -> dict[str, Any]:
        """What the run folder records of this task for its readers (they never import a task)."""
        return {"task": self.name, "label": self.label or self.name, "key_metrics": list(self.key_metrics),
                "main_figures": list(self.main_figures), "cards": [dict(c) for c in self.cards],
                "captions": dict(self.captions)}

    def search_folds(self, cfg) -> int:
        """K of a search's cross-validation when ``--folds`` is not given."""
        return 3

    def search_data(self, cfg) -> Any:
        """What :meth:`cross_validate` reads in a search: the training data only, read once per process
        (None: the task reads it itself, per trial)."""
        return None

    def stack_key(self, cfg) -> Any:
        """Configs with one (hashable) key may train as one stack in :meth:`cross_validate_stacked`;
        None: ``cfg``'s folds train one by one (the task's fallback)."""
        return None

    def cross_validate_stacked(self, cfgs: list, data=None, folds: int | None = None) -> list[list[dict]]:
        """K-fold scores of each config in ``cfgs``, one list of fold dicts (as :meth:`cross_validate`'s)
        per config; configs sharing a :meth:`stack_key` train as one stack, the others one by one.
        See :attr:`stacked_trials`."""
        raise NotImplementedError(f"{self.name}: its trials do not train stacked")

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

    # -- a saved run's model: nndl predict and nndl export (nndl.tools) reach the task's parts through these
    def check_model_meta(self, path: Path, payload: dict) -> None:
        """Check the values of a ``model.pt`` payload that decide what :meth:`rebuild` builds (the file may be
        edited or forged): one :class:`~nndl.base.errors.NndlError` line naming the key, before anything is built."""

    def rebuild(self, payload: dict, path: Path, cfg, saved_config: Callable[[dict], Any]) -> Any:
        """The model of a checked ``model.pt`` payload as a :class:`~nndl.tasks.predict_base.LoadedRun` (the
        task's subclass); ``cfg`` is the saved config, ``saved_config(values)`` makes one of other values."""
        raise NndlError(f"{path}: runs of task {self.name} cannot be loaded for predictions")

    def predict_files(self, run, files: list, top: int, json: bool, table: bool) -> tuple[list[dict], str]:
        """The predictions of ``run`` (from :meth:`rebuild`) for the input ``files`` and their text: JSON with
        ``json``, a CSV table with ``table`` (the output goes to a ``.csv`` file); ``top`` classes per input."""
        raise NndlError(f"{getattr(run, 'path', run)}: runs of task {self.name} cannot predict files")

    def export_module(self, run) -> tuple[Any, Any, str, dict]:
        """What :func:`nndl.tools.export.export` writes of ``run``: the module (eval mode), an example batch of
        two inputs, the output's name and the task's metadata (str -> str)."""
        raise NndlError(f"{getattr(run, 'path', run)}: runs of task {self.name} cannot be exported")

    def notes(self, metrics: dict, fitted) -> list[str]:
        """Lines printed once after a verbose run, before any warning (e.g. how a reference model did)."""
        return []

    def warnings(self, metrics: dict, fitted) -> list[str]:
        """Lines printed once after the run (e.g. a model whose loss diverged)."""
        return []


def run_task(task: Task, cfg, *, data=None, out: str | Path | None = None, overwrite: bool = False,
             resume_dir: Path | None = None, progress: bool = True, figures: bool = True,
             echo: Callable[[str], None] = print, callbacks=None, verbose: bool = True):
    """Run ``task`` on config ``cfg`` end to end and return the :class:`~nndl.runfolder.objects.Run`.

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
    callbacks : CallbackList, optional
        Receive the run events and every model's training events (default: none).

    Raises
    ------
    TrainingInterrupted
        After a Ctrl-C: its message says what was kept and the next step (see the module docstring).
    """
    from nndl.runfolder.files import new_run_dir, seal, write_json

    from nndl.training.callbacks import CallbackList

    out = path_argument(out, "out")  # the Python API's wrong types: one line before any work
    callbacks = callbacks if callbacks is not None else CallbackList([])
    echo = function_argument(echo, "echo") or (lambda s: None)
    with task.threads(cfg):
        loaded = task.load(cfg, data)  # every input problem surfaces before anything is written
        if resume_dir is not None:  # in place: a resumed run never replaces the run it was to replace
            seal(resume_dir, keep_place=False)
            ctx = RunContext(Path(resume_dir), progress, figures, echo, callbacks, verbose, resume=True)
            return _guarded(task, cfg, loaded, ctx, fresh=False)
        ctx = RunContext(new_run_dir(out, task.name, overwrite, inputs=task.inputs(cfg), view=task.view()), progress,
                         figures, echo, callbacks, verbose)

        def start() -> None:
            write_json(ctx.run_dir / "config.json", config_mod.to_dict(cfg))
            seal(ctx.run_dir)

        return _guarded(task, cfg, loaded, ctx, fresh=True, start=start)


def _guarded(task: Task, cfg, data, ctx: RunContext, fresh: bool, start: Callable[[], None] = lambda: None):
    """The run's steps, with what a failure or an interrupt leaves: a failed new run is removed; an
    interrupted one keeps what :func:`_interrupted` says."""
    from nndl.base.errors import TrainingInterrupted
    from nndl.runfolder.files import destination, discard

    ctx.final = destination(ctx.run_dir)
    try:
        start()
        return _run(task, cfg, data, ctx)
    except KeyboardInterrupt as e:  # a Ctrl-C, or train()'s TrainingInterrupted saying what its checkpoint holds
        raise TrainingInterrupted(_interrupted(task, ctx, e, fresh)) from None
    except BaseException:
        if fresh:
            discard(ctx.run_dir)
        raise


def _interrupted(task: Task, ctx: RunContext, e: BaseException, fresh: bool) -> str:
    """Keep or remove the interrupted run in ``ctx.run_dir``; return the line saying which, and the next step."""
    from nndl.runfolder.files import discard, read_marker, seal

    run_dir, stage, final = ctx.run_dir, ctx.stage, ctx.final
    if (read_marker(final) or {}).get("state") == "complete" and (final == run_dir or not run_dir.exists()):
        return f"interrupted after the run was complete; {final} holds it"  # while printing the summary
    old = f"; {final} is unchanged and the new run is in {run_dir}" if final != run_dir else ""
    state = (read_marker(run_dir) or {}).get("state")
    tested = state in ("tested", "complete") or (state is None and (run_dir / "metrics.json").exists())
    epoch, saved = getattr(e, "epoch", None), getattr(e, "saved", None)
    if stage != "training":
        when = f"while {stage}"
    elif epoch is None:
        when = "during training"
    elif saved is not None and saved >= epoch:
        when = f"after epoch {saved}"
    else:
        when = f"during epoch {epoch}"
    if not tested and task.resume_command is None:  # nothing worth keeping: leave the folder as it was
        if fresh:
            discard(run_dir)
        return f"interrupted {when}; nothing was kept ({final} is unchanged)" if old else \
            f"interrupted {when}; nothing was kept ({run_dir} was removed)"
    seal(run_dir, keep_place=False)  # what is there now is nndl's; an interrupted run never replaces another
    checkpoint = run_dir / "checkpoint.pt"
    if tested:
        what = f"its results are written ({run_dir / 'metrics.json'}, model.pt)"
    elif stage != "training":
        what = f"training is complete ({checkpoint})"
    elif saved is not None:
        what = f"the checkpoint holds epoch {saved} ({checkpoint})"
    elif not checkpoint.exists():
        what = "before the first checkpoint"
    else:
        what = f"the checkpoint is {checkpoint}"
    if task.resume_command is None:
        return (f"interrupted {when}; {what}{old}; finish with: nndl report {run_dir} (figures not drawn yet are "
                "left out)")
    fresh_start = what == "before the first checkpoint"
    again = " (it trains from the start)" if fresh_start else ""
    return (f"interrupted {when}{', ' if fresh_start else '; '}{what}{old}; continue with: "
            f"{task.resume_command.format(run_dir=run_dir)}{again}")


def _run(task: Task, cfg, data, ctx: RunContext):
    """The skeleton's steps after the run folder exists."""
    from nndl.training.callbacks import RunInfo
    from nndl.base.fileio import interrupts_held
    from nndl.runfolder.files import environment, seal, write_json

    lines = [f"run folder: {ctx.run_dir}", *task.header(cfg, data)]
    if ctx.verbose:
        lines.append(f"resolved config:\n{config_mod.format_config(cfg)}")
    ctx.echo("\n".join(lines))
    ctx.callbacks.run_begin(RunInfo(ctx.run_dir, task.name, config_mod.to_dict(cfg)))
    ctx.stage = "training"
    fitted = task.fit(cfg, data, ctx)
    ctx.stage = "testing"
    metrics = task.test(cfg, data, fitted)
    ctx.stage = "saving the results"
    with interrupts_held():  # the results are one step: a Ctrl-C here waits for them (a second or less)
        task.save(cfg, data, fitted, ctx.run_dir)
        write_json(ctx.run_dir / "metrics.json", metrics)  # written last of the results: it marks a finished run
        write_json(ctx.run_dir / "environment.json", environment())
        seal(ctx.run_dir, "tested")
    ctx.stage = "drawing the figures"
    if ctx.figures:
        task.figures(cfg, data, fitted, ctx.run_dir / "figures")
    for line in task.notes(metrics, fitted) if ctx.verbose else ():  # results beside the summary: verbose only
        ctx.echo(line)
    for line in task.warnings(metrics, fitted):
        ctx.echo(f"WARNING: {line}")
    ctx.stage = "writing the report"
    return _finish(ctx.run_dir, task.name, metrics, ctx.callbacks, ctx.echo, ctx.verbose)


def _finish(run_dir: Path, task: str, metrics: dict, cbs, echo: Callable[[str], None], verbose: bool) -> "Run":
    """End a regress/classify run: the callbacks' run end (TensorBoard adds the figures and closes),
    the report and the printed summary (:func:`nndl.runfolder.report.finish_run`), then a :class:`Run`."""
    from nndl.training.callbacks import RunInfo, TensorBoard
    from nndl.runfolder.report import finish_run
    from nndl.runfolder.objects import Run
    from nndl.runfolder.files import destination, read_json

    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json") if (run_dir / "config.json").exists() else {}
    cbs.run_end(RunInfo(run_dir, task, config, metrics))
    for cb in cbs:
        if isinstance(cb, TensorBoard) and cb.log_dir is not None:
            log_dir = Path(cb.log_dir)  # in the run folder: where it will be once the run is in its place
            shown = destination(run_dir) / log_dir.relative_to(run_dir) if run_dir in log_dir.parents else log_dir
            echo(f"tensorboard: tensorboard --logdir {shown}")
    metrics = dict(finish_run(run_dir, metrics, echo if verbose else (lambda s: None)))
    final = Path(metrics.pop("run_dir"))
    return Run(final, metrics)
