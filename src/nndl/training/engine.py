"""The engine: one epoch loop and one stop policy for N >= 1 models, written once.

:func:`nndl.training.trainer.train` trains one model and :func:`nndl.training.stacked.train_stacked` trains a
stack of N models (K folds x M trials). Each supplies only its epoch of optimiser steps and
evaluation; :func:`run_epochs` runs the epochs around it in one order (events, checks,
checkpoint hook, time limit), and one :class:`StopPolicy` decides on per-model vectors
(N = 1 for a single model):

- NaN/inf in a model's train or validation loss stops that model, rolls it back to the
  weights it had when the epoch began, and says why (the likely cause: the learning rate);
- best-metric tracking with a snapshot of the best weights, and patience (early stopping);
- a callback's stop request, and a model's own planned number of epochs;
- one time limit in wall-clock seconds since training began (plus the seconds a resumed
  run had already spent), checked after each epoch;
- one stop-reason text per model: "completed", "early stop: ...", "time limit: ...", the
  callback's reason, or the NaN sentence.

Weights are reached through a small adapter, :class:`ModuleWeights` (one ``nn.Module``) or
:class:`StackWeights` (stacked parameters whose dimension 0 is the model), so the policy
never knows which loop it serves. :func:`train_steps` is the one step loop (a permutation,
batches, the lr schedule, forward/backward/step, the loss sums) with the forward pass handed
in; :func:`lr_factor` is the lr schedule, and :class:`Events` dispatches the training events
of each of the N models to the callbacks.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch
from torch import nn

from nndl.base.best_epoch import improves
from nndl.training.callbacks import CallbackList


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, min_factor: float = 0.0) -> float:
    """Multiplier on the base lr at optimiser step ``step`` (a pure function of the step).

    ``onecycle`` is a linear ramp over the first 25% of steps (or the warm-up, if
    given) then linear decay, the shape CIFAR speed runs use; ``cosine`` and
    ``linear`` decay to ``min_factor`` after an optional linear warm-up.
    """
    if schedule == "onecycle" and warmup_steps == 0:
        warmup_steps = max(1, total_steps // 4)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * progress))
    else:  # linear, onecycle
        decay = 1.0 - progress
    return min_factor + (1 - min_factor) * decay


def divergence_reason(key: str, value: float, epoch: int, lr: float) -> str:
    """The one sentence for a NaN/inf stop (``epoch`` is 1-based; the weights of ``epoch - 1`` are kept)."""
    return (f"{key} became {value} at epoch {epoch}; kept the weights of epoch {epoch - 1}. "
            f"The learning rate ({lr:g}) is probably too high: try --set lr={lr / 10:g}")


def early_stop_reason(patience: int) -> str:
    return f"early stop: no improvement for {patience} epochs"


def time_limit_reason(epochs: int, seconds: float) -> str:
    return f"time limit: stopped after {epochs} epochs ({seconds:.0f} s)"


COMPLETED = "completed"
CHECKED = ("train_loss", "val_loss")  # the history columns whose NaN/inf stops a model


# --------------------------------------------------------------------------- weights adapters
class ModuleWeights:
    """The weights of one model (N = 1); a snapshot is a copy of its state dict."""

    n = 1

    def __init__(self, model: nn.Module):
        self.model = model

    def snapshot(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def refresh(self, snap) -> dict:
        """A snapshot of the current weights (``snap``, the previous one, may be reused)."""
        return self.snapshot()

    def keep(self, snap, models: list[int]) -> dict:
        """``snap`` with the listed models' entries replaced by their current weights."""
        return self.snapshot() if models else snap

    def piece(self, i: int, snap=None):
        """Model ``i``'s part of ``snap`` (of the current weights when None)."""
        return self.snapshot() if snap is None else snap

    def put(self, i: int, piece) -> None:
        self.model.load_state_dict(piece)


