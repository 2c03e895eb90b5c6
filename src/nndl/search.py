"""Hyperparameter search with Optuna: K-fold objective, search-space files, storage and workers.

Nothing fails silently. A trial whose loss turned NaN/inf, that raised, or that hit
``--timeout-per-trial`` ends as FAIL with its reason in the ``fail_reason`` user
attribute; it is never ranked. When most trials fail the summary says so loudly and
``ok`` is False (the CLI exits with 3).

``--trials`` is the total for the study, across all workers and reruns: a process
claims a trial under a lock (a file lock next to the journal, a PostgreSQL advisory
lock), so parallel workers never overshoot. A trial lost with its worker (SIGKILL,
power cut) is failed -- by heartbeat on PostgreSQL, by a dead-PID check for the
local journal -- and retried once; the lost attempt does not count.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import functools
import hashlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from . import config as config_mod
from .config import tomllib
from .errors import NndlError
from .masking import mask_secrets
from .runs import RUN_MARKER, prepare_out_dir, read_json, write_json

TASKS = {"regress": ("minimize", "val_mse", "test_mse"), "classify": ("maximize", "val_accuracy", "test_accuracy")}
ALIASES = {"max_epochs": "epochs"}  # the reference grid's name for the epoch budget
SAMPLERS, PRUNERS = ("grid", "random", "tpe"), ("none", "median", "hyperband", "wilcoxon")
NUMERIC = ("float", "log-float", "int", "log-int")
NOT_IN_PRESET = {"time_limit"}  # a tuning guard, not part of the configuration found
_retry_history = RetryHeartbeatStaleTrialCallback.retry_history  # numbers of the lost attempts a trial retries


def _quiet(fn):
    """Inside ``fn`` only: no ExperimentalWarning (heartbeats, retries, plots), no Optuna log lines
    (we print one line per trial ourselves)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return fn(*args, **kwargs)
        finally:
            optuna.logging.set_verbosity(verbosity)
    return wrapper


def crash_reason(e: Exception) -> str:
    """``Type: first line of the message`` (at most 300 characters of it)."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


class TrialFailed(Exception):
    """A trial without a trustworthy value; the reason is in its ``fail_reason`` user attribute."""


mask_url = mask_secrets  # the name search callers and tests know


# --------------------------------------------------------------------------- search space
@dataclasses.dataclass
class Space:
    """A parsed search-space file: ``preset``, ``[fixed]`` overrides, ``[params.NAME]`` and ``[grid]``."""

    path: Path
    preset: str | None
    fixed: dict[str, Any]
    params: dict[str, dict[str, Any]]
    grid: dict[str, list]

    @property
    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid.values())


def load_space(path: str | Path, task: str) -> Space:
    """Read and validate a search-space TOML file; every key must be a field of the task's config."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise NndlError(f"{path}: cannot read search-space file ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise NndlError(f"{path}: not valid TOML ({e})") from None
    cls = config_mod.TASK_CONFIGS[task]

    def bad(where: str, why: str) -> NndlError:
        return NndlError(f"{path}: {where}: {why}")

    def check(where: str, key: str, value: Any) -> Any:
        try:
            return config_mod.coerce(cls, ALIASES.get(key, key), value)
        except NndlError as e:
            raise bad(where, str(e)) from None

    extra = set(data) - {"preset", "fixed", "params", "grid"}
    if extra:
        raise bad(", ".join(sorted(extra)), "unknown top-level key; use preset, [fixed], [params.NAME] or [grid]")
    fixed = {ALIASES.get(k, k): check(f"[fixed] {k}", k, v) for k, v in data.get("fixed", {}).items()}
    params: dict[str, dict[str, Any]] = {}
    for name, spec in data.get("params", {}).items():
        where = f"[params.{name}]"
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices or any(isinstance(c, (list, dict)) for c in choices):
                raise bad(where, 'needs choices = [...] of scalars (write lists as strings, e.g. "64,64")')
            for c in choices:
                check(where, name, c)
        elif kind in NUMERIC:
            _check_range(spec, kind, lambda why, w=where: bad(w, why))
            check(where, name, spec["low"]), check(where, name, spec["high"])
        else:
            raise bad(where, f"type = {kind!r}: choose one of categorical, {', '.join(NUMERIC)}")
        params[name] = spec
    grid = data.get("grid", {})
    for name, values in grid.items():
        if not isinstance(values, list) or not values or any(isinstance(v, (list, dict)) for v in values):
            raise bad(f"[grid] {name}", "needs a non-empty list of scalars")
        for v in values:
            check(f"[grid] {name}", name, v)
    both = set(params) & set(grid)
    if both or not (params or grid):
        raise bad(", ".join(both) or "[params]/[grid]", "each key once, in [params] or [grid]" if both
                  else "nothing to search: add [params.NAME] tables or a [grid] table")
    return Space(path, data.get("preset"), fixed, params, grid)


