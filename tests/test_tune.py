"""nndl tune: search spaces, failure handling, outputs, resume, local workers and PostgreSQL workers.

Trials are tiny (100 rows, tens of epochs; a 1500-image Fashion-MNIST subset) so the
file runs in well under three minutes on two cores. A "slow" trial (100 000 epochs)
is only ever started to be killed.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings

import optuna
import pytest

import nndl
from nndl import cli
from nndl.base import config
from nndl.base.errors import NndlError
from nndl.search import driver_url, load_space, mask_url, to_toml

from conftest import INTERRUPTED_CODES, ROOT, needs_fashion, run_cli

PG_URL = os.environ.get("NNDL_TEST_PG_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="NNDL_TEST_PG_URL unset: start a server with "
                              "`export NNDL_TEST_PG_URL=$(bash scripts/start-postgres.sh)`")
QUIET = dict(echo=lambda s: None)
REGRESS_SPACE = """
[fixed]
epochs = 100
[params.lr]
type = "log-float"
low = 1e-3
high = 1e-1
[params.hidden]
type = "categorical"
choices = ["16", "32,32"]
"""
SLOW = "epochs=100000"  # minutes per trial: only started in order to be killed
# Seconds per trial: six of them outlast a second worker's start-up (a new Python process importing
# torch), so both processes run trials however fast the machine is.
TRIAL_FOR_TWO = "epochs=6000"

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(REGRESS_SPACE)
    return path


def tune_cli(space, out, *extra, check=None):
    return run_cli("tune", "regress", "--space", space, "--sampler", "random", "--folds", 3, "--out", out, *extra,
                   check=check)


def _interruptible() -> None:
    # A test runner started in the background of a non-interactive shell (as CI may be) has SIGINT
    # ignored, and children inherit that: the `nndl` under test would never see our "Ctrl-C". At a
    # terminal SIGINT is not ignored, so give the child the default disposition a terminal gives.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nndl.cli", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_interruptible,
                            start_new_session=True)  # only our own signals reach it, not the test session's


def load(study_name, storage):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" not in str(storage):
        storage = JournalStorage(JournalFileBackend(str(storage)))
    return optuna.load_study(study_name=study_name, storage=driver_url(storage) if isinstance(storage, str) else storage)


def wait_running(study_name, storage, proc, timeout=90):
    """Block until the study has a RUNNING trial (the worker is mid-trial)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if any(t.state.name == "RUNNING" for t in load(study_name, storage).trials):
                time.sleep(1.0)
                return
        except (KeyError, FileNotFoundError, ValueError):  # study not created yet
            pass
        time.sleep(0.3)
    raise AssertionError("no trial started")