class StackWeights:
    """The weights of N stacked models: tensors whose dimension 0 indexes the model.

    Snapshots are lists of whole-stack copies, updated in place, so a per-epoch
    snapshot costs one fused copy rather than N state-dict copies.
    """

    def __init__(self, params: Sequence[torch.Tensor]):
        self.params = list(params)
        self.n = int(self.params[0].shape[0])

    def snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def refresh(self, snap) -> list[torch.Tensor]:
        if snap is None:
            return self.snapshot()
        torch._foreach_copy_(snap, [p.detach() for p in self.params])
        return snap

    @torch.no_grad()
    def keep(self, snap, models: list[int]) -> list[torch.Tensor]:
        if models:
            sel = torch.zeros(self.n, dtype=torch.bool)
            sel[models] = True
            sel = sel.to(self.params[0].device)
            for p, kept in zip(self.params, snap):
                kept.copy_(torch.where(sel.view(-1, *[1] * (p.dim() - 1)), p, kept))
        return snap

    def piece(self, i: int, snap=None) -> list[torch.Tensor]:
        return [t[i].detach().clone() for t in (self.params if snap is None else snap)]

    @torch.no_grad()
    def put(self, i: int, piece) -> None:
        for p, good in zip(self.params, piece):
            p[i] = good


class StateWeights(ModuleWeights):
    """The weights a callback reaches through its :class:`~nndl.training.callbacks.TrainState`
    (one model, or one member of a stack); ``copies=False`` takes no snapshots (nothing to restore)."""

    def __init__(self, state, copies: bool = True):
        self.state, self.copies = state, copies

    def snapshot(self):
        return self.state.snapshot() if self.copies else None

    def put(self, i: int, piece) -> None:
        self.state.restore(piece)