def _check_range(spec: dict[str, Any], kind: str, bad: Callable[[str], NndlError]) -> None:
    """Types and bounds of a numeric ``[params.NAME]`` table, before Optuna sees them."""
    integer = kind.endswith("int")
    number = (int,) if integer else (int, float)

    def is_number(v: Any) -> bool:
        return isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v)

    unknown = set(spec) - {"type", "low", "high", "step"}
    if unknown:
        raise bad(f"unknown key {sorted(unknown)[0]!r}; a {kind} range has low, high and optional step")
    if not (is_number(spec.get("low")) and is_number(spec.get("high"))):
        raise bad(f"needs {'integer' if integer else 'numeric'} low and high, got low = {spec.get('low')!r}, "
                  f"high = {spec.get('high')!r}")
    if not spec["low"] < spec["high"]:
        raise bad("needs low < high")
    if kind.startswith("log") and spec["low"] <= 0:
        raise bad(f"low = {spec['low']}: a log scale needs low > 0")
    step = spec.get("step")
    if step is not None and (not is_number(step) or step <= 0 or kind.startswith("log")):
        raise bad(f"step = {step!r}: needs a positive {'integer' if integer else 'number'}, and no log scale")


def check_space_values(space: Space, config_of: Callable[[dict[str, Any]], Any]) -> None:
    """Resolve the trial config at both ends of every range and at every choice, before any trial runs.

    ``config_of(params)`` builds a trial's config (it raises :class:`NndlError` for a value the
    config rejects, e.g. ``lr = 0`` or an unknown activation); the error names the space file and key.
    Ranges are checked at their ends only: every bound a config checks is monotone.
    """
    tables = [(f"[params.{name}]", name, spec["choices"] if spec["type"] == "categorical"
               else [spec["low"], spec["high"]]) for name, spec in space.params.items()]
    tables += [(f"[grid] {name}", name, values) for name, values in space.grid.items()]
    for where, name, values in tables:
        for value in values:
            try:
                config_of({name: value})
            except NndlError as e:
                raise NndlError(f"{space.path}: {where}: {e}") from None


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Sample this trial's values; grid keys are categorical (GridSampler picks them, others sample them)."""
    out = {}
    for name, s in space.params.items():
        kind, log = s["type"], s["type"].startswith("log")
        if kind == "categorical":
            out[name] = trial.suggest_categorical(name, s["choices"])
        elif kind.endswith("int"):
            out[name] = trial.suggest_int(name, s["low"], s["high"], step=s.get("step", 1), log=log)
        else:
            out[name] = trial.suggest_float(name, float(s["low"]), float(s["high"]), step=s.get("step"), log=log)
    for name, values in space.grid.items():
        out[name] = trial.suggest_categorical(name, values)
    return out


