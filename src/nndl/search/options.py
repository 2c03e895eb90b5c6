"""What a search is asked to do (:class:`TuneOptions`) and what it resolved to (:class:`Plan`)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nndl.base.errors import NndlError, function_argument, path_argument
from nndl.search.storage import is_url, mask_url
from nndl.tasks import get_task, task_names

if TYPE_CHECKING:
    from nndl.search.objective import Objective
    from nndl.search.space import Space

SAMPLERS, PRUNERS = ("grid", "random", "tpe"), ("none", "median", "hyperband", "wilcoxon")
NOT_IN_PRESET = {"time_limit"}  # a tuning guard, not part of the configuration found
# The types of the options given in Python (the CLI's parser gives these already); None is always allowed.
_TYPES: dict[str, tuple[type, ...]] = {
    **{name: (str,) for name in ("sampler", "pruner", "preset", "study", "storage")},
    **{name: (int,) for name in ("trials", "folds", "workers", "heartbeat", "worker_index", "batch_trials")},
    **{name: (bool,) for name in ("worker_only", "allow_changes", "figures", "retrain")},
    "timeout_per_trial": (int, float),
}


@dataclasses.dataclass
class TuneOptions:
    """The options of :func:`nndl.tune` (each is also a keyword of ``tune`` and a flag of ``nndl tune``).

    What is searched and how
        ``sampler`` ({"grid", "random", "tpe"}; default grid when the space has only ``[grid]``,
        else TPE), ``trials`` (total of the study over all workers and reruns; default the grid
        size, or 20), ``folds`` (K; default the config's ``folds`` for regress, 3 for classify),
        ``pruner`` ({"none", "median", "hyperband", "wilcoxon"}).
    The config each trial starts from
        ``preset``, ``overrides``, ``seed`` as for :func:`nndl.regress` / :func:`nndl.classify`
        (the space's ``[fixed]`` comes after ``preset``, ``overrides`` after that);
        ``timeout_per_trial``: seconds of training after which a trial stops and FAILs.
    Where the study lives and who runs it
        ``study`` (name; default ``TASK-SPACESTEM``, or the one already in ``out``), ``storage``
        (a database URL or a journal file path; default ``journal.log`` in the study folder;
        checked before anything is written; passwords are masked in output), ``repair_journal``
        (drop a journal's last line when a crash cut it short, keeping the damaged file), ``out``
        (study folder; default ``runs/tune-TASK-TIMESTAMP``; reusing it resumes its study), ``workers`` (processes on this machine: this one plus ``workers - 1``
        started here), ``heartbeat`` (RDB storage: seconds between heartbeats; a trial is lost
        after 3 silent intervals), ``worker_only`` (only run trials, write no outputs: for extra
        processes, here or on other machines), ``worker_index`` (set for the workers a run
        starts), ``batch_trials`` (each worker claims this many trials at a time and
        those whose configs share a network -- the task's ``stack_key``: regression with ``batched``,
        classification MLPs without augmentation -- train as one stacked model of all their folds,
        with the same results as one by one; the others train one by one), ``allow_changes`` (resume a study in ``out`` even though
        its space, preset, overrides, seed or folds differ from those it was started with).
    Outputs
        ``figures`` (write the study figures), ``retrain`` (retrain the best config on all
        training data and test it once), ``echo`` (where progress lines go).
    """

    sampler: str | None = None
    trials: int | None = None
    folds: int | None = None
    pruner: str = "none"
    preset: str | None = None
    overrides: dict[str, Any] | list[str] | None = None
    seed: int | None = None
    timeout_per_trial: float | None = None
    study: str | None = None
    storage: str | None = None
    repair_journal: bool = False
    out: str | Path | None = None
    workers: int = 1
    heartbeat: int = 10
    worker_only: bool = False
    worker_index: int | None = None
    batch_trials: int = 1
    allow_changes: bool = False
    figures: bool = True
    retrain: bool = True
    echo: Callable[[str], None] = print

    def check(self, task: str) -> None:
        """The checks that need no space file: one line naming the option and the fix."""
        if not isinstance(task, str) or task not in task_names():
            raise NndlError(f"unknown task {task!r}: choose one of {', '.join(task_names())}")
        for name, kinds in _TYPES.items():
            value = getattr(self, name)
            if value is not None and (not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool))):
                wanted = " or ".join(k.__name__ for k in kinds)
                raise NndlError(f"{name} = {value!r:.60}: expected {wanted}")
        path_argument(self.out, "out")
        function_argument(self.echo, "echo")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise NndlError(f"--sampler {self.sampler}: choose one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise NndlError(f"--pruner {self.pruner}: choose one of {', '.join(PRUNERS)}")
        if ((self.trials is not None and self.trials < 1) or self.workers < 1 or self.batch_trials < 1
                or (self.folds is not None and self.folds < 2)):
            raise NndlError("--trials, --workers and --batch-trials must be >= 1, --folds >= 2")
        if self.heartbeat < 1:
            raise NndlError(f"--heartbeat {self.heartbeat}: must be >= 1 (seconds between the heartbeats a "
                            "database storage gets from each running trial)")
        if self.batch_trials > 1 and not get_task(task).stacked_trials:
            raise NndlError(f"--batch-trials stacks trials that share a network, which {task} cannot; leave it at 1 "
                            "(use --workers)")


@dataclasses.dataclass
class Plan:
    """A search resolved from its options: the space, the sampler, the trial budget, the objective,
    the study's name, folder and storage."""

    task: str
    space: Space
    sampler: str
    n_total: int
    folds: int  # K as the trials use it
    objective: Objective
    name: str
    folder: Path | None
    storage: str | None  # the URL as given (None: the journal file)
    journal: Path | None

    @property
    def direction(self) -> str:
        return get_task(self.task).direction

    @property
    def metric(self) -> str:
        """What trials are ranked by (the task's validation metric)."""
        return get_task(self.task).val_metric

    @property
    def test_metric(self) -> str:
        """What the retrained best config is reported by."""
        return get_task(self.task).test_metric

    @property
    def where(self) -> str:
        """The storage as printed and saved: a URL with its password masked, or the journal path."""
        return mask_url(self.storage) if is_url(self.storage) else str(self.journal)