# --------------------------------------------------------------------------- the stop policy
class StopPolicy:
    """Best weights, patience, NaN/inf rollback, time limit and stop reasons for N models.

    Parameters
    ----------
    weights : ModuleWeights or StackWeights
        How to snapshot and restore each model's weights.
    patience, epochs, lr : sequences of length N
        Per model: epochs without improvement before an early stop (0 = none), the planned
        epochs, and the base lr (named in the NaN sentence).
    higher : bool
        The monitored metric improves upwards (accuracy) rather than downwards (loss).
    min_delta : float
        An improvement smaller than this does not count (0: any strict improvement).
    validated : bool
        There is a validation set: without one there is no best epoch, no patience and no
        best-weights restore.
    time_limit : float
        Wall-clock seconds after which every model still training stops (0 = none).
    clock : callable
        Seconds as a float (``time.perf_counter``; a fake clock in tests).

    The loop calls, per epoch: :meth:`epoch_begin` (remembers the last finite weights),
    then after the epoch :meth:`check_finite` (before the epoch-end events, so callbacks
    see finite weights), the events, :meth:`update` with the callbacks' stop requests, and
    :meth:`check_time`; at the end :meth:`finish` puts back each model's weights to keep.
    ``stopped[i]`` is True once model ``i`` trains no more; ``reason[i]`` says why.
    """

    def __init__(self, weights, *, patience: Sequence[int], epochs: Sequence[int], lr: Sequence[float],
                 higher: bool = False, min_delta: float = 0.0, validated: bool = True, time_limit: float = 0.0,
                 clock: Callable[[], float] = time.perf_counter):
        n = weights.n
        if not (len(patience) == len(epochs) == len(lr) == n):
            raise ValueError(f"StopPolicy: patience, epochs and lr need one entry per model ({n})")
        self.weights, self.n, self.higher, self.validated = weights, n, higher, validated
        self.margin = min_delta if higher else -min_delta  # added to the best value a new one must beat
        self.patience, self.epochs, self.lr = list(patience), list(epochs), list(lr)
        self.tracked = [validated and p > 0 for p in self.patience]  # best weights restored at the end
        self.time_limit, self.clock = float(time_limit or 0.0), clock
        self.best_metric = [-math.inf if higher else math.inf] * n
        self.best_epoch = [0] * n
        self.bad_epochs = [0] * n
        self.stopped = [False] * n
        self.reason = [COMPLETED] * n
        self.diverged = [False] * n
        self.timed_out = [False] * n
        self.last_epoch = [0] * n  # the last epoch each model trained (its history length)
        self.best = weights.snapshot()
        self.last_finite = None
        self._kept: dict[int, object] = {}  # weights to put back at the end (diverged or frozen models)
        self._t0 = clock()
        self._before = 0.0

    def start(self) -> None:
        """Start the time-limit clock (call right before the first epoch: setup and compilation do not count)."""
        self._t0 = self.clock()

    # ---- resume
    def resume(self, *, best, best_epoch: Sequence[int], best_metric: Sequence[float], bad_epochs: Sequence[int],
               elapsed: float = 0.0) -> None:
        """Continue from a checkpoint: its best snapshot and counters, and the seconds already spent."""
        self.best = best
        self.best_epoch, self.best_metric, self.bad_epochs = list(best_epoch), list(best_metric), list(bad_epochs)
        self._before = float(elapsed)

    @property
    def elapsed(self) -> float:
        """Wall-clock seconds of training so far (including a resumed run's earlier seconds)."""
        return self._before + self.clock() - self._t0

    @property
    def alive(self) -> list[bool]:
        return [not s for s in self.stopped]

    def all_stopped(self) -> bool:
        return all(self.stopped)

    # ---- per epoch
    def epoch_begin(self) -> None:
        """Remember the weights at the start of the epoch: the rollback target if the loss turns NaN/inf."""
        self.last_finite = self.weights.refresh(self.last_finite)

    def check_finite(self, epoch: int, rows: Sequence[dict | None]) -> list[int]:
        """Stop and roll back each model whose row (``None`` = not training) holds a NaN/inf loss.

        ``epoch`` is 0-based. Returns the models that diverged in this epoch.
        """
        diverged = []
        for i, row in enumerate(rows):
            if row is None or self.stopped[i]:
                continue
            self.last_epoch[i] = epoch + 1
            bad = [k for k in CHECKED if k in row and not math.isfinite(row[k])]
            if not bad:
                continue
            good = self.weights.piece(i, self.last_finite)
            self.weights.put(i, good)  # at once, so epoch-end callbacks see finite weights
            self._kept[i] = good  # and again at the end: Adam's momentum moves a stacked model on
            self.stopped[i], self.diverged[i] = True, True
            self.reason[i] = divergence_reason(bad[0], row[bad[0]], epoch + 1, self.lr[i])
            diverged.append(i)
        return diverged

    def update(self, epoch: int, metrics: Sequence[float | None], requests: Sequence[str | None] = ()) -> list[int]:
        """Best weights, patience, planned epochs and callback stop requests after epoch ``epoch`` (0-based).

        ``metrics[i]`` is model i's monitored value (None without validation); models
        already stopped are skipped; ``requests[i]`` is a callback's stop reason or None. An early stop takes
        precedence over a request, and a request over "completed". Returns the models that
        stopped here.
        """
        requests = list(requests) or [None] * self.n
        improved, stopped = [], []
        for i, metric in enumerate(metrics):
            if self.stopped[i]:
                continue
            best = self.best_metric[i]
            better = metric is not None and self.validated and improves(metric, best + self.margin, self.higher)
            if better:
                self.best_metric[i], self.best_epoch[i], self.bad_epochs[i] = metric, epoch + 1, 0
                improved.append(i)
            else:
                self.bad_epochs[i] += 1
            if self.tracked[i] and self.bad_epochs[i] >= self.patience[i]:
                self._stop(i, early_stop_reason(self.patience[i]))
            elif requests[i]:
                self._stop(i, requests[i])
            elif epoch + 1 >= self.epochs[i]:
                self._stop(i, COMPLETED)
            if self.stopped[i]:
                stopped.append(i)
        self.best = self.weights.keep(self.best, [i for i in improved if self.tracked[i]])
        return stopped

    def check_time(self, epoch: int) -> list[int]:
        """Stop every model still training when the time limit has passed; returns them."""
        if not self.time_limit or self.all_stopped():
            return []
        seconds = self.elapsed
        if seconds <= self.time_limit:
            return []
        out = [i for i in range(self.n) if not self.stopped[i]]
        for i in out:
            self.stopped[i], self.timed_out[i], self.reason[i] = True, True, time_limit_reason(epoch + 1, seconds)
        return out

    def _stop(self, i: int, reason: str) -> None:
        self.stopped[i], self.reason[i] = True, reason
        if not self.tracked[i] and self.n > 1:
            # A stopped stacked model gets zero gradient, but Adam's momentum would still move it: keep it now.
            self._kept[i] = self.weights.piece(i)

    # ---- end
    def finish(self) -> None:
        """Put back each model's weights to keep: the best epoch's (early stopping, unless it diverged),
        the last finite ones (diverged) or those it stopped with (a stopped stacked model).

        ``best_metric`` is the monitored validation value of ``best_epoch``, and NaN when no epoch was
        validated (no validation data, or none improved on the start value)."""
        for i in range(self.n):
            if self.diverged[i] or (i in self._kept and not self.tracked[i]):
                self.weights.put(i, self._kept[i])
            elif self.tracked[i] and self.best_epoch[i] > 0:
                self.weights.put(i, self.weights.piece(i, self.best))
            if not self.validated and self.last_epoch[i]:
                self.best_epoch[i] = self.last_epoch[i]  # no validation: the weights kept are the last epoch's
            if not self.validated or self.best_epoch[i] == 0:
                # No validated epoch, no best metric: NaN says so, where the train loss (or the +-inf start
                # value) would read as a validation score.
                self.best_metric[i] = math.nan

    def fill(self, result, i: int = 0) -> None:
        """Copy model ``i``'s outcome into a :class:`~nndl.training.trainer.TrainResult`."""
        result.best_epoch, result.best_metric = self.best_epoch[i], self.best_metric[i]
        result.stop_reason, result.diverged, result.timed_out = self.reason[i], self.diverged[i], self.timed_out[i]


