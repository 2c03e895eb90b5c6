"""Callbacks: code that runs on the training events of :func:`nndl.train` and of every run.

A callback subclasses :class:`Callback` and overrides the events it needs::

    class PrintBest(nndl.training.callbacks.Callback):
        def on_epoch_end(self, state, logs):
            if logs["val_loss"] < 0.05:
                state.request_stop("val_loss below 0.05")

    nndl.regress(callbacks=[PrintBest()])

Events, in order
----------------
``on_run_begin(run)`` / ``on_run_end(run)``
    Once per :func:`nndl.regress` / :func:`nndl.classify` call, around all its trainings
    (``run`` is a :class:`RunInfo`: the run folder, task and resolved config; at the end
    also the metrics). A plain :func:`nndl.train` call has no run events.
``on_train_begin(state)``, ``on_epoch_begin(state)``, ``on_epoch_end(state, logs)``, ``on_train_end(state, result)``
    Once per trained model: a regression run trains one model per fold (``state.fold`` =
    1..K) and, with ``final = "refit"``, a last one on all data (``state.fold = "refit"``).
    ``logs`` is the epoch's history row (``epoch``, ``train_loss``, ``val_loss``, [``train_acc``,
    ``val_acc``], ``lr``, ``seconds``); ``result`` is the :class:`~nndl.training.trainer.TrainResult`.
    Any epoch-end callback may call ``state.request_stop(reason)``: training ends after that
    epoch with ``stop_reason = reason``.

Stacked cross-validation (the default ``batched = true`` of regression) trains the K fold
models in one loop: each fold model still gets its own ``state`` and its own events, with
the folds' events of one epoch called one after another (fold 1, fold 2, ...), and a stop
request stops only that fold's model.

Built in: :class:`TensorBoard` (live events, weight histograms every N epochs),
:class:`CSVLogger` (one row per epoch, flushed as it is written), :class:`EarlyStopping`,
and :class:`ProgressBar`, which nndl itself uses for its progress display.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from nndl.base.best_epoch import improves
from nndl.base.errors import NndlError


@dataclass
class RunInfo:
    """What the run events receive: the run folder, the task and the resolved config (a dict)."""

    path: Path
    task: str
    config: dict
    metrics: dict = field(default_factory=dict)  # filled in for on_run_end


class TrainState:
    """The state of one training, passed to every training event.

    Attributes
    ----------
    task : {"regression", "classification"}
    cfg : the training config (``lr``, ``epochs``, ``batch_size``, ...)
    fold : int, "refit" or None
        Which model of a run this is (None for a single model).
    desc : str
        A short label for displays ("fold 2/5").
    epoch : int
        The current (1-based) epoch; 0 before the first.
    epochs : int
        The planned number of epochs.
    history : list of dict
        The rows of the finished epochs.
    model : nn.Module or None
        The model being trained (None inside a stacked loop: use :meth:`named_weights`,
        :meth:`snapshot` and :meth:`restore`).
    """

    def __init__(self, task: str, cfg, *, model: nn.Module | None = None, fold: int | str | None = None,
                 desc: str = "", history: list[dict] | None = None, steps_per_epoch: int = 0):
        self.task, self.cfg, self.model, self.fold, self.desc = task, cfg, model, fold, desc
        self.epochs = int(cfg.epochs)
        self.epoch = 0
        self.steps_per_epoch = steps_per_epoch
        self.history = history if history is not None else []
        self.stop_requested = False
        self.stop_reason = ""

    def request_stop(self, reason: str = "stopped by a callback") -> None:
        """End training after the current epoch; ``reason`` becomes the result's ``stop_reason``."""
        if not self.stop_requested:
            self.stop_requested, self.stop_reason = True, reason

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` of every weight matrix / kernel (biases and norm scales left out)."""
        for name, p in self.model.named_parameters():
            if p.dim() > 1:
                yield name, p.detach()

    def snapshot(self) -> Any:
        """A copy of the current weights, for :meth:`restore`."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, snap: Any) -> None:
        """Put back weights taken by :meth:`snapshot`."""
        self.model.load_state_dict(snap)


class StackMemberState(TrainState):
    """The state of model ``index`` of a :class:`~nndl.nn.models.StackedMLP`, named like a plain MLP."""

    def __init__(self, task: str, cfg, stack: nn.Module, index: int, **kw):
        super().__init__(task, cfg, **kw)
        self.stack, self.index = stack, index

    def _pairs(self):
        for i, (w, b) in enumerate(zip(self.stack.weights, self.stack.biases)):
            yield f"layers.{i}.weight", w, f"layers.{i}.bias", b

    def named_weights(self):
        for wname, w, _, _ in self._pairs():
            yield wname, w[self.index].detach().T

    def snapshot(self):
        return [t[self.index].detach().clone() for _, w, _, b in self._pairs() for t in (w, b)]

    @torch.no_grad()
    def restore(self, snap) -> None:
        tensors = [t for _, w, _, b in self._pairs() for t in (w, b)]
        for t, kept in zip(tensors, snap):
            t[self.index] = kept


class Callback:
    """Base class: every event does nothing; override the ones you need (see the module docs)."""

    def on_run_begin(self, run: RunInfo) -> None:
        pass

    def on_train_begin(self, state: TrainState) -> None:
        pass

    def on_epoch_begin(self, state: TrainState) -> None:
        pass

    def on_batch_end(self, state: TrainState, step: int, loss: torch.Tensor) -> None:
        """After each optimiser step (``loss`` is a device tensor: ``.item()`` costs a host sync)."""

    def on_epoch_end(self, state: TrainState, logs: dict) -> None:
        pass

    def on_train_end(self, state: TrainState, result) -> None:
        pass

    def on_run_end(self, run: RunInfo) -> None:
        pass


class CallbackList:
    """Calls each callback's event in list order. A bare function is an ``on_epoch_end(state, logs)``."""

    def __init__(self, callbacks: Iterable[Callback | Callable] | Callback | None = None):
        self.callbacks: list[Callback] = []
        for cb in _flat(callbacks):
            if isinstance(cb, type):
                raise NndlError(f"callbacks: {cb.__name__} is a class; pass an instance, e.g. {cb.__name__}()")
            if isinstance(cb, Callback):
                self.callbacks.append(cb)
            elif callable(cb):
                self.callbacks.append(_EpochEndFunction(cb))
            else:
                raise NndlError(f"callbacks: {cb!r} is neither an nndl.training.callbacks.Callback nor a function; "
                                "subclass Callback or pass a function(state, logs)")
        # Only callbacks that override on_batch_end are called per step (it is the hot path).
        self._batch = [cb for cb in self.callbacks if type(cb).on_batch_end is not Callback.on_batch_end]

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def __iter__(self):
        return iter(self.callbacks)

    def add(self, cb: Callback) -> "CallbackList":
        """A new list with ``cb`` appended."""
        return CallbackList([*self.callbacks, cb])

    def run_begin(self, run: RunInfo) -> None:
        for cb in self.callbacks:
            cb.on_run_begin(run)

    def train_begin(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(state)

    def epoch_begin(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(state)

    def batch_end(self, state: TrainState, step: int, loss: torch.Tensor) -> None:
        for cb in self._batch:
            cb.on_batch_end(state, step, loss)

    @property
    def per_batch(self) -> bool:
        return bool(self._batch)

    def epoch_end(self, state: TrainState, logs: dict) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(state, logs)

    def train_end(self, state: TrainState, result) -> None:
        for cb in self.callbacks:
            cb.on_train_end(state, result)

    def run_end(self, run: RunInfo) -> None:
        for cb in self.callbacks:
            cb.on_run_end(run)


def _flat(callbacks) -> Iterator:
    """None, one callback, or (nested) lists / CallbackLists of them, in order."""
    if callbacks is None:
        return
    if isinstance(callbacks, (list, tuple, CallbackList)):
        for cb in callbacks:
            yield from _flat(cb)
    else:
        yield callbacks


class _EpochEndFunction(Callback):
    def __init__(self, fn: Callable):
        self.fn = fn

    def on_epoch_end(self, state, logs):
        self.fn(state, logs)


# --------------------------------------------------------------------------- built-in callbacks
class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs; optionally restore the best weights.

    Parameters
    ----------
    monitor : str
        A history column: ``val_loss`` (default), ``val_acc``, ``train_loss`` ...
    patience : int
        Epochs without improvement before stopping (>= 1).
    min_delta : float
        An improvement smaller than this does not count.
    mode : {"auto", "min", "max"}
        ``auto``: maximise columns ending in ``acc``, minimise the rest.
    restore_best : bool
        At the end of training, load the weights of the best epoch.
    warmup : int, optional
        Epochs that are not watched at all (neither a best nor a stop), so a training never stops
        before epoch ``warmup + patience``. Default: a quarter of the training's epochs, because a
        sigmoid net sits on a plateau for its first tens of epochs (the ``seed`` preset: about 80
        of 300) and a patience shorter than that stops it there. ``warmup=0`` watches from epoch 1.

    Trainings whose history has no ``monitor`` column (the refit of a regression run on
    all data has no validation set) are left alone.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0, mode: str = "auto",
                 restore_best: bool = True, warmup: int | None = None):
        if patience < 1:
            raise NndlError(f"EarlyStopping(patience={patience}): patience must be >= 1")
        if mode not in ("auto", "min", "max"):
            raise NndlError(f"EarlyStopping(mode={mode!r}): choose auto, min or max")
        if warmup is not None and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
            raise NndlError(f"EarlyStopping(warmup={warmup!r}): give a whole number of epochs >= 0, or None for a "
                            "quarter of the training")
        self.warmup = warmup
        self.monitor, self.patience, self.min_delta, self.restore_best = monitor, patience, min_delta, restore_best
        self.higher = mode == "max" or (mode == "auto" and monitor.endswith("acc"))
        self._per_state: dict[int, dict] = {}

    def on_train_begin(self, state):
        from nndl.training.engine import StateWeights, StopPolicy  # the engine imports this module

        # The engine's stop policy decides, for this training alone: it never stops on planned epochs
        # (the training's own policy does) and names no lr (it sees no NaN: those epochs are skipped).
        policy = StopPolicy(StateWeights(state, copies=self.restore_best), patience=[self.patience],
                            epochs=[math.inf], lr=[math.nan], higher=self.higher, min_delta=self.min_delta)
        warmup = state.epochs // 4 if self.warmup is None else self.warmup
        self._per_state[id(state)] = {"policy": policy, "warmup": warmup}

    def on_epoch_end(self, state, logs):
        value = logs.get(self.monitor)
        track = self._per_state.get(id(state))
        if value is None or track is None or not math.isfinite(value):
            return
        epoch = logs.get("epoch", state.epoch)
        if epoch <= track["warmup"]:
            return
        policy = track["policy"]
        if policy.update(epoch - 1, [value]):
            state.request_stop(f"early stop: {self.monitor} did not improve for {self.patience} epochs "
                               f"(best {policy.best_metric[0]:.6g} at epoch {policy.best_epoch[0]})")

    def on_train_end(self, state, result):
        track = self._per_state.pop(id(state), None)
        if not track or not self.restore_best or result.diverged or not track["policy"].best_epoch[0]:
            return
        policy = track["policy"]
        policy.finish()  # puts back the best epoch's weights
        result.best_epoch, result.best_metric = policy.best_epoch[0], policy.best_metric[0]


class CSVLogger(Callback):
    """Append one CSV row per epoch (with a ``fold`` column), flushed at once so ``tail -f`` shows it live.

    Parameters
    ----------
    path : path, optional
        The file; default ``RUN/live_history.csv`` inside a run (required for a plain :func:`nndl.train`).
    """

    COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "train_acc", "val_acc", "lr", "seconds", "eval_seconds",
               "wall_time")

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._fh = None
        self._writer = None

    def on_run_begin(self, run):
        if self.path is None:
            self.path = Path(run.path) / "live_history.csv"

    def _open(self):
        if self.path is None:
            raise NndlError("CSVLogger(): give a path (CSVLogger('history.csv')) when training outside a run")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=self.COLUMNS, extrasaction="ignore")
        self._writer.writeheader()

    def on_epoch_end(self, state, logs):
        if self._writer is None:
            self._open()
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in logs.items()}
        fold = "" if state.fold is None else state.fold
        self._writer.writerow({**row, "fold": fold, "wall_time": f"{time.time():.3f}"})
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh, self._writer = None, None

    def on_run_end(self, run):
        self.close()

    def on_train_end(self, state, result):
        if self._fh is not None:
            self._fh.flush()


class TensorBoard(Callback):
    """Live TensorBoard logging: every history column as a scalar when each epoch ends (stamped with
    the real wall time), weight histograms every ``histogram_every`` epochs and at the end of each
    training, and the run's figures once they are drawn.

    Parameters
    ----------
    log_dir : path, optional
        Default ``RUN/tensorboard`` inside a run (required for a plain :func:`nndl.train`).
    histogram_every : int, optional
        Epochs between weight histograms (default: about 20 per training).
    figures : bool
        Add the run's ``figures/*.png`` as images at the end of the run.

    Raises
    ------
    NndlError
        At construction, before any training, when the tensorboard package is missing.

    Tags are ``fold N/train_loss`` (``fold refit/...``) for regression runs and plain
    ``train_loss`` for a single model; histograms are ``[fold N/]weights/<parameter name>``.
    """

    def __init__(self, log_dir: str | Path | None = None, histogram_every: int | None = None, figures: bool = True):
        from nndl.training.tensorboard import require_tensorboard

        self._writer_cls = require_tensorboard()
        if histogram_every is not None and histogram_every < 1:
            raise NndlError(f"TensorBoard(histogram_every={histogram_every}): must be >= 1")
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.histogram_every, self.figures = histogram_every, figures
        self.writer = None
        self.run_dir: Path | None = None

    def on_run_begin(self, run):
        self.run_dir = Path(run.path)
        if self.log_dir is None:
            self.log_dir = self.run_dir / "tensorboard"

    def _open(self):
        if self.writer is None:
            if self.log_dir is None:
                raise NndlError("TensorBoard(): give a log_dir when training outside a run")
            # flush_secs=1: events reach the file within a second of each epoch, so TensorBoard shows them live.
            self.writer = self._writer_cls(log_dir=str(self.log_dir), flush_secs=1)
        return self.writer

    @staticmethod
    def _prefix(state) -> str:
        return "" if state.fold is None else f"fold {state.fold}/"

    def _histograms(self, state, step: int) -> None:
        prefix = self._prefix(state)
        for name, tensor in state.named_weights():
            self.writer.add_histogram(f"{prefix}weights/{name}", tensor.float().cpu().numpy(), step)

    def on_train_begin(self, state):
        self._open()
        self._every = self.histogram_every or max(1, state.epochs // 20)

    def on_epoch_end(self, state, logs):
        prefix, step, now = self._prefix(state), int(logs.get("epoch", state.epoch)), time.time()
        for key, value in logs.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}{key}", value, step, walltime=now)
        if step % self._every == 0:
            self._histograms(state, step)

    def on_train_end(self, state, result):
        last = len(state.history)
        if last and last % self._every != 0:
            self._histograms(state, last)
        self.writer.flush()

    def on_run_end(self, run):
        if self.writer is None:
            return
        if self.figures and self.run_dir is not None:
            from nndl.training.tensorboard import log_figures

            log_figures(self.writer, self.run_dir / "figures")
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ProgressBar(Callback):
    """nndl's own progress display: an epoch bar for short epochs; for long epochs (>= 20 steps) a
    step bar with the live loss and one table line per epoch. ``say`` prints a line.

    Where no bar is seen (output piped to a log), short epochs get table lines too, about 20 per
    training (every ``epochs // 20``-th, the first and the last), else the log would hold nothing."""

    LIVE_EVERY = 25  # steps between live-loss updates (each one is a host sync)

    def __init__(self, say: Callable[[str], None] | None = None, live_loss: bool = True):
        from tqdm.auto import tqdm

        from nndl.base.progress import progress_bar

        self.tqdm, self.live_loss = progress_bar, live_loss  # bars draw only on a terminal or in a notebook
        self.say = say or tqdm.write
        self.epoch_bar = self.step_bar = None
        self.unsaid = None  # the last epoch's logs when its line was skipped

    def on_train_begin(self, state):
        from nndl.base.progress import bars_visible

        self.long = state.steps_per_epoch >= 20
        self.line_every = 1 if self.long else (max(1, state.epochs // 20) if not bars_visible() else None)
        start = len(state.history)
        if not self.long:
            self.epoch_bar = self.tqdm(total=state.epochs, initial=start, desc=state.desc or "epochs", leave=False,
                                       dynamic_ncols=True)
        if self.line_every is not None and start == 0:
            self.say(f"{'epoch':>5} {'train_loss':>10} {'train_acc':>9} {'val_loss':>9} {'val_acc':>8} {'lr':>9} "
                     f"{'dur':>6}")

    def on_epoch_begin(self, state):
        if self.long:
            self.step_bar = self.tqdm(total=state.steps_per_epoch, desc=f"{state.desc} epoch {state.epoch}/"
                                      f"{state.epochs}".strip(), leave=False, dynamic_ncols=True)

    def on_batch_end(self, state, step, loss):
        if self.step_bar is not None:
            self.step_bar.update(1)
            if self.live_loss and step % self.LIVE_EVERY == 0:
                self.step_bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)

    def on_epoch_end(self, state, logs):
        if self.step_bar is not None:
            self.step_bar.close()
            self.step_bar = None
        self.unsaid = None
        if self.line_every is not None:
            if logs["epoch"] % self.line_every == 0 or logs["epoch"] in (1, state.epochs):
                self._line(logs)
            else:
                self.unsaid = logs  # said at the end if training stops here (early stop, time limit)
        if self.epoch_bar is not None:
            self.epoch_bar.update(1)
            post = {"train": f"{logs['train_loss']:.4f}"}
            if "val_loss" in logs:
                post["val"] = f"{logs['val_loss']:.4f}"
            # refresh=False: tqdm redraws at most every mininterval, not on every (sub-millisecond) epoch
            self.epoch_bar.set_postfix(post, refresh=False)

    def _line(self, logs) -> None:
        nan = float("nan")
        self.say(f"{logs['epoch']:>5} {logs['train_loss']:>10.4f} {logs.get('train_acc', nan):>9.4f} "
                 f"{logs.get('val_loss', nan):>9.4f} {logs.get('val_acc', nan):>8.4f} {logs['lr']:>9.2e} "
                 f"{logs['seconds']:>6.1f}")

    def on_train_end(self, state, result):
        self.close()
        if self.unsaid is not None:
            self._line(self.unsaid)
            self.unsaid = None

    def close(self) -> None:
        """Close any open bar (also called when training is interrupted)."""
        for bar in (self.step_bar, self.epoch_bar):
            if bar is not None:
                bar.close()
        self.step_bar = self.epoch_bar = None


def for_run(callbacks, tensorboard: bool = False) -> CallbackList:
    """The callbacks of a regress/classify run: the user's, plus live TensorBoard when asked.

    The tensorboard import is checked here, before any data is read or training starts.
    """
    cbs = CallbackList(callbacks)
    if tensorboard and not any(isinstance(cb, TensorBoard) for cb in cbs):
        cbs = cbs.add(TensorBoard())
    return cbs
