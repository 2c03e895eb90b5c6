"""The Optuna internals nndl's search relies on, each checked against the installed Optuna.

Every private symbol is reached through ``nndl.search.optuna_shim``; when an Optuna release
renames, drops or changes one, a test here fails with a message that names the symbol
(``optuna X.Y: optuna.storages._heartbeat.get_heartbeat_thread ...``), rather than a search
failing mid-study for a user.
"""
import contextlib
import time
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from nndl.search import optuna_shim as shim

optuna.logging.set_verbosity(optuna.logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@contextlib.contextmanager
def relies_on(symbol: str):
    """Turn any failure inside into one that names the Optuna symbol and version."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - whatever changed, say which symbol it was
        pytest.fail(f"optuna {optuna.__version__} changed {symbol}: {type(e).__name__}: {e}", pytrace=True)


def rdb_study(tmp_path, heartbeat=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        kwargs = dict(heartbeat_interval=heartbeat, grace_period=heartbeat,
                      heartbeat_stale_trial_callback=shim.retry_callback()) if heartbeat else {}
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}", **kwargs)
    return optuna.create_study(study_name="s", storage=storage), storage


def test_every_module_level_symbol_is_there():
    problems = shim.check()
    assert not problems, f"optuna {optuna.__version__}: " + "; ".join(problems)
    shim.require()


def test_study_storage_and_trial_id_read_a_trial_back(tmp_path):
    study, _ = rdb_study(tmp_path)
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    with relies_on(shim.STUDY_STORAGE):  # the storage given, or Optuna's cache in front of it
        assert isinstance(shim.storage_of(study), optuna.storages.BaseStorage)
    with relies_on(shim.TRIAL_ID):
        assert isinstance(shim.trial_id(trial), int)
        frozen = shim.stored_trial(study, trial)
    assert frozen.number == trial.number and frozen.state == TrialState.RUNNING and "x" in frozen.params, \
        f"{shim.TRIAL_ID} no longer names the asked trial in {shim.STUDY_STORAGE}"


def test_heartbeat_thread_beats_and_a_silent_trial_is_failed_and_retried(tmp_path):
    study, _ = rdb_study(tmp_path, heartbeat=1)
    with shim.asking_outside_optimize():
        trial = study.ask()
    trial.suggest_int("n", 1, 9)
    with relies_on(shim.HEARTBEAT_THREAD):
        with shim.heartbeat(study, trial):
            pass  # one beat at start; then the trial goes silent, as with a SIGKILLed worker
    deadline = time.monotonic() + 120  # only ends a hang: we wait for the state, not for a time
    with relies_on(shim.FAIL_STALE):
        while study.trials[trial.number].state == TrialState.RUNNING:
            assert time.monotonic() < deadline, f"{shim.FAIL_STALE} never failed a silent trial"
            time.sleep(0.5)
            shim.fail_stale_trials(study)
    trials = study.trials
    assert trials[trial.number].state == TrialState.FAIL
    retries = [t for t in trials if t.state == TrialState.WAITING]
    assert len(retries) == 1, f"{shim.RETRY_CALLBACK} as the storage's stale-trial callback queued no retry"
    with relies_on(shim.RETRY_HISTORY):
        assert shim.retry_history(retries[0]) == [trial.number]
    assert retries[0].params == trials[trial.number].params


def test_heartbeat_is_a_no_op_on_the_journal_file(tmp_path):
    with relies_on(shim.JOURNAL_FILE):
        study = optuna.create_study(storage=shim.journal_storage(str(tmp_path / "journal.log")))
    trial = study.ask()
    with relies_on(shim.HEARTBEAT_THREAD):
        with shim.heartbeat(study, trial):
            pass
    study.tell(trial, 1.0)
    assert study.trials[0].state == TrialState.COMPLETE


def test_queue_retry_records_the_lost_attempt():
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_categorical("c", ["a", "b"])
    study.tell(trial, state=TrialState.FAIL)
    with relies_on(shim.RETRY_CALLBACK):
        shim.queue_retry(study, study.trials[0])
        shim.queue_retry(study, study.trials[1])  # max_retry=1: a retry of a retry is not queued
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    retry = study.trials[1]
    with relies_on(shim.RETRY_HISTORY):
        assert shim.retry_history(retry) == [0] and shim.retry_history(study.trials[0]) == []
    # the tests of `nndl tune` and the trials.csv retry column read the same attribute
    assert retry.system_attrs.get("retry_history") == [0], f"{shim.RETRY_HISTORY}: the system attribute moved"


def test_grid_sampler_stop_after_tell_outside_optimize_is_recognised():
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [1]}))
    trial = study.ask()
    trial.suggest_categorical("x", [1])
    try:
        study.tell(trial, 0.5)
    except RuntimeError as e:
        assert shim.is_grid_stop(e), (f"optuna {optuna.__version__}: the error of Study.stop outside optimize "
                                      f"no longer contains {shim.GRID_STOP_MESSAGE!r}: {e}")
    # whether or not tell raised, the trial's state is stored
    assert shim.stored_trial(study, trial).state == TrialState.COMPLETE


def test_heartbeat_warning_outside_optimize_is_the_one_we_hide(tmp_path):
    study, _ = rdb_study(tmp_path, heartbeat=5)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        study.ask()
    about_heartbeat = [str(w.message) for w in seen if "heartbeat" in str(w.message).lower()]
    assert all(shim.HEARTBEAT_WARNING in m for m in about_heartbeat), \
        f"optuna {optuna.__version__}: the ask() warning changed its text: {about_heartbeat}"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with shim.asking_outside_optimize():
            study.ask()
    assert not [w for w in seen if "heartbeat" in str(w.message).lower()]


def test_a_changed_symbol_fails_loudly_with_its_name(monkeypatch):
    import optuna.storages._heartbeat as heartbeat_module

    monkeypatch.delattr(heartbeat_module, "get_heartbeat_thread")
    assert shim.check() == [f"{shim.HEARTBEAT_THREAD} is missing"]
    with pytest.raises(shim.OptunaChanged, match=r"optuna \S+: optuna\.storages\._heartbeat\.get_heartbeat_thread"):
        shim.require()
    study = optuna.create_study()
    with pytest.raises(shim.OptunaChanged, match="get_heartbeat_thread"):
        shim.heartbeat(study, study.ask())
    with pytest.raises(shim.OptunaChanged, match=r"optuna\.study\.Study\._storage"):
        shim.storage_of(object())


def test_journal_records_replay_in_memory_and_the_culprit_is_named(tmp_path):
    import json

    path = tmp_path / "journal.log"
    study = optuna.create_study(study_name="s", storage=shim.journal_storage(str(path)))
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=2)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    with relies_on(shim.JOURNAL_BACKEND):
        assert shim.first_unreplayable(records) is None
        index, error = shim.first_unreplayable(records[:2] + [{"op_code": 4, "worker_id": "w"}] + records[2:])
    assert index == 2 and isinstance(error, KeyError), f"{shim.JOURNAL_BACKEND}: replay no longer reads lazily"


def test_journal_lock_is_a_file_beside_the_journal_while_held(tmp_path):
    """The lock nndl reads a journal under is the one its writers append under (journal_storage passes it)."""
    import os

    path = str(tmp_path / "journal.log")
    with relies_on(shim.JOURNAL_LOCK):
        lock = shim.journal_lock(path)
        lock.acquire()
        held = os.path.lexists(path + ".lock")
        lock.release()
    assert held and not os.path.lexists(path + ".lock"), f"{shim.JOURNAL_LOCK} no longer locks with JOURNAL.lock"