# --------------------------------------------------------------------------- the step loop
def train_steps(step: int, *, rows: int, batch_size: int, generator: torch.Generator, n_models: int,
                lr_at: Callable[[int], list[float]], set_lr: Callable[[list[float]], None],
                batch_loss: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, object]], optimizer,
                events: "Events | None" = None,
                after_step: Callable[[int, torch.Tensor], bool] | None = None) -> tuple[int, torch.Tensor, list[float]]:
    """One epoch of optimiser steps for N >= 1 models: the step loop every trainer runs.

    Parameters
    ----------
    step : int
        Optimiser steps taken before this epoch (the lr schedule's position).
    rows, batch_size : int
        A fresh permutation of ``range(rows)`` (drawn from ``generator``) is cut into
        batches of ``batch_size`` indices; the last batch may be shorter.
    n_models : int
        N: 1 for one model, K x M for a stack.
    lr_at : callable
        ``lr_at(step) -> lrs``: the learning rate(s) at that step (one per distinct schedule).
    set_lr : callable
        ``set_lr(lrs)`` hands them to the optimiser before its step.
    batch_loss : callable
        ``batch_loss(idx) -> (losses, objective, weight)``: the forward pass on batch ``idx``;
        ``losses`` holds each model's mean loss (N values), ``objective`` is the scalar to
        differentiate (losses plus penalties), ``weight`` the rows each loss averaged (a number
        or N values), so the epoch's loss is a row-weighted mean.
    optimizer
        ``zero_grad`` / ``step``.
    events : Events, optional
        Batch-end events for each model (sent only when a callback listens per batch).
    after_step : callable, optional
        ``after_step(step, losses) -> bool`` after each optimiser step (``step`` counts it,
        ``losses`` are the batch's, detached); True ends the epoch there (the lr finder's sweep
        stops mid-epoch).

    Returns
    -------
    (step, loss_sum, lrs)
        The step count after the epoch, the per-model sum of ``losses * weight`` (on the device:
        no host sync here), and the last step's learning rates.
    """
    perm = torch.randperm(rows, device=generator.device, generator=generator)
    loss_sum = torch.zeros(n_models, device=generator.device)
    per_batch = events is not None and events.per_batch
    lrs: list[float] = []
    for b in range(math.ceil(rows / batch_size)):
        idx = perm[b * batch_size:(b + 1) * batch_size]
        lrs = lr_at(step)
        set_lr(lrs)
        losses, objective, weight = batch_loss(idx)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        step += 1
        losses = losses.detach()
        loss_sum += losses * weight
        if per_batch:
            for i in range(n_models):
                events.batch_end(b, losses[i], i)
        if after_step is not None and after_step(step, losses):
            break
    return step, loss_sum, lrs


