"""Workers: the claim-and-run loop, the local worker processes a run starts, and their signals.

Workers started here get SIGINT back and end with their parent (:func:`_end_with_parent`); a
worker turns SIGTERM into an interrupt (:func:`_sigterm_interrupts`), so its running trial ends
FAIL "interrupted" and is retried on resume instead of staying RUNNING.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from nndl.base import config as config_mod
from nndl.search import optuna_shim
from nndl.search.objective import TrialFailed
from nndl.search.storage import Slot, counted, recover


def work(study, objective, n_total: int, slot: Slot, journal, wait: bool, on_trial, batch: int = 1) -> None:
    """Claim and run trials until the study has ``n_total``; with ``wait``, also outlast other workers.

    With ``batch > 1`` up to ``batch`` trials are claimed at once and trained together
    (:meth:`Objective.run_batch`).
    """
    while True:
        slot.acquire()
        try:
            recover(study, journal)
            trials = study.get_trials(deepcopy=False)
            waiting = sum(t.state == TrialState.WAITING for t in trials)
            if len(counted(trials)) >= n_total and not waiting:
                if not (wait and any(t.state == TrialState.RUNNING for t in trials)):
                    return
                slot.release()
                time.sleep(1.0)
                continue
            if batch > 1:  # queued retries first (ask() pops them), then new trials up to the total
                with optuna_shim.asking_outside_optimize():  # run_batch beats the heartbeats itself
                    claimed = [study.ask() for _ in range(min(batch, waiting + max(0, n_total - len(counted(trials)))))]
                slot.release()
                objective.run_batch(study, claimed, on_trial)
            else:
                study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[on_trial])
        finally:
            slot.release()


def run_with_workers(plan, study: optuna.Study, slot: Slot, opts, on_trial: Callable) -> None:
    """This process works on the study beside ``opts.workers - 1`` worker processes started here,
    then finishes what lost workers left; Ctrl-C interrupts them all (each marks its trial)."""
    extra = dict(sampler=plan.sampler, trials=plan.n_total, folds=opts.folds, pruner=opts.pruner, study=plan.name,
                 out=plan.folder, preset=opts.preset, seed=opts.seed, timeout_per_trial=opts.timeout_per_trial,
                 heartbeat=opts.heartbeat, workers=opts.workers, batch_trials=opts.batch_trials,
                 allow_changes=opts.allow_changes or None)
    procs = [_spawn(plan.task, plan.space, i, extra, opts.overrides, opts.storage, plan.folder)
             for i in range(1, opts.workers)]
    run = dict(objective=plan.objective, n_total=plan.n_total, slot=slot, journal=plan.journal, on_trial=on_trial,
               batch=opts.batch_trials)
    try:
        work(study, wait=False, **run)
        for i, p in enumerate(procs, 1):
            if p.wait():
                opts.echo(f"warning: worker {i} exited with code {p.returncode}; see "
                          f"{plan.folder / f'worker-{i}.log'}")
        work(study, wait=True, **run)  # lost trials
    except KeyboardInterrupt:
        _stop_workers(procs)
        opts.echo(f"interrupted: rerun with --out {plan.folder} to resume; the interrupted trial is retried")
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()  # SIGTERM: the worker marks its trial "interrupted" (see _sigterm_interrupts)


def _spawn(task, sp, index, opts: dict[str, Any], overrides, storage, folder) -> subprocess.Popen:
    argv = [sys.executable, "-m", "nndl.cli", "tune", task, "--space", str(sp.path), "--worker-only",
            "--worker-index", str(index)]
    for key, value in opts.items():
        flag = f"--{key.replace('_', '-')}"
        argv += [flag] if value is True else [flag, str(value)] if value is not None else []
    for key, value in config_mod.parse_overrides(overrides).items():
        argv += ["--set", f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"]
    src = Path(__file__).resolve().parents[2]  # the folder holding the nndl package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]))
    # The storage goes in the environment, not on the command line, where `ps` would show a password;
    # without one, a NNDL_TUNE_STORAGE of the caller's must not send the worker to another storage.
    env.pop("NNDL_TUNE_STORAGE", None)
    if storage:
        env["NNDL_TUNE_STORAGE"] = storage
    with open(folder / f"worker-{index}.log", "w") as log:  # the worker writes to its own copy of the file
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_end_with_parent,
                                # its own session: a terminal's Ctrl-C reaches the parent only, which forwards
                                # exactly one SIGINT (a second one could cut short the worker's own cleanup)
                                start_new_session=True)


def _end_with_parent() -> None:
    """In a spawned worker, before it starts: make it interruptible and tie it to its parent.

    A process started in the background of a non-interactive shell (a CI job, ``cmd &`` in a
    script) inherits SIGINT *ignored*, and so would every worker it spawns: our SIGINT on Ctrl-C
    (:func:`_stop_workers`) would then be lost and the worker would train to the end of the study.
    So the worker gets the default SIGINT back. On Linux it is also sent SIGTERM when the parent
    dies, even by SIGKILL; the worker turns SIGTERM into an interrupt (see :func:`_sigterm_interrupts`).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent's finally still stops its workers
        pass


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (the parent's ``terminate()``, or its death) ends a worker like Ctrl-C: the running trial
    is marked "interrupted" and retried on resume, rather than left RUNNING. The previous handler is
    restored on exit, so the caller's process keeps its own signal dispositions."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_workers(procs: list[subprocess.Popen], grace: float = 60.0) -> None:
    """Interrupt the workers (SIGINT: each marks its trial "interrupted") and wait for them; kill stragglers."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