def read_trials(folder):
    with open(folder / "trials.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def counted_states(study):
    retried = {n for t in study.trials for n in t.system_attrs.get("retry_history", [])}
    return [t.state.name for t in study.trials if t.number not in retried]


# ----------------------------------------------------------------------------------------------- inputs
def test_space_files_parse_and_validate(tmp_path):
    grid = load_space(ROOT / "examples/spaces/fashion_grid.toml", "classify")
    assert grid.grid == {"lr": [0.001, 0.01, 0.02], "max_epochs": [10, 20, 30]} and grid.grid_size == 9
    assert grid.preset == "mlp" and not grid.params
    reg = load_space(ROOT / "examples/spaces/regress.toml", "regress")
    assert {"lr", "hidden", "activation", "weight_decay", "epochs"} <= set(reg.params)
    rates = load_space(ROOT / "examples/spaces/regress_rates.toml", "regress")
    assert set(rates.params) == {"lr", "weight_decay", "epochs", "schedule"} and rates.preset == "seed"

    bad = tmp_path / "bad.toml"
    bad.write_text('[params.lr]\ntype = "float"\nlow = 0.1\nhigh = 1.0\n[params.learning_rat]\ntype = "float"\n'
                   "low = 0.1\nhigh = 1.0\n")
    with pytest.raises(NndlError, match=r"bad\.toml.*learning_rat.*unknown config key"):
        load_space(bad, "regress")
    bad.write_text('[grid]\nepochs = [1.5, 2]\n')  # epochs is an int field
    with pytest.raises(NndlError, match="epochs"):
        load_space(bad, "regress")


def test_mask_url_and_toml_writer(tmp_path):
    assert mask_url("postgresql://bob:s3cr:et@db.example:5432/x") == "postgresql://bob:***@db.example:5432/x"
    assert mask_url("postgresql://postgres@127.0.0.1:54329/nndl_test") == "postgresql://postgres@127.0.0.1:54329/nndl_test"
    assert driver_url("sqlite:///x.db") == "sqlite:///x.db"
    values = {"task": "classify", "lr": 1e-05, "hidden": [64, 64], "dropout": [0.1, 0.0], "flip": True,
              "data": 'C:\\data "x"', "epochs": 3}
    path = tmp_path / "p.toml"
    path.write_text(to_toml(values, "a header\nover two lines"))
    back = config.read_preset_file(path)
    assert back == {k: v for k, v in values.items() if k != "task"}


@pytest.mark.parametrize("content, extra, message", [
    ("[params.nope]\ntype = 'float'\nlow = 0\nhigh = 1\n", [], "unknown config key 'nope'"),
    ("[params.lr\ntype = 'float'", [], "not valid TOML"),
    (REGRESS_SPACE, ["--sampler", "bayes"], "--sampler bayes"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, content, extra, message):
    path = tmp_path / "s.toml"
    path.write_text(content)
    code = cli.main(["tune", "regress", "--space", str(path), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # nothing written for bad input


# ----------------------------------------------------------------------------------------------- search
def test_regress_random_search_writes_every_artefact(tmp_path, space):
    out = tmp_path / "study"
    s = nndl.tune("regress", space, sampler="random", trials=4, folds=3, out=out, **QUIET)
    assert s["ok"] and s["counts"] == {"COMPLETE": 4} and s["trials"] == 4
    for name in ["trials.csv", "study.json", "best_preset.toml", "journal.log", "best/metrics.json",
                 "best/model.pt", "figures/history.png", "figures/importances.png", "figures/slices.png",
                 "figures/parallel_coordinate.png"]:
        assert (out / name).exists(), name
    rows = read_trials(out)
    assert [r["state"] for r in rows] == ["COMPLETE"] * 4 and all(r["params_lr"] for r in rows)
    summary = json.loads((out / "study.json").read_text())
    assert summary["best"]["value"] == min(float(r["value"]) for r in rows)
    best_metrics = json.loads((out / "best/metrics.json").read_text())
    assert summary["best_run"]["test_mse"] == pytest.approx(best_metrics["test_mse"])

    # The preset runs as is with the CLI and reproduces the trial's cross-validation score.
    run_cli("regress", "--preset", out / "best_preset.toml", "--out", tmp_path / "rerun", "--no-figures",
            "--no-progress", check=0)
    rerun = json.loads((tmp_path / "rerun/metrics.json").read_text())
    assert rerun["val_mse"] == pytest.approx(summary["best"]["value"], rel=1e-3)
    assert rerun["folds"] == 3


def test_nan_space_fails_every_trial_loudly(tmp_path):
    path = tmp_path / "nan.toml"
    path.write_text('[fixed]\noptimizer = "sgd"\nepochs = 20\n[params.lr]\ntype = "log-float"\nlow = 1e6\n'
                    "high = 1e8\n")
    proc = tune_cli(path, tmp_path / "s", "--trials", 3, check=3)
    assert "FAILED" in proc.stdout and "NO best" in proc.stdout
    rows = read_trials(tmp_path / "s")
    assert len(rows) == 3 and all(r["state"] == "FAIL" and "learning rate" in r["fail_reason"] for r in rows)
    assert all(r["value"] == "" for r in rows)
    summary = json.loads((tmp_path / "s/study.json").read_text())
    assert summary["best"] is None and summary["ok"] is False and summary["counts"] == {"FAIL": 3}
    assert not (tmp_path / "s/best_preset.toml").exists()


@needs_fashion
def test_reference_grid_on_fashion_subset_beats_chance(tmp_path):
    path = tmp_path / "grid.toml"
    # The reference grid's shape (lr x max_epochs, 3-fold CV) scaled down to a 1500-image subset.
    path.write_text('preset = "mlp"\n[fixed]\nsubset = 1500\ntest_subset = 2000\nbatch_size = 64\n'
                    "[grid]\nlr = [0.001, 0.01, 0.02]\nmax_epochs = [1, 2]\n")
    s = nndl.tune("classify", path, folds=3, out=tmp_path / "s", **QUIET)
    assert s["sampler"] == "grid" and s["counts"] == {"COMPLETE": 6} and s["ok"]
    rows = read_trials(tmp_path / "s")
    seen = {(float(r["params_lr"]), int(r["params_max_epochs"])) for r in rows}
    assert seen == {(lr, e) for lr in (0.001, 0.01, 0.02) for e in (1, 2)}  # the whole grid, once each
    assert s["best"]["value"] > 0.5  # chance is 0.1
    assert s["best_run"]["test_accuracy"] > 0.5
    best = config.read_preset_file(tmp_path / "s/best_preset.toml")
    assert best["epochs"] == s["best"]["params"]["max_epochs"] and best["subset"] == 1500


@pytest.mark.parametrize("pruner", ["median", "hyperband", "wilcoxon"])
def test_pruners_see_one_value_per_fold(tmp_path, space, pruner):
    s = nndl.tune("regress", space, sampler="random", trials=5, folds=3, pruner=pruner, out=tmp_path / "s",
                  overrides=["epochs=30"], retrain=False, figures=False, **QUIET)
    assert s["trials"] == 5 and set(s["counts"]) <= {"COMPLETE", "PRUNED"}
    study = load("regress-space", tmp_path / "s/journal.log")
    for t in study.trials:
        if t.state.name == "COMPLETE":
            assert sorted(t.intermediate_values) == [0, 1, 2]
            assert len(t.user_attrs["fold_values"]) == 3
        else:
            assert "pruned" in t.user_attrs["fail_reason"]


def test_timeout_per_trial_fails_the_trial(tmp_path, space):
    s = nndl.tune("regress", space, sampler="random", trials=1, folds=3, out=tmp_path / "s", overrides=[SLOW],
                  timeout_per_trial=0.3, retrain=False, figures=False, **QUIET)
    assert s["counts"] == {"FAIL": 1} and not s["ok"] and s["best"] is None
    assert "time limit" in read_trials(tmp_path / "s")[0]["fail_reason"]


# ----------------------------------------------------------------------------------------------- resume, workers
def test_resume_after_interrupt_counts_trials_for_the_whole_study(tmp_path, space):
    out = tmp_path / "s"
    nndl.tune("regress", space, sampler="random", trials=2, folds=3, out=out, **QUIET)
    proc = popen_cli("tune", "regress", "--space", space, "--sampler", "random", "--folds", 3, "--out", out,
                     "--trials", 4, "--set", SLOW, "--allow-changes")  # slow trials, only to interrupt one
    wait_running("regress-space", out / "journal.log", proc)
    proc.send_signal(signal.SIGINT)  # Ctrl-C mid-trial
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode in INTERRUPTED_CODES and "resume" in output, output

    s = nndl.tune("regress", space, sampler="random", trials=4, folds=3, out=out, **QUIET)  # the same command
    assert s["counts"] == {"COMPLETE": 4} and s["lost_and_retried"] == 1
    study = load("regress-space", out / "journal.log")
    assert len(study.trials) == 5 and counted_states(study) == ["COMPLETE"] * 4
    interrupted = [r for r in read_trials(out) if r["state"] == "FAIL"]
    assert len(interrupted) == 1 and "interrupted" in interrupted[0]["fail_reason"]


def test_journal_sigkilled_run_resumes(tmp_path, space):
    out = tmp_path / "s"
    proc = popen_cli("tune", "regress", "--space", space, "--sampler", "random", "--folds", 3, "--out", out,
                     "--trials", 2, "--set", SLOW)
    wait_running("regress-space", out / "journal.log", proc)
    proc.kill()
    proc.wait()
    s = nndl.tune("regress", space, sampler="random", trials=2, folds=3, out=out, allow_changes=True, **QUIET)
    assert s["counts"] == {"COMPLETE": 2} and s["lost_and_retried"] == 1
    lost = [r for r in read_trials(out) if r["state"] == "FAIL"]
    assert len(lost) == 1 and "worker lost" in lost[0]["fail_reason"]


def test_study_folder_refuses_other_settings_unless_allowed(tmp_path, space):
    out = tmp_path / "s"
    nndl.tune("regress", space, sampler="random", trials=1, folds=3, out=out, retrain=False, figures=False, **QUIET)
    other = tmp_path / "other.toml"
    other.write_text(REGRESS_SPACE.replace('"16", "32,32"', '"8", "64"'))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    for kwargs, what in [({}, "space"), ({"overrides": ["weight_decay=0.1"]}, "overrides"),
                         ({"preset": "smooth"}, "preset"), ({"seed": 7}, "seed")]:
        with pytest.raises(NndlError, match=f"started with another {what}"):
            nndl.tune("regress", other if what == "space" else space, sampler="random", trials=2, folds=3,
                      out=out, **kwargs, **QUIET)
    with pytest.raises(NndlError, match="another folds"):
        nndl.tune("regress", space, sampler="random", trials=2, folds=4, out=out, **QUIET)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    s = nndl.tune("regress", space, sampler="random", trials=2, folds=3, out=out, retrain=False, figures=False,
                  **QUIET)  # the same settings resume it
    assert s["counts"] == {"COMPLETE": 2}


def test_study_outputs_never_hold_a_password(tmp_path, space, monkeypatch):
    """The command line recorded in best/environment.json and report.html has the password masked."""
    import sys as _sys

    secret = "postgresql://nndl:hunter2@127.0.0.1:1/none"
    monkeypatch.setattr(_sys, "argv", ["nndl", "tune", "regress", "--storage", secret])
    nndl.tune("regress", space, sampler="random", trials=1, folds=3, out=tmp_path / "s", **QUIET)
    texts = [p.read_text(errors="replace") for p in (tmp_path / "s").rglob("*") if p.is_file()
             and p.suffix in (".json", ".html", ".csv", ".toml", ".log")]
    assert texts and not any("hunter2" in t for t in texts)
    assert any("nndl:***@127.0.0.1" in t for t in texts)


def _wait_for(condition, what: str, timeout: float = 300.0) -> None:
    """Poll ``condition()`` until true: an event, not a tight wall-clock budget (the limit only ends a hang)."""
    t0 = time.time()
    while not condition():
        assert time.time() - t0 < timeout, f"gave up waiting for {what}"
        time.sleep(0.3)


def _running_workers(out) -> list[int]:
    try:
        trials = load("regress-space", out / "journal.log").trials
    except (KeyError, FileNotFoundError, ValueError):
        return []
    return [int(t.user_attrs["worker"].rpartition(":")[2]) for t in trials
            if t.state.name == "RUNNING" and t.user_attrs.get("worker")]


@pytest.mark.parametrize("how", ["sigkill", "ctrl-c"])
def test_local_workers_stop_with_their_parent_and_mark_trials_interrupted(tmp_path, space, how):
    from nndl.search import _alive

    out = tmp_path / "s"
    proc = popen_cli("tune", "regress", "--space", space, "--sampler", "random", "--folds", 3, "--out", out,
                     "--trials", 4, "--workers", 2, "--set", SLOW)
    _wait_for(lambda: len(_running_workers(out)) == 2 or proc.poll() is not None, "two workers mid-trial")
    pids = _running_workers(out)
    child = next(pid for pid in pids if pid != proc.pid)
    if how == "sigkill":
        proc.kill()  # no cleanup in the parent at all: the worker must notice on its own
    else:
        proc.send_signal(signal.SIGINT)
    proc.communicate()
    _wait_for(lambda: not _alive(child), "the worker to stop")
    trials = load("regress-space", out / "journal.log").trials
    by_worker = {int(t.user_attrs["worker"].rpartition(":")[2]): t for t in trials if t.user_attrs.get("worker")}
    assert by_worker[child].state.name == "FAIL"
    assert "interrupted" in by_worker[child].user_attrs.get("fail_reason", "")
    if how == "ctrl-c":
        assert proc.returncode in INTERRUPTED_CODES and "interrupted" in by_worker[proc.pid].user_attrs.get("fail_reason", "")


def test_other_study_folder_is_never_reused(tmp_path, space):
    nndl.tune("regress", space, sampler="random", trials=1, folds=3, out=tmp_path / "s", retrain=False,
              figures=False, **QUIET)
    with pytest.raises(NndlError, match="--study regress-space"):
        nndl.tune("regress", space, study="other", trials=1, out=tmp_path / "s", **QUIET)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain/file.txt").write_text("x")
    with pytest.raises(NndlError, match="not a study folder"):
        nndl.tune("regress", space, trials=1, out=tmp_path / "plain", **QUIET)


def test_journal_two_local_workers_run_exactly_n_trials(tmp_path, space):
    out = tmp_path / "s"
    # trials of a few seconds each, so the worker (a new process: ~3 s to start) surely claims some
    tune_cli(space, out, "--trials", 6, "--workers", 2, "--set", TRIAL_FOR_TWO, check=0)
    study = load("regress-space", out / "journal.log")
    assert [t.number for t in study.trials] == list(range(6))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
    assert (out / "worker-1.log").exists() and "Traceback" not in (out / "worker-1.log").read_text()
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both processes ran trials


def test_sqlite_two_local_workers_run_exactly_n_trials(tmp_path, space):
    """SQLite has no advisory lock: the trial lock is a file lock beside the database file."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "s"
    tune_cli(space, out, "--trials", 6, "--workers", 2, "--storage", url, "--set", TRIAL_FOR_TWO, check=0)
    study = load("regress-space", url)
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
    assert (tmp_path / "study.db.slot-lock").exists() and not (out / "journal.log").exists()
    assert "Traceback" not in (out / "worker-1.log").read_text()
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both processes ran trials
    assert json.loads((out / "study.json").read_text())["trials"] == 6


# ----------------------------------------------------------------------------------------------- PostgreSQL
@needs_pg
@pytest.mark.postgres
def test_postgres_two_workers_exactly_n_trials(tmp_path, space):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "s"
    proc = tune_cli(space, out, "--trials", 6, "--workers", 2, "--storage", PG_URL, "--study", name,
                    "--set", "epochs=300", check=0)
    assert "://" not in proc.stdout or mask_url(PG_URL) in proc.stdout
    study = load(name, PG_URL)  # a fresh connection, as another machine would see it
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
    assert len({(t.params["lr"], t.params["hidden"]) for t in study.trials}) == 6  # no trial run twice
    summary = json.loads((out / "study.json").read_text())
    assert summary["best"]["number"] == study.best_trial.number
    assert summary["best"]["value"] == pytest.approx(study.best_value)
    assert summary["storage"] == mask_url(PG_URL)


@needs_pg
@pytest.mark.postgres
def test_postgres_sigkilled_worker_trial_is_failed_by_heartbeat_and_retried(tmp_path, space):
    name = f"pgkill-{uuid.uuid4().hex[:8]}"
    common = ["--trials", 2, "--storage", PG_URL, "--study", name, "--heartbeat", 1]
    worker = popen_cli("tune", "regress", "--space", space, "--sampler", "random", "--folds", 3, *common,
                       "--worker-only", "--set", SLOW)
    wait_running(name, PG_URL, worker)
    victim = next(t for t in load(name, PG_URL).trials if t.state.name == "RUNNING")
    worker.kill()  # SIGKILL mid-trial: no cleanup, no final state written
    worker.wait()
    assert load(name, PG_URL).trials[victim.number].state.name == "RUNNING"  # stale until the heartbeat says so

    tune_cli(space, tmp_path / "s", *common, "--set", "epochs=50", check=0)
    study = load(name, PG_URL)
    assert study.trials[victim.number].state.name == "FAIL"
    assert counted_states(study) == ["COMPLETE"] * 2
    retry = [t for t in study.trials if t.system_attrs.get("retry_history") == [victim.number]]
    assert len(retry) == 1 and retry[0].params == victim.params and retry[0].state.name == "COMPLETE"
    summary = json.loads((tmp_path / "s/study.json").read_text())
    assert summary["counts"] == {"COMPLETE": 2} and summary["lost_and_retried"] == 1


# ----------------------------------------------------------------------------------------------- batched trials
BATCH_GRID = """
[fixed]
epochs = 60
[grid]
lr = [0.003, 0.03]
weight_decay = [0.0, 0.001]
hidden = ["16", "32,32"]
"""


def test_batched_trials_score_as_one_by_one(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text(BATCH_GRID)
    common = dict(folds=3, retrain=False, figures=False, **QUIET)
    alone = nndl.tune("regress", path, out=tmp_path / "alone", **common)
    stacked = nndl.tune("regress", path, out=tmp_path / "stacked", batch_trials=8, **common)
    assert alone["counts"] == stacked["counts"] == {"COMPLETE": 8} and stacked["batch_trials"] == 8

    def by_params(folder):
        study = load("regress-grid", folder / "journal.log")
        return {tuple(sorted(t.params.items())): (t.value, t.user_attrs["fold_values"]) for t in study.trials}

    a, b = by_params(tmp_path / "alone"), by_params(tmp_path / "stacked")
    assert set(a) == set(b) and len(a) == 8  # the whole grid, once each
    for key in a:
        assert b[key][0] == pytest.approx(a[key][0], rel=1e-4), key
        assert b[key][1] == pytest.approx(a[key][1], rel=1e-4), key
    workers = {t.user_attrs["worker"] for t in load("regress-grid", tmp_path / "stacked/journal.log").trials}
    assert len(workers) == 1


def test_batched_trial_that_diverges_fails_alone(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('[fixed]\noptimizer = "sgd"\nepochs = 20\n[grid]\nlr = [0.01, 1e7]\n')
    s = nndl.tune("regress", path, folds=3, out=tmp_path / "s", batch_trials=2, retrain=False, figures=False, **QUIET)
    rows = {float(r["params_lr"]): r for r in read_trials(tmp_path / "s")}
    assert rows[0.01]["state"] == "COMPLETE" and float(rows[0.01]["value"]) > 0
    assert rows[1e7]["state"] == "FAIL" and "learning rate" in rows[1e7]["fail_reason"]
    assert s["best"]["params"]["lr"] == 0.01


@pytest.mark.parametrize("task, extra, message", [
    ("regress", ["--batch-trials", "0"], "--batch-trials must be >= 1"),
    ("classify", ["--batch-trials", "-1"], "--batch-trials must be >= 1"),
])
def test_bad_batch_trials_exits_2(tmp_path, capsys, task, extra, message):
    path = tmp_path / "s.toml"
    path.write_text("[grid]\nlr = [0.1]\n")
    code = cli.main(["tune", task, "--space", str(path), "--out", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


@needs_pg
@pytest.mark.postgres
def test_postgres_sigkilled_batch_worker_loses_its_trials_by_heartbeat(tmp_path, space):
    name = f"pgbatch-{uuid.uuid4().hex[:8]}"
    common = ["--trials", 3, "--storage", PG_URL, "--study", name, "--heartbeat", 1, "--batch-trials", 3]
    worker = popen_cli("tune", "regress", "--space", space, "--sampler", "random", "--folds", 3, *common,
                       "--worker-only", "--set", SLOW)
    wait_running(name, PG_URL, worker)
    worker.kill()  # SIGKILL mid-batch: three RUNNING trials, no final states written
    worker.wait()
    lost = load(name, PG_URL).trials
    assert [t.state.name for t in lost] == ["RUNNING"] * 3

    tune_cli(space, tmp_path / "s", *common, "--set", "epochs=50", check=0)
    study = load(name, PG_URL)
    assert [study.trials[t.number].state.name for t in lost] == ["FAIL"] * 3
    assert counted_states(study) == ["COMPLETE"] * 3
    retried = sorted(t.system_attrs.get("retry_history", [None])[0] for t in study.trials[3:])
    assert retried == [0, 1, 2]


def test_optuna_loads_only_for_a_search():
    code = ("import sys, nndl, nndl.tools.bench, nndl.cli; assert 'optuna' not in sys.modules; "
            "import nndl.search; assert callable(nndl.tune) and nndl.tune is nndl.search.tune")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