# --------------------------------------------------------------------------- objective
class Objective:
    """K-fold objective: mean validation MSE (regress) or accuracy (classify), reported fold by fold."""

    def __init__(self, task, space, preset, overrides, seed, folds, timeout, pruner, slot=None):
        self.task, self.space, self.preset, self.seed = task, space, preset, seed
        self.overrides, self.folds, self.timeout, self.pruner, self.slot = overrides, folds, timeout, pruner, slot
        self.data = None  # Fashion-MNIST, read once per process

    def config(self, params: dict[str, Any] | None = None):
        """The resolved config of a trial: preset, [fixed], --set, the sampled values, then --seed."""
        values = {**self.space.fixed, **config_mod.parse_overrides(self.overrides)}
        values.update({ALIASES.get(k, k): v for k, v in (params or {}).items()})
        if self.task == "regress" and self.folds:
            values["folds"] = self.folds
        if self.timeout:
            values["time_limit"] = self.timeout
        return config_mod.resolve(self.task, self.preset, values, self.seed)

    def start(self, trial) -> None:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if trial.user_attrs.get("fail_reason"):  # a retry inherits its lost attempt's attributes
            trial.set_user_attr("fail_reason", None)

    def guarded(self, trial, fn: Callable[[], Any]) -> Any:
        """``fn()``; a crash becomes this trial's FAIL with its message, not a dead study."""
        try:
            return fn()
        except (optuna.TrialPruned, TrialFailed):
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
            raise
        except Exception as e:
            self.fail(trial, crash_reason(e))

    def __call__(self, trial: optuna.Trial) -> float:
        if self.slot is not None:
            self.slot.release()  # the trial exists now; another worker may claim the next one
        self.start(trial)

        def run():
            cfg = self.config(suggest(trial, self.space))
            return self._regress(trial, cfg) if self.task == "regress" else self._classify(trial, cfg)
        return self.guarded(trial, run)

    def run_batch(self, study, trials: list, on_trial) -> None:
        """Run asked regression trials together: those whose configs share a network (``stack_key``)
        train as one stacked model of all their folds; every trial is then scored, reported and told."""
        from optuna.storages._heartbeat import get_heartbeat_thread  # what study.optimize uses per trial

        from .crossval import stack_key

        told: set[int] = set()

        def tell(trial, value=None, state=None):
            told.add(trial.number)
            try:
                frozen = study.tell(trial, value, state=state)
            except RuntimeError as e:  # GridSampler stops the study after its last point; outside optimize()
                if "Study.stop" not in str(e):  # that raises, after the state is stored (Optuna documents it)
                    raise
                frozen = study._storage.get_trial(trial._trial_id)
            on_trial(study, frozen)

        with contextlib.ExitStack() as heartbeats:
            for trial in trials:  # RDB storage: a worker killed mid-batch loses its trials by heartbeat
                heartbeats.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
            try:
                groups: dict[Any, list] = {}
                for trial in trials:
                    self.start(trial)
                    try:
                        cfg = self.guarded(trial, lambda: self.config(suggest(trial, self.space)))
                    except TrialFailed:
                        tell(trial, state=TrialState.FAIL)
                        continue
                    # Equal epochs too: a stack computes every member until its longest one ends, and
                    # on CPU the arithmetic of finished members would cost more than stacking saves.
                    key = (stack_key(cfg), cfg.epochs) if cfg.batched else trial.number
                    groups.setdefault(key, []).append((trial, cfg))
                for members in groups.values():
                    try:
                        results = self._cross_validate([cfg for _, cfg in members])
                    except Exception as e:  # the whole stack failed: so did each of its trials
                        for trial, _ in members:
                            trial.set_user_attr("fail_reason", crash_reason(e))
                            tell(trial, state=TrialState.FAIL)
                        continue
                    for (trial, _), folds in zip(members, results):
                        try:
                            tell(trial, self.guarded(trial, lambda: self._score_regress(trial, folds)))
                        except TrialFailed:
                            tell(trial, state=TrialState.FAIL)
                        except optuna.TrialPruned:
                            tell(trial, state=TrialState.PRUNED)
            except KeyboardInterrupt:  # as study.optimize does: the trials end FAIL and are retried on resume
                for trial in trials:
                    if trial.number not in told:
                        trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
                        study.tell(trial, state=TrialState.FAIL)
                raise

    def fail(self, trial, reason: str):
        trial.set_user_attr("fail_reason", reason)
        raise TrialFailed(reason)

    def report(self, trial, fold: int, value: float, so_far: list[float]) -> None:
        # Wilcoxon compares the folds pairwise with the best trial; the others compare the running mean.
        trial.report(value if self.pruner == "wilcoxon" else sum(so_far) / len(so_far), fold)
        if trial.should_prune():
            reason = f"pruned ({self.pruner}) after fold {fold + 1}: mean so far {sum(so_far) / len(so_far):.4g}"
            trial.set_user_attr("fail_reason", reason)
            raise optuna.TrialPruned(reason)

    def check(self, trial, folds: list[tuple[bool, bool, str]]) -> None:
        """Fail on the first diverged or timed-out fold: (diverged, timed_out, stop_reason) each."""
        for i, (diverged, timed_out, why) in enumerate(folds):
            if diverged or timed_out:
                self.fail(trial, f"fold {i + 1}: {why}" + (" (--timeout-per-trial)" if timed_out else ""))

    def score(self, trial, values: list[float]) -> float:
        if not values or not all(math.isfinite(v) for v in values):
            self.fail(trial, f"a fold gave a non-finite {TASKS[self.task][1]}: {values}")
        trial.set_user_attr("fold_values", values)
        return sum(values) / len(values)

    def _cross_validate(self, cfgs: list) -> list[list]:
        """K-fold results of regression configs: one stack for all when ``len(cfgs) > 1`` (they share a
        ``stack_key``), otherwise the config's own ``batched`` choice."""
        import torch

        from .crossval import cross_validate, cross_validate_many
        from .regression import load_data, make_model_factory
        from .training import pick_device

        cfgs = [dataclasses.replace(c, test_path="") for c in cfgs]  # trials never read the test set
        data, _ = load_data(cfgs[0])
        device = pick_device(cfgs[0].device)
        x, y = torch.as_tensor(data.x, device=device), torch.as_tensor(data.y, device=device)
        factories = [make_model_factory(c, x, y) for c in cfgs]
        if len(cfgs) > 1:
            return cross_validate_many(factories, x, y, cfgs)
        return [cross_validate(factories[0], x, y, cfgs[0], batched=cfgs[0].batched, progress=False)]

    def _score_regress(self, trial, folds) -> float:
        # The folds train together (stacked), so pruning can only mark a trial, not shorten it.
        self.check(trial, [(f.result.diverged, f.result.timed_out, f.result.stop_reason) for f in folds])
        values = [f.val_mse for f in folds]
        for i in range(len(values)):
            if math.isfinite(values[i]):
                self.report(trial, i, values[i], values[: i + 1])
        return self.score(trial, values)

    def _regress(self, trial, cfg) -> float:
        return self._score_regress(trial, self._cross_validate([cfg])[0])

    def _classify(self, trial, cfg) -> float:
        from .classification import cross_validate_classifier
        from .data.fashion import load_fashion

        if self.data is None:
            self.data = load_fashion(cfg.data or None, verify=cfg.verify)
        seen: list[float] = []

        def on_fold(i: int, acc: float) -> None:
            if math.isfinite(acc):
                seen.append(acc)
                self.report(trial, i, acc, seen)

        folds = cross_validate_classifier(cfg, self.data, self.folds or 3, on_fold=on_fold)
        self.check(trial, [(f["diverged"], f["timed_out"], f["stop_reason"]) for f in folds])
        return self.score(trial, [f["val_accuracy"] for f in folds])


