"""Every use nndl makes of Optuna's private or undocumented behaviour, and nothing else.

The search needs a few things Optuna keeps to itself: the per-trial heartbeat thread that
``Study.optimize`` starts (batched trials run outside ``optimize`` and must beat themselves),
a study's storage and a trial's storage id (to read a trial back after ``tell``), the
``retry_history`` of a retried trial, the message of the ``Study.stop`` error a GridSampler
raises after its last point, the text of the "heartbeat outside optimize" warning, the journal
file's writer lock, and replaying journal records in memory to validate a journal before opening it.

They are reached only through the functions below. When an installed Optuna renames or drops
one, the call raises :class:`OptunaChanged` naming the symbol and the Optuna version, and
``tests/test_optuna_shim.py`` fails on the same symbol before any user sees it.
"""
from __future__ import annotations

import contextlib
import importlib
import warnings
from typing import Any, Iterator

import optuna

from nndl.base.errors import NndlError

HEARTBEAT_THREAD = "optuna.storages._heartbeat.get_heartbeat_thread"
STUDY_STORAGE = "optuna.study.Study._storage"
TRIAL_ID = "optuna.trial.Trial._trial_id"
RETRY_HISTORY = "optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history"
RETRY_CALLBACK = "optuna.storages.RetryHeartbeatStaleTrialCallback"
FAIL_STALE = "optuna.storages.fail_stale_trials"
JOURNAL_FILE = "optuna.storages.journal.JournalFileBackend"
JOURNAL_LOCK = "optuna.storages.journal.JournalFileSymlinkLock"
JOURNAL_BACKEND = "optuna.storages.journal.BaseJournalBackend"
# Matched by text: Optuna gives neither its own class.
GRID_STOP_MESSAGE = "Study.stop"  # RuntimeError from a GridSampler's study.stop() after tell() outside optimize
HEARTBEAT_WARNING = "Heartbeat of storage"  # study.ask() on a heartbeat storage outside optimize


class OptunaChanged(NndlError):
    """The installed Optuna no longer has something nndl's search relies on."""

    def __init__(self, symbol: str, why: str = "is missing"):
        super().__init__(f"optuna {optuna.__version__}: {symbol} {why}; nndl's search needs it "
                         "(see nndl/search/optuna_shim.py): install an Optuna version nndl supports")
        self.symbol = symbol


def _resolve(symbol: str) -> Any:
    """``package.module.name[.attr]`` looked up (importing a submodule where needed), or
    :class:`OptunaChanged` naming it. Attribute lookups first: this runs for every trial."""
    parts = symbol.split(".")
    obj = importlib.import_module(parts[0])
    for i, name in enumerate(parts[1:], start=2):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                raise OptunaChanged(symbol) from None
    return obj


def _attribute(obj: Any, name: str, symbol: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise OptunaChanged(symbol) from None


def storage_of(study: optuna.Study):
    """The storage object behind ``study`` (``study._storage``)."""
    return _attribute(study, "_storage", STUDY_STORAGE)


def trial_id(trial: optuna.Trial) -> int:
    """The storage's id of an asked trial (``trial._trial_id``; not its ``number``)."""
    return _attribute(trial, "_trial_id", TRIAL_ID)


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> contextlib.AbstractContextManager:
    """A context in which ``trial`` sends heartbeats, as inside ``study.optimize``; a no-op where the
    storage has none (the journal file)."""
    return _resolve(HEARTBEAT_THREAD)(trial_id(trial), storage_of(study))


def stored_trial(study: optuna.Study, trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The trial as its storage holds it now."""
    return storage_of(study).get_trial(trial_id(trial))


def retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    """Numbers of the lost attempts this trial retries (empty for a first attempt)."""
    with warnings.catch_warnings():  # an experimental function: it warns on every call
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return list(_resolve(RETRY_HISTORY)(trial))


def queue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue one retry of a lost trial (same params; its history records the lost attempt)."""
    retry_callback()(study, trial)


def retry_callback():
    """The callback an RDB storage runs for a trial failed by heartbeat: queue one retry."""
    return _resolve(RETRY_CALLBACK)(max_retry=1)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose heartbeat stopped (RDB storage); each queues its retry."""
    _resolve(FAIL_STALE)(study)


def journal_storage(path: str) -> optuna.storages.BaseStorage:
    """A journal-file storage at ``path``, appending under :func:`journal_lock`."""
    return optuna.storages.JournalStorage(_resolve(JOURNAL_FILE)(path, lock_obj=journal_lock(path)))


def journal_lock(path: str):
    """The lock every writer of the journal at ``path`` holds while it appends (``acquire``/``release``):
    a reader holding it never sees a record half-written."""
    return _resolve(JOURNAL_LOCK)(path)


def first_unreplayable(records: list[dict]) -> tuple[int, Exception] | None:
    """(index, error) of the first journal record Optuna cannot replay, or None when all replay.

    The records are replayed in memory by Optuna's own ``JournalStorage``, from a backend that
    hands them out one at a time and refuses to append: the record being replayed when it raises is
    the culprit. Relies on ``JournalStorage`` reading its backend lazily, in order.
    """
    class ReadOnly(_resolve(JOURNAL_BACKEND)):
        handed_out = 0

        def read_logs(self, log_number_from: int):
            for i in range(log_number_from, len(records)):
                self.handed_out = i + 1
                yield records[i]

        def append_logs(self, logs) -> None:
            raise RuntimeError("a journal under validation is read-only")

    backend = ReadOnly()
    try:
        optuna.storages.JournalStorage(backend).get_all_studies()
    except Exception as e:  # noqa: BLE001 - whatever Optuna fails on, the record is not one it can use
        return max(backend.handed_out - 1, 0), e
    return None


def is_grid_stop(error: RuntimeError) -> bool:
    """Whether ``error`` is the GridSampler's "study.stop() outside optimize" after its last point.

    Optuna documents that ``tell`` stores the trial's state before that error, so it can be ignored.
    """
    return GRID_STOP_MESSAGE in str(error)


@contextlib.contextmanager
def asking_outside_optimize() -> Iterator[None]:
    """``study.ask()`` for trials that beat their own heartbeat (see :func:`heartbeat`): without
    Optuna's warning that heartbeats are meant for ``optimize``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=HEARTBEAT_WARNING)
        yield


def check() -> list[str]:
    """Problems with the module-level symbols above in the installed Optuna; empty when all is well.

    (The instance attributes and the message texts need a study to check: see the tests.)
    """
    problems = []
    for symbol in (HEARTBEAT_THREAD, RETRY_HISTORY, RETRY_CALLBACK, FAIL_STALE, JOURNAL_FILE, JOURNAL_LOCK,
                   JOURNAL_BACKEND):
        try:
            if not callable(_resolve(symbol)):
                problems.append(f"{symbol} is not callable")
        except OptunaChanged:
            problems.append(f"{symbol} is missing")
    return problems


def require() -> None:
    """Raise :class:`OptunaChanged` before a search starts if a symbol it needs is gone."""
    problems = check()
    if problems:
        symbol, _, why = problems[0].partition(" ")
        raise OptunaChanged(symbol, why)