# --------------------------------------------------------------------------- the epoch loop
def run_epochs(policy: StopPolicy, events: "Events", results: Sequence, *, start_epoch: int, max_epochs: int,
               train_epoch: Callable[[int], list], monitor: Callable[[dict], float | None],
               after_epoch: Callable[[int], None] | None = None, say: Callable[[str], None] | None = None) -> None:
    """The epoch loop of every trainer: N >= 1 models, one policy, one event order.

    Parameters
    ----------
    policy : StopPolicy
    events : Events
    results : sequence of TrainResult
        One per model: each finished epoch's row is appended to its ``history`` and its
        ``seconds`` added to ``train_seconds``; at the end each gets its stop outcome.
    start_epoch, max_epochs : int
        0-based first epoch (a resumed run's), and the most epochs any model trains.
    train_epoch : callable
        ``train_epoch(epoch) -> rows``: trains the models that are still training for one
        epoch and evaluates them; ``rows[i]`` is model i's history row (None once stopped).
    monitor : callable
        ``monitor(row)``: the value best weights and patience follow (None: no validation).
    after_epoch : callable, optional
        ``after_epoch(epoch)`` once the policy has decided (e.g. write a checkpoint); not
        called after an epoch in which every model diverged.
    say : callable, optional
        Prints "stopped: <reason>" for a model that diverged.

    Each epoch: remember the last finite weights, epoch-begin events, ``train_epoch``, the
    NaN/inf check and rollback, epoch-end events (callbacks may request a stop), best weights,
    patience and planned epochs, ``after_epoch``, the time limit. At the end: each model's
    weights to keep are put back, its result filled, and the train-end events sent.
    """
    policy.start()
    for epoch in range(start_epoch, max_epochs):
        policy.epoch_begin()
        events.epoch_begin(epoch, policy.alive)
        rows = train_epoch(epoch)
        for res, row in zip(results, rows):
            if row is not None:
                res.history.append(row)
                res.train_seconds += row["seconds"]
        diverged = policy.check_finite(epoch, rows)  # before the events: callbacks see finite weights
        requests = [None if row is None else events.epoch_end(i, row) for i, row in enumerate(rows)]
        for i in diverged:
            if say is not None:
                say(f"stopped: {policy.reason[i]}")
        if policy.all_stopped() and diverged:
            break
        policy.update(epoch, [None if row is None else monitor(row) for row in rows], requests)
        if after_epoch is not None:
            after_epoch(epoch)
        if policy.all_stopped() or policy.check_time(epoch):
            break
    policy.finish()
    for i, res in enumerate(results):
        policy.fill(res, i)
    events.train_end(results)


# --------------------------------------------------------------------------- events
class Events:
    """The training events of N models, one :class:`~nndl.training.callbacks.TrainState` each, sent to one callback list.

    The models' events of one epoch are called one after another (model 1, model 2, ...);
    a stop request of one model's state stops only that model.
    """

    def __init__(self, callbacks, states: list):
        self.cbs = callbacks if isinstance(callbacks, CallbackList) else CallbackList(callbacks)
        self.states = states
        self.per_batch = self.cbs.per_batch

    def train_begin(self) -> None:
        for s in self.states:
            self.cbs.train_begin(s)

    def epoch_begin(self, epoch: int, alive: Sequence[bool]) -> None:
        """``epoch`` is 0-based; only models still training get the event."""
        for s, live in zip(self.states, alive):
            if live:
                s.epoch = epoch + 1
                self.cbs.epoch_begin(s)

    def batch_end(self, step: int, loss: torch.Tensor, i: int = 0) -> None:
        self.cbs.batch_end(self.states[i], step, loss)

    def epoch_end(self, i: int, row: dict) -> str | None:
        """Model ``i``'s epoch end; returns a stop reason when a callback asked it to stop."""
        s = self.states[i]
        self.cbs.epoch_end(s, row)
        return s.stop_reason if s.stop_requested else None

    def train_end(self, results: Sequence) -> None:
        for s, res in zip(self.states, results):
            self.cbs.train_end(s, res)