# --------------------------------------------------------------------------- storage, lock, workers
class Slot:
    """A cross-process lock around "count the trials, create one", so that --trials is exact."""

    def __init__(self, storage_url: str | None, journal: Path | None, study: str):
        self.held, self.fh, self.conn = False, None, None
        if journal is not None:
            self.fh = open(f"{journal}.slot-lock", "a")
        elif storage_url.startswith("postgres"):
            import sqlalchemy

            engine = sqlalchemy.create_engine(driver_url(storage_url), isolation_level="AUTOCOMMIT",
                                              poolclass=sqlalchemy.NullPool)
            self.conn, self.text = engine.connect(), sqlalchemy.text
            self.key = int(hashlib.sha1(study.encode()).hexdigest()[:15], 16)  # fits a signed bigint

    def acquire(self) -> None:
        if not self.held:
            if self.fh:
                fcntl.flock(self.fh, fcntl.LOCK_EX)
            elif self.conn is not None:
                self.conn.execute(self.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self.held = True

    def release(self) -> None:
        if self.held:
            if self.fh:
                fcntl.flock(self.fh, fcntl.LOCK_UN)
            elif self.conn is not None:
                self.conn.execute(self.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self.held = False


def driver_url(url: str) -> str:
    """SQLAlchemy >= 2.1 reads ``postgresql://`` as psycopg 3; fall back to psycopg2 when that is what is here."""
    if re.match(r"postgres(ql)?://", url):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", url)
    return url


def open_storage(url: str | None, folder: Path | None, heartbeat: int):
    """(storage, journal path or None). Default: ``journal.log`` in the study folder."""
    if url and "://" in url:
        url = driver_url(url)
        try:  # heartbeats fail a killed worker's trial after the grace period; it is retried once
            return optuna.storages.RDBStorage(
                url, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat,
                grace_period=3 * heartbeat,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1)), None
        except Exception as e:
            raise NndlError(f"--storage {mask_url(url)}: cannot open it ({mask_url(str(e).splitlines()[0])})") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(url) if url else folder / "journal.log"
    return JournalStorage(JournalFileBackend(str(path))), path


def counted(trials) -> list:
    """The trials --trials counts: all but attempts lost with their worker and already retried."""
    retried = {n for t in trials for n in _retry_history(t)}
    return [t for t in trials if t.number not in retried]


def recover(study, journal: Path | None) -> None:
    """Fail trials whose worker is gone and queue one retry of each lost or interrupted trial."""
    if journal is None:
        optuna.storages.fail_stale_trials(study)  # RDB heartbeat; its retry callback queues the retry
    host = socket.gethostname()
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in _retry_history(t)}
    for t in trials:
        h, _, pid = (t.user_attrs.get("worker") or "").rpartition(":")
        # The journal has no heartbeat: on this host a dead PID tells a lost trial.
        lost = (journal is not None and t.state == TrialState.RUNNING and h == host and pid.isdigit()
                and not _alive(int(pid)))
        if lost:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        interrupted = t.state == TrialState.FAIL and (t.user_attrs.get("fail_reason") or "").startswith("interrupt")
        if (lost or interrupted) and t.number not in retried:
            RetryHeartbeatStaleTrialCallback(max_retry=1)(study, study.get_trials()[t.number])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child not yet reaped is a zombie: dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


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
                with warnings.catch_warnings():  # "heartbeat is meant for optimize()": run_batch beats itself
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    claimed = [study.ask() for _ in range(min(batch, waiting + max(0, n_total - len(counted(trials)))))]
                slot.release()
                objective.run_batch(study, claimed, on_trial)
            else:
                study.optimize(objective, n_trials=1, catch=(TrialFailed,), callbacks=[on_trial])
        finally:
            slot.release()


