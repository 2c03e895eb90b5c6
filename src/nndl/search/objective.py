"""The K-fold objective: a trial's config, its folds, pruning, and a FAIL with a reason for anything
that is not a trustworthy value (NaN/inf, a crash, ``--timeout-per-trial``)."""
from __future__ import annotations

import contextlib
import math
import os
import socket
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from nndl.base import config as config_mod
from nndl.search import optuna_shim
from nndl.search.space import ALIASES, suggest


def crash_reason(e: Exception) -> str:
    """``Type: first line of the message`` (at most 300 characters of it)."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


class TrialFailed(Exception):
    """A trial without a trustworthy value; the reason is in its ``fail_reason`` user attribute."""


class Objective:
    """K-fold objective: the mean of the task's validation metric over the folds, reported fold by fold."""

    def __init__(self, task, space, preset, overrides, seed, folds, timeout, pruner, slot=None):
        self.task, self.space, self.preset, self.seed = task, space, preset, seed
        self.overrides, self.folds, self.timeout, self.pruner, self.slot = overrides, folds, timeout, pruner, slot
        self.data = None  # the task's search data (Task.search_data), read once per process

    @property
    def spec(self):
        """The :class:`~nndl.tasks.base.Task` searched (loaded on first use: the CLI's help needs none)."""
        from nndl.tasks import get_task

        return get_task(self.task)

    def config(self, params: dict[str, Any] | None = None):
        """The resolved config of a trial: preset, [fixed], --set, the sampled values, then --seed."""
        values = {**self.space.fixed, **config_mod.parse_overrides(self.overrides)}
        values.update({ALIASES.get(k, k): v for k, v in (params or {}).items()})
        if self.folds and "folds" in config_mod.field_names(self.task):  # a task whose config holds K
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
            if self.spec.lone_trials_stacked:  # the folds train as one stack: scored when all are done
                return self._score_stacked(trial, self._cross_validate([cfg])[0])
            return self._one_by_one(trial, cfg)
        return self.guarded(trial, run)

    # ------------------------------------------------------------------ batched (stacked) trials
    def run_batch(self, study, trials: list, on_trial) -> None:
        """Run asked trials together: those whose configs share the task's :meth:`~nndl.tasks.base.Task.stack_key`
        train as one stacked model of all their folds, the others one by one; every trial is then scored,
        reported and told."""
        told: set[int] = set()

        def tell(trial, value=None, state=None):
            told.add(trial.number)
            try:
                frozen = study.tell(trial, value, state=state)
            except RuntimeError as e:  # GridSampler stops the study after its last point; outside optimize()
                if not optuna_shim.is_grid_stop(e):  # that raises, after the state is stored
                    raise
                frozen = optuna_shim.stored_trial(study, trial)
            on_trial(study, frozen)

        with contextlib.ExitStack() as heartbeats:
            for trial in trials:  # RDB storage: a worker killed mid-batch loses its trials by heartbeat
                heartbeats.enter_context(optuna_shim.heartbeat(study, trial))
            try:
                for members in self._stacks(trials, tell).values():
                    self._run_stack(members, tell)
            except KeyboardInterrupt:  # as study.optimize does: the trials end FAIL and are retried on resume
                for trial in trials:
                    if trial.number not in told:
                        trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
                        study.tell(trial, state=TrialState.FAIL)
                raise

    def _stacks(self, trials: list, tell) -> dict[Any, list]:
        """The trials' configs grouped by what can train as one stack (the task's ``stack_key``; None: a
        stack of its own, trained one by one); a trial whose config fails is told."""
        groups: dict[Any, list] = {}
        for trial in trials:
            self.start(trial)
            try:
                cfg = self.guarded(trial, lambda: self.config(suggest(trial, self.space)))
            except TrialFailed:
                tell(trial, state=TrialState.FAIL)
                continue
            key = self.spec.stack_key(cfg)
            key = ("alone", trial.number) if key is None else key
            groups.setdefault(key, []).append((trial, cfg))
        return groups

    def _run_stack(self, members: list, tell) -> None:
        """Train one stack of (trial, config) pairs, then score and tell each trial."""
        try:
            results = self._cross_validate([cfg for _, cfg in members])
        except Exception as e:  # the whole stack failed: so did each of its trials
            for trial, _ in members:
                trial.set_user_attr("fail_reason", crash_reason(e))
                tell(trial, state=TrialState.FAIL)
            return
        for (trial, _), folds in zip(members, results):
            try:
                tell(trial, self.guarded(trial, lambda: self._score_stacked(trial, folds)))
            except TrialFailed:
                tell(trial, state=TrialState.FAIL)
            except optuna.TrialPruned:
                tell(trial, state=TrialState.PRUNED)

    # ------------------------------------------------------------------ scoring
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
            self.fail(trial, f"a fold gave a non-finite {self.spec.val_metric}: {values}")
        trial.set_user_attr("fold_values", values)
        return sum(values) / len(values)

    # ------------------------------------------------------------------ the folds
    def _cross_validate(self, cfgs: list) -> list[list]:
        """Fold scores of configs that share a network, trained as one stack (the task's own)."""
        if self.data is None:
            self.data = self.spec.search_data(cfgs[0])
        return self.spec.cross_validate_stacked(cfgs, self.data, self.folds or self.spec.search_folds(cfgs[0]))

    def _score_stacked(self, trial, folds) -> float:
        # The folds train together (stacked), so pruning can only mark a trial, not shorten it.
        self.check(trial, [(f["diverged"], f["timed_out"], f["stop_reason"]) for f in folds])
        values = [f["score"] for f in folds]
        for i in range(len(values)):
            if math.isfinite(values[i]):
                self.report(trial, i, values[i], values[: i + 1])
        return self.score(trial, values)

    def _one_by_one(self, trial, cfg) -> float:
        """Fold by fold (the task's ``cross_validate``), each fold reported as it ends (pruning can stop it)."""
        if self.data is None:
            self.data = self.spec.search_data(cfg)
        seen: list[float] = []

        def on_fold(i: int, value: float) -> None:
            if math.isfinite(value):
                seen.append(value)
                self.report(trial, i, value, seen)

        folds = self.spec.cross_validate(cfg, self.data, self.folds or self.spec.search_folds(cfg), on_fold=on_fold)
        self.check(trial, [(f["diverged"], f["timed_out"], f["stop_reason"]) for f in folds])
        return self.score(trial, [f["score"] for f in folds])