# --------------------------------------------------------------------------- outputs
def _reason(t, retried_as: dict[int, int]) -> str:
    reason = t.user_attrs.get("fail_reason") or ""
    if t.state == TrialState.FAIL and not reason:
        reason = "worker lost mid-trial (killed, or no heartbeat)"
    if t.number in retried_as:
        reason += f"; retried as trial {retried_as[t.number]}"
    return reason


def write_trials(trials, path: Path, names: list[str], retried_as) -> list[dict]:
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "duration_s": (t.datetime_complete - t.datetime_start).total_seconds()
             if t.datetime_complete and t.datetime_start else None,
             **{f"params_{n}": t.params.get(n) for n in names}, "fail_reason": _reason(t, retried_as)}
            for t in trials]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["number"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def format_table(rows: list[dict], metric: str) -> str:
    lines = [f"{'#':>4}  {'state':<8} {metric:>12} {'sec':>7}  params / reason"]
    for r in rows:
        value = f"{r['value']:.6g}" if r["value"] is not None else "-"
        sec = f"{r['duration_s']:.1f}" if r["duration_s"] is not None else "-"
        params = " ".join(f"{k[7:]}={v:.4g}" if isinstance(v, float) else f"{k[7:]}={v}"
                          for k, v in r.items() if k.startswith("params_"))
        reason = f"  <- {r['fail_reason'][:110]}" if r["fail_reason"] else ""
        lines.append(f"{r['number']:>4}  {r['state']:<8} {value:>12} {sec:>7}  {params}{reason}")
    return "\n".join(lines)


def to_toml(values: dict[str, Any], header: str = "") -> str:
    """A flat TOML document of scalars and lists (all a preset holds)."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string
    lines = [f"# {line}" for line in header.splitlines()]
    return "\n".join(lines + [f"{k} = {fmt(v)}" for k, v in values.items()]) + "\n"


# --------------------------------------------------------------------------- entry point
@_quiet
def tune(task: str, space: str | Path | None = None, *, sampler: str | None = None, trials: int | None = None,
         folds: int | None = None, pruner: str = "none", study: str | None = None, storage: str | None = None,
         workers: int = 1, out: str | Path | None = None, preset: str | None = None,
         overrides: dict[str, Any] | list[str] | None = None, seed: int | None = None,
         timeout_per_trial: float | None = None, heartbeat: int = 10, worker_only: bool = False,
         worker_index: int | None = None, batch_trials: int = 1, figures: bool = True, retrain: bool = True,
         allow_changes: bool = False,
         echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Search hyperparameters with Optuna, scoring each trial by K-fold cross-validation.

    Parameters
    ----------
    task : {"regress", "classify"}
    space : path
        Search-space TOML: optional ``preset``, ``[fixed]`` overrides, ``[params.NAME]``
        tables (``type`` = categorical/float/log-float/int/log-int) and/or a ``[grid]`` table.
    sampler : {"grid", "random", "tpe"}, optional
        Default: grid when the space has only ``[grid]``, else TPE.
    trials : int, optional
        Total trials of the study over all workers and reruns (default: the grid size, or 20).
    folds : int, optional
        K (default: the config's ``folds`` for regress, 3 for classify).
    pruner : {"none", "median", "hyperband", "wilcoxon"}
    study, storage : str, optional
        Study name (default ``TASK-SPACESTEM``, or the one already in ``out``) and an Optuna
        storage URL (default: ``journal.log`` in the study folder). Passwords are masked in output.
    workers : int
        Processes on this machine (this one plus ``workers - 1`` started here).
    out : path, optional
        Study folder (default ``runs/tune-TASK-TIMESTAMP``); reusing it resumes its study.
    preset, overrides, seed :
        Base config, as for :func:`nndl.regress` / :func:`nndl.classify`; the space's
        ``[fixed]`` comes after ``preset``, ``overrides`` after that.
    timeout_per_trial : float, optional
        Seconds of training after which a trial stops and FAILs.
    heartbeat : int
        RDB storage: heartbeat interval; a trial is lost after 3 silent intervals.
    worker_only : bool
        Only run trials (no outputs): for extra processes, here or on other machines.
    batch_trials : int
        Regression: each worker claims this many trials at a time; the claimed trials whose
        configs share a network (they differ only in lr, weight decay, L1, epochs, schedule or
        patience) train as one stacked model of all their folds, each with its own
        hyperparameters -- the same results as one by one, in fewer, larger steps.
    figures, retrain : bool
        Write the study figures; retrain the best config on all training data and test it once.
    allow_changes : bool
        Resume a study in ``out`` even though its space, preset, overrides, seed or folds differ
        from those it was started with (otherwise that is an error: its trials would not compare).

    Returns
    -------
    nndl.results.Study
        The study (``.metrics``, ``.history`` of trials, ``.best_run``, ``.figure(name)``); as a
        mapping it is the summary written to ``study.json`` (``best``, ``counts``, ``ok``,
        ``best_run``, ...) plus ``study_dir``. With ``worker_only`` a plain dict.
    """
    if task not in TASKS:
        raise NndlError(f"unknown task '{task}': choose regress or classify")
    if sampler is not None and sampler not in SAMPLERS:
        raise NndlError(f"--sampler {sampler}: choose one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise NndlError(f"--pruner {pruner}: choose one of {', '.join(PRUNERS)}")
    if (trials is not None and trials < 1) or workers < 1 or batch_trials < 1 or (folds is not None and folds < 2):
        raise NndlError("--trials, --workers and --batch-trials must be >= 1, --folds >= 2")
    if batch_trials > 1 and task != "regress":
        raise NndlError("--batch-trials stacks regression MLPs; for classify leave it at 1 (use --workers)")
    if space is None:  # regress has a documented default space, shipped with the package
        if task != "regress":
            raise NndlError(f"nndl tune {task} needs --space SPACE.toml (e.g. examples/spaces/fashion_grid.toml)")
        space = Path(__file__).parent / "spaces" / "regress_default.toml"
    sp = load_space(space, task)
    sampler = sampler or ("grid" if sp.grid and not sp.params else "tpe")
    if sampler == "grid" and (sp.params or not sp.grid):
        raise NndlError(f"{sp.path}: --sampler grid searches only a [grid] table; move [params.*] into [grid] "
                        "or use --sampler random/tpe")
    n_total = trials or (sp.grid_size if sampler == "grid" else 20)
    if sampler == "grid" and n_total > sp.grid_size:
        echo(f"note: the grid has {sp.grid_size} points; running {sp.grid_size} trials, not {n_total}")
        n_total = sp.grid_size
    direction, metric, test_metric = TASKS[task]
    base_preset = preset or sp.preset or {"regress": "seed", "classify": "mlp"}[task]
    objective = Objective(task, sp, base_preset, overrides, seed, folds, timeout_per_trial, pruner)
    base_cfg = objective.config()  # a bad preset/[fixed]/--set is an input error, not N failed trials
    check_space_values(sp, objective.config)  # so is a range or choice the config rejects

    k = folds or (base_cfg.folds if task == "regress" else 3)
    folder, name = _study_folder(out, task, study, sp, storage, need=storage is None or "://" not in storage,
                                 create=not worker_only, settings=study_settings(sp, base_preset, overrides, seed, k),
                                 allow_changes=allow_changes)
    store, journal = open_storage(storage, folder, heartbeat)
    index = worker_index if worker_index is not None else (os.getpid() % 1000 + 1 if worker_only else 0)
    if workers > 1:  # share the cores instead of oversubscribing them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    try:
        st = optuna.create_study(study_name=name, storage=store, direction=direction, load_if_exists=True)
    except Exception as e:
        raise NndlError(f"storage {mask_url(storage) or journal}: {mask_url(str(e).splitlines()[0])}") from None
    if st.direction.name.lower() != direction:
        raise NndlError(f"study '{name}' maximises/minimises differently: it is not a {task} study")
    seed_base = base_cfg.seed + index + 1000 * len(st.trials)  # a rerun does not replay the same samples
    samplers = {"grid": lambda: optuna.samplers.GridSampler(sp.grid, seed=seed_base),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed_base),
                "tpe": lambda: optuna.samplers.TPESampler(seed=seed_base)}
    pruners = {"none": optuna.pruners.NopPruner, "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3),
               "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=k),
               "wilcoxon": lambda: optuna.pruners.WilcoxonPruner(p_threshold=0.1)}
    st = optuna.load_study(study_name=name, storage=store, sampler=samplers[sampler](), pruner=pruners[pruner]())
    objective.slot = slot = Slot(storage, journal, name)

    def on_trial(_study, t) -> None:
        value = f"{metric} = {t.value:.6g}" if t.value is not None else _reason(t, {})
        echo(f"trial {t.number:>3} {t.state.name:<8} {value}  {t.params}")

    where = mask_url(storage) if storage and "://" in storage else str(journal)
    batching = f", {batch_trials} trials per stacked batch" if batch_trials > 1 else ""
    echo(f"study '{name}' ({task}, {sampler} sampler, {pruner} pruner, {k} folds, {n_total} trials{batching}) "
         f"in {where}")
    if worker_only:
        with _sigterm_interrupts():
            work(st, objective, n_total, slot, journal, wait=False, on_trial=on_trial, batch=batch_trials)
        return {"worker": index, "study": name}

    t0 = time.perf_counter()
    procs = [_spawn(task, sp, i, dict(sampler=sampler, trials=n_total, folds=folds, pruner=pruner, study=name,
                                      out=folder, preset=preset, seed=seed, timeout_per_trial=timeout_per_trial,
                                      heartbeat=heartbeat, workers=workers, batch_trials=batch_trials,
                                      allow_changes=allow_changes or None),
                    overrides, storage, folder)
             for i in range(1, workers)]
    try:
        work(st, objective, n_total, slot, journal, wait=False, on_trial=on_trial, batch=batch_trials)
        for i, p in enumerate(procs, 1):
            if p.wait():
                echo(f"warning: worker {i} exited with code {p.returncode}; see {folder / f'worker-{i}.log'}")
        work(st, objective, n_total, slot, journal, wait=True, on_trial=on_trial, batch=batch_trials)  # lost trials
    except KeyboardInterrupt:
        _stop_workers(procs)
        echo(f"interrupted: rerun with --out {folder} to resume; the interrupted trial is retried")
        raise
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()  # SIGTERM: the worker marks its trial "interrupted" (see _sigterm_interrupts)
    from .results import Study  # a read-only mapping over the summary, as the dict it replaces

    return Study.from_summary(_finish(st, task, sp, objective, folder, n_total, where, sampler, pruner, k,
                                      batch_trials, time.perf_counter() - t0, figures, retrain, echo))


def study_settings(sp: Space, preset: str, overrides, seed: int | None, folds: int) -> dict[str, Any]:
    """What the scores of a study depend on, as stored in ``tune.json``: a study resumed with other
    settings would rank trials that were scored differently."""
    values = {k: (",".join(map(str, v)) if isinstance(v, list) else str(v))
              for k, v in config_mod.parse_overrides(overrides).items() if k not in NOT_IN_PRESET}
    return {"space": {"preset": sp.preset, "fixed": sp.fixed, "params": sp.params, "grid": sp.grid},
            "preset": preset, "overrides": values, "seed": seed, "folds": folds}


def _study_folder(out, task, study, sp, storage, need: bool, create: bool, settings: dict[str, Any],
                  allow_changes: bool = False) -> tuple[Path | None, str]:
    """The study folder and name; a folder holding another study, or this study started with other
    settings (space, preset, overrides, seed, folds), is never reused silently."""
    if out is None:
        if not create:
            if need:
                raise NndlError("--worker-only with the journal storage needs --out (the study folder)")
            return None, study or f"{task}-{sp.path.stem}"
        out = base = Path("runs") / f"tune-{task}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while out.exists():
            n += 1
            out = Path(f"{base}-{n}")
    folder, marker = Path(out), Path(out) / "tune.json"
    if marker.exists():
        meta = read_json(marker)
        if (study and study != meta["study"]) or task != meta["task"]:
            raise NndlError(f"--out {folder}: holds the {meta['task']} study '{meta['study']}'; rerun with "
                            f"--study {meta['study']} to resume it, or choose another --out")
        started = json.loads(json.dumps(meta.get("settings", settings)))  # JSON round trip: tuples -> lists
        changed = [k for k in settings if k in started and started[k] != json.loads(json.dumps(settings[k]))]
        if changed and not allow_changes:
            raise NndlError(f"--out {folder}: study '{meta['study']}' was started with another "
                            f"{' and '.join(changed)}; rerun with its settings (tune.json) to resume it, choose "
                            "another --out for a new study, or add --allow-changes to mix them knowingly")
        return folder, meta["study"]
    if folder.exists() and any(folder.iterdir()):
        raise NndlError(f"--out {folder}: folder exists and is not a study folder; choose another --out")
    prepare_out_dir(folder)
    name = study or f"{task}-{sp.path.stem}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RUN_MARKER).write_text("study folder written by nndl tune\n")
    except OSError as e:
        raise NndlError(f"--out {folder}: cannot create it ({e.strerror}); choose a folder you can write to") from None
    write_json(marker, {"study": name, "task": task, "space": str(sp.path), "storage": mask_url(storage),
                        "settings": settings})
    return folder, name


def _spawn(task, sp, index, opts, overrides, storage, folder) -> subprocess.Popen:
    argv = [sys.executable, "-m", "nndl.cli", "tune", task, "--space", str(sp.path), "--worker-only",
            "--worker-index", str(index)]
    for key, value in opts.items():
        flag = f"--{key.replace('_', '-')}"
        argv += [flag] if value is True else [flag, str(value)] if value is not None else []
    for key, value in config_mod.parse_overrides(overrides).items():
        argv += ["--set", f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    if storage:
        env["NNDL_TUNE_STORAGE"] = storage  # not on the command line, where `ps` would show a password
    log = open(folder / f"worker-{index}.log", "w")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_end_with_parent)


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


def _finish(st, task, sp, objective, folder, n_total, where, sampler, pruner, k, batch_trials, seconds, figures,
            retrain, echo):
    direction, metric, test_metric = TASKS[task]
    trials = st.get_trials()
    retried_as = {_retry_history(t)[-1]: t.number for t in trials if _retry_history(t)}
    names = list(sp.params) + list(sp.grid)
    rows = write_trials(trials, folder / "trials.csv", names, retried_as)
    done = counted(trials)
    counts = dict(Counter(t.state.name for t in done))
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    failed = [t for t in done if t.state == TrialState.FAIL]
    best = st.best_trial if complete else None
    echo("\n" + format_table(rows, metric))
    summary: dict[str, Any] = {
        "study": st.study_name, "task": task, "direction": direction, "metric": metric, "storage": where,
        "sampler": sampler, "pruner": pruner, "folds": k, "batch_trials": batch_trials,
        "trials_requested": n_total, "trials": len(done),
        "counts": counts, "lost_and_retried": len(trials) - len(done), "wall_seconds": seconds,
        "best": {"number": best.number, "value": best.value, "params": best.params} if best else None}
    problems = []
    if len(failed) * 2 > len(done):
        reasons = Counter(_reason(t, {}) for t in failed).most_common(1)[0][0]
        problems.append(f"{len(failed)} of {len(done)} trials FAILED; most common reason: {reasons}")
    if not complete:
        problems.append("no trial completed: there is NO best configuration")
    summary["ok"] = not problems
    summary["warnings"] = problems
    if problems:
        bar = "!" * 78
        echo("\n".join(["", bar, *(f"!! {p}" for p in problems), "!! Fix the search space (see fail_reason in "
                        "trials.csv) before trusting any result.", bar]))
    if best is not None:
        cfg = objective.config(best.params)
        defaults = config_mod.to_dict(config_mod.TASK_CONFIGS[task]())
        values = {k2: v for k2, v in config_mod.to_dict(cfg).items() if v != defaults[k2] and k2 not in NOT_IN_PRESET}
        header = (f"best trial {best.number} of study '{st.study_name}': {metric} = {best.value:.6g} "
                  f"({k}-fold mean)\nrun it: nndl {task} --preset {folder / 'best_preset.toml'}")
        (folder / "best_preset.toml").write_text(to_toml({"task": task, **values}, header))
        summary["best_preset"] = str(folder / "best_preset.toml")
        echo(f"\nbest: trial {best.number}, {metric} = {best.value:.6g}, params {best.params}")
        if retrain:
            try:
                summary["best_run"] = _retrain(task, folder, objective.data, test_metric, echo)
            except Exception as e:  # the search results stay valid; say what went wrong
                summary["best_run"] = {"error": f"{type(e).__name__}: {e}"}
                echo(f"warning: retraining the best config failed: {summary['best_run']['error']}")
    if figures:  # nndl's own style, the real metric name (not Optuna's stock plots and their global ggplot style)
        from .figures.study import write_study_figures

        summary["figures_skipped"] = write_study_figures(st, folder / "figures", len(complete), len(names),
                                                         metric=metric, folds=k)
    else:
        summary["figures_skipped"] = {}
    for plot, note in summary["figures_skipped"].items():
        echo(f"figure {plot}: {note}")
    write_json(folder / "study.json", summary)
    from .report import write_report

    write_report(folder)
    echo(f"browse it: optuna-dashboard {where}")
    echo(f"study folder: {folder}")
    return {**summary, "study_dir": str(folder)}


def _retrain(task, folder, data, test_metric, echo) -> dict[str, Any]:
    """Train the best config once on all training data and evaluate it once on the test set."""
    from .classification import classify
    from .regression import regress

    preset, out = str(folder / "best_preset.toml"), str(folder / "best")
    quiet = lambda s: None  # noqa: E731 - the run folder holds the details
    if task == "regress":
        m = regress(preset=preset, out=out, overwrite=True, progress=False, echo=quiet)
    else:
        m = classify(preset=preset, out=out, overwrite=True, progress=False, data=data, echo=quiet)
    echo(f"best config retrained on all training data: {test_metric} = {m[test_metric]:.6g} (run folder {out})")
    return {"dir": out, test_metric: m[test_metric], "diverged": m.get("diverged", False)}
