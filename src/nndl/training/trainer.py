"""The training loop: one function, top to bottom.

Data are whole tensors already on the device; a batch is an index slice of a
random permutation. The loop only syncs with the host at epoch end (and every
``LIVE_EVERY`` steps for the progress bar), checks the loss for NaN/inf there,
evaluates, keeps the best weights, and writes a checkpoint that makes resuming
exact. Progress display, loggers and user code hang on its events
(:mod:`nndl.training.callbacks`): train begin, epoch begin, batch end, epoch end (where a
callback may request a stop) and train end.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nndl.training.callbacks import CallbackList, ProgressBar, TrainState
from nndl.training.engine import Events, ModuleWeights, StopPolicy, lr_factor, run_epochs, train_steps  # noqa: F401 - lr_factor re-exported
from nndl.base.errors import NndlError, TrainingInterrupted  # noqa: F401 - re-exported
from nndl.base.fileio import atomic_torch_save

LIVE_EVERY = ProgressBar.LIVE_EVERY  # steps between progress-bar loss updates (each one is a host sync)

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]




@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``history`` has one dict per epoch (epoch, train_loss, val_loss, [train_acc,
    val_acc], lr, seconds). ``stop_reason`` is "completed", "early stop", or a
    sentence explaining a NaN/inf stop (then ``diverged`` is True and the model
    holds the last finite weights).
    """

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float = float("nan")
    stop_reason: str = "completed"
    diverged: bool = False
    timed_out: bool = False
    train_seconds: float = 0.0
    compile_seconds: float = 0.0


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class LeanAdam:
    """Adam / AdamW as torch's own fused kernel (``torch._fused_adam_`` / ``_fused_adamw_``), without
    ``torch.optim``.

    The first ``torch.optim`` optimiser a process builds imports ``torch._dynamo`` (its methods
    are wrapped to disable compilation): 1.4-1.7 s, most of the overhead of a 2-second regression
    run. This class calls the same kernel the same way as ``torch.optim.Adam(fused=True)`` (float32
    step counters, zero-initialised moments, parameters without a gradient skipped), so the
    weights it produces are bit-identical (``tests/test_engine.py`` checks it). It has no
    ``state_dict``: runs that write a resumable checkpoint use ``torch.optim``.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, decoupled: bool = False,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [{"params": list(params), "lr": lr}]
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = [p for p in self.param_groups[0]["params"] if p.grad is not None]
        for p in params:
            if p not in self.state:
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        if not params:
            return
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        self.kernel(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states], [], steps, amsgrad=False, lr=self.param_groups[0]["lr"],
                    beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps,
                    maximize=False)


def make_optimizer(params, cfg, resumable: bool = True):
    """Adam / AdamW / SGD(momentum, nesterov) from a config; ``weight_decay`` is the L2 strength.

    ``resumable=False`` (nothing will save the optimiser's state) gives :class:`LeanAdam` for Adam
    and AdamW on CPU/CUDA tensors: the same fused kernel without ``torch.optim``'s import cost.
    """
    params = list(params)
    # One fused kernel per step instead of a dozen small ops per tensor: it matters for small nets.
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if not resumable and fusable and cfg.optimizer in ("adam", "adamw"):
        return LeanAdam(params, cfg.lr, cfg.weight_decay, decoupled=cfg.optimizer == "adamw")
    fused = fusable or None
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices/kernels (biases and norm scales excluded)."""
    return sum(p.abs().sum() for name, p in model.named_parameters() if p.dim() > 1)


def loss_fn(task: str, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """MSE for regression; cross-entropy on logits for classification."""
    if task == "regression":
        return F.mse_loss(outputs.float().reshape(targets.shape), targets)
    return F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, *, batch_size: int = 4096,
             transform: Transform | None = None, tta_flip: bool = False, amp: bool = False) -> dict:
    """Loss (and accuracy for classification) of ``model`` on ``(x, y)`` in large batches.

    Returns
    -------
    dict with ``loss``, ``outputs`` (logits or predictions, on the device) and,
    for classification, ``accuracy`` (a fraction in [0, 1]).
    """
    from nndl.nn.inference import Predictor  # the one inference path (normalise, flip TTA, autocast, batches)

    to_input = (lambda xb: transform(xb, None)) if transform else None  # noqa: E731
    outputs = Predictor(model, to_input, tta_flip=tta_flip, amp=amp, batch_size=batch_size).logits(x)
    result = {"loss": loss_fn(task, outputs, y).item(), "outputs": outputs}
    if task == "classification":
        result["accuracy"] = (outputs.argmax(1) == y).float().mean().item()
    return result


CHECKPOINT_KEYS = ("model", "optimizer", "best_state", "epoch", "step", "bad_epochs", "history", "best_epoch",
                   "best_metric", "train_seconds", "generator", "torch_rng")


def load_checkpoint(path: Path, device: torch.device) -> dict:
    """A resumable checkpoint, or one line saying why this file is not one (truncated, foreign, random)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises many types for truncated and foreign files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise NndlError(f"{path}: not a loadable checkpoint ({first}); it may be truncated or from another "
                        "program: start a new run") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise NndlError(f"{path}: not an nndl training checkpoint (no '{missing[0]}'); start a new run")
    return ckpt


def cpu_computes_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where oneDNN runs bf16
    convolutions and matmuls at about twice the fp32 speed; elsewhere bf16 is emulated and slower."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def autocast_on(cfg, device: torch.device) -> bool:
    """Whether a run trains and evaluates under bf16 autocast: ``amp`` on CUDA; ``amp_cpu`` on a CPU
    with native bf16 (:func:`cpu_computes_bf16`); never elsewhere (MPS, CPUs without it)."""
    if device.type == "cuda":
        return bool(getattr(cfg, "amp", False))
    return device.type == "cpu" and bool(getattr(cfg, "amp_cpu", False)) and cpu_computes_bf16()


@dataclass(frozen=True)
class ModelOptions:
    """The settings :func:`train` reads beyond :class:`~nndl.base.config.TrainConfig`'s, in one place.

    Classification configs have them all; a regression config has none of them, and the
    defaults here are what a regression run means (no smoothing, no test-time flip, no
    autocast, no compile). ``amp`` here is the decision of :func:`autocast_on`, not the config key.
    """

    label_smoothing: float = 0.0
    tta_flip: bool = False
    amp: bool = False
    compile: bool = False
    eval_batch_size: int = 4096

    @classmethod
    def of(cls, cfg, device: torch.device) -> "ModelOptions":
        values = {f: getattr(cfg, f) for f in cls.__dataclass_fields__ if hasattr(cfg, f)}
        values["amp"] = autocast_on(cfg, device)
        return cls(**values)


def _state_copy(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# What a finished training's checkpoint adds: the outcome, so a resume after training skips it.
FINISHED_FIELDS = ("best_epoch", "best_metric", "stop_reason", "diverged", "timed_out", "train_seconds",
                   "compile_seconds")


def _restore(path: Path, model: nn.Module, optimizer, generator: torch.Generator, policy: StopPolicy,
             result: TrainResult) -> tuple[int, int, bool]:
    """Load a checkpoint of :func:`_checkpoint` into the run's objects; returns (start epoch, step, finished).

    A finished training's checkpoint holds the final weights (the best ones, where kept) and the
    outcome: the result is filled and nothing is left to train."""
    device = generator.device
    ckpt = load_checkpoint(path, device)
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:  # another model's or optimiser's checkpoint
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise NndlError(f"{path}: does not fit this run's model/optimiser ({first}); "
                        "resume the run that wrote it, or start a new run") from None
    if isinstance(ckpt.get("finished"), dict):
        result.history = ckpt["history"]
        for key in FINISHED_FIELDS:
            setattr(result, key, ckpt["finished"][key])
        torch.set_rng_state(ckpt["torch_rng"])
        return ckpt["epoch"], ckpt["step"], True
    result.history, result.train_seconds = ckpt["history"], ckpt["train_seconds"]
    policy.resume(best=ckpt["best_state"], best_epoch=[ckpt["best_epoch"]], best_metric=[ckpt["best_metric"]],
                  bad_epochs=[ckpt["bad_epochs"]], elapsed=ckpt["train_seconds"])
    if result.history:
        policy.last_epoch = [len(result.history)]
    generator.set_state(ckpt["generator"].to(generator.get_state().device))
    torch.set_rng_state(ckpt["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in ckpt:
        torch.cuda.set_rng_state(ckpt["cuda_rng"])
    return ckpt["epoch"], ckpt["step"], False


def _checkpoint(model: nn.Module, optimizer, generator: torch.Generator, policy: StopPolicy, result: TrainResult,
                epochs_done: int, step: int) -> dict:
    """Everything an exact resume needs: weights, optimiser, best snapshot, counters, history, RNG states."""
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "best_state": policy.best,
            "epoch": epochs_done, "step": step, "bad_epochs": policy.bad_epochs[0], "history": result.history,
            "best_epoch": policy.best_epoch[0], "best_metric": policy.best_metric[0],
            "train_seconds": result.train_seconds, "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state()}
    if generator.device.type == "cuda":
        ckpt["cuda_rng"] = torch.cuda.get_rng_state()
    return ckpt


def _compiled(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, task: str, transform) -> tuple[nn.Module, float]:
    """``torch.compile(model)`` warmed up on one batch, and the seconds that took (reported apart).

    The warm-up runs on a throwaway copy of the state, so BN statistics are untouched."""
    t0 = time.perf_counter()
    compiled = torch.compile(model)
    saved = _state_copy(model)
    loss_fn(task, compiled(transform(xb, None) if transform else xb), yb).backward()
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    return compiled, time.perf_counter() - t0


def train(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, cfg, *, task: str,
          x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
          transform: Transform | None = None, checkpoint_path: str | Path | None = None, resume: bool = False,
          progress: bool = True, desc: str = "", echo: Callable[[str], None] | None = None,
          callbacks=None, fold: int | str | None = None, options: ModelOptions | None = None) -> TrainResult:
    """Train ``model`` in place and return its history.

    Parameters
    ----------
    model : nn.Module
        Already on the device of ``x_train``; outputs logits (classification) or values.
    x_train, y_train : Tensor
        The whole training set, on the training device.
    cfg : TrainConfig
        Optimiser, schedule, epochs, batch size, penalties, early stopping, seed.
    task : {"regression", "classification"}
    x_val, y_val : Tensor, optional
        Validation data: evaluated every epoch; early stopping (``cfg.patience``)
        and best-weights restore follow ``val_loss`` (regression) or ``val_acc``.
    transform : callable, optional
        ``transform(xb, generator)`` turns a raw batch into model input; the
        generator is given for training batches (random augmentation) and is None
        at evaluation.
    checkpoint_path : path, optional
        Written every epoch (model, optimiser, RNG states, history, best); with
        ``resume=True`` training continues from it and ends exactly as an
        uninterrupted run would (on CPU).
    progress : bool
        Show a progress bar with live loss, and an epoch table when epochs are long
        (the :class:`~nndl.training.callbacks.ProgressBar` callback, run before ``callbacks``).
    callbacks : list of Callback or functions, optional
        Called on the training events (see :mod:`nndl.training.callbacks`); an epoch-end callback
        may call ``state.request_stop(reason)`` to end training after that epoch.
    fold : int or str, optional
        Which model of a run this is (``state.fold`` of the callbacks: fold number or "refit").
    options : ModelOptions, optional
        Label smoothing, test-time flip, autocast, compile and the evaluation batch size;
        default: those of ``cfg`` where it has them (a classification config), else none
        (:meth:`ModelOptions.of`).

    Returns
    -------
    TrainResult
    """
    if len(x_train) == 0:
        raise NndlError("training set is empty")
    return _Training(model, x_train, y_train, cfg, task, x_val, y_val, transform, checkpoint_path, progress, desc,
                     echo, callbacks, fold, options).run(resume)


class _Training:
    """One :func:`train` call: its state as attributes and the engine's hooks as methods.

    The engine owns the loops (:func:`~nndl.training.engine.run_epochs` calls :meth:`train_epoch`
    and :meth:`save_checkpoint`; :func:`~nndl.training.engine.train_steps` calls :meth:`batch_loss`);
    this class holds what one model's training needs between those calls.
    """

    def __init__(self, model, x_train, y_train, cfg, task, x_val, y_val, transform, checkpoint_path, progress, desc,
                 echo, callbacks, fold, options):
        self.model, self.x_train, self.y_train, self.cfg, self.task = model, x_train, y_train, cfg, task
        self.x_val, self.y_val, self.transform = x_val, y_val, transform
        self.device = x_train.device
        self.n = len(x_train)
        self.classify = task == "classification"
        self.options = options if options is not None else ModelOptions.of(cfg, self.device)
        self.has_val = x_val is not None and len(x_val) > 0
        self.steps_per_epoch = math.ceil(self.n / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = int(cfg.warmup_epochs * self.steps_per_epoch)
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.optimizer = make_optimizer(model.parameters(), cfg, resumable=bool(checkpoint_path))
        self.result = TrainResult(best_metric=-math.inf if self.classify else math.inf)
        # best weights, patience, NaN rollback, time limit and stop reasons: the engine's one policy
        self.policy = StopPolicy(ModuleWeights(model), patience=[cfg.patience], epochs=[cfg.epochs], lr=[cfg.lr],
                                 higher=self.classify, validated=self.has_val, time_limit=cfg.time_limit)
        self.step = 0
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        self.saved = None  # the epochs the checkpoint on disk holds (None: none written)
        self.train_model = model
        self.correct = torch.zeros((), device=self.device)  # right training predictions of the epoch
        self.progress, self.echo, self.callbacks, self.fold, self.desc = progress, echo, callbacks, fold, desc

    def run(self, resume: bool) -> TrainResult:
        """Train from the start, or from the checkpoint when ``resume`` and one exists."""
        cfg, result, start_epoch = self.cfg, self.result, 0
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            start_epoch, self.step, finished = _restore(self.checkpoint_path, self.model, self.optimizer,
                                                        self.generator, self.policy, result)
            if finished:  # interrupted after training (while testing, drawing, ...): nothing to train
                return result
            self.saved = start_epoch
        if self.options.compile:
            self.train_model, result.compile_seconds = _compiled(self.model, self.x_train[: cfg.batch_size],
                                                                 self.y_train[: cfg.batch_size], self.task,
                                                                 self.transform)
        # after the restore: the state reads the history the checkpoint brought back
        # a live loss is a host sync: free on CPU, a stall on a GPU
        self.bar = ProgressBar(self.echo, live_loss=self.device.type == "cpu") if self.progress else None
        self.say = self.echo or (self.bar.say if self.bar is not None else (lambda s: None))
        self.state = TrainState(self.task, cfg, model=self.model, fold=self.fold, desc=self.desc,
                                history=result.history, steps_per_epoch=self.steps_per_epoch)
        callbacks = [self.bar, self.callbacks] if self.bar is not None else self.callbacks
        self.events = Events(CallbackList(callbacks), [self.state])
        self.state.epoch = start_epoch
        self.events.train_begin()
        monitor = "val_acc" if self.classify else "val_loss"
        try:
            # the engine's epoch loop: NaN rollback, events, best weights, patience, checkpoint, time limit
            run_epochs(self.policy, self.events, [result], start_epoch=start_epoch, max_epochs=cfg.epochs,
                       train_epoch=self.train_epoch,
                       monitor=(lambda row: row[monitor]) if self.has_val else (lambda row: None),
                       after_epoch=self.save_checkpoint, say=self.say)
            if self.checkpoint_path is not None:  # the final weights and the outcome: a resume trains nothing
                finished = {key: getattr(result, key) for key in FINISHED_FIELDS}
                atomic_torch_save({**_checkpoint(self.model, self.optimizer, self.generator, self.policy, result,
                                                 len(result.history), self.step), "finished": finished},
                                  self.checkpoint_path)
        except KeyboardInterrupt:
            epoch = max(self.state.epoch, start_epoch + 1)  # the 1-based epoch that was running
            held = f"the checkpoint holds epoch {self.saved}" if self.saved is not None else "no checkpoint was written"
            raise TrainingInterrupted(f"interrupted during epoch {epoch}; {held}", epoch=epoch,
                                      saved=self.saved) from None
        finally:
            if self.bar is not None:
                self.bar.close()
        return result

    def lr_at(self, at: int) -> list[float]:
        cfg = self.cfg
        return [cfg.lr * lr_factor(at, self.total_steps, self.warmup_steps, cfg.schedule, cfg.min_lr_factor)]

    def set_lr(self, lrs: list[float]) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lrs[0]

    def batch_loss(self, idx: torch.Tensor):
        """The forward pass of one batch: its loss (N = 1), the objective with the L1 term, its rows."""
        xb, yb = self.x_train[idx], self.y_train[idx]
        transform, options = self.transform, self.options
        if transform is not None:
            xb = transform(xb, self.generator)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=options.amp):
            out = self.train_model(xb)
        # mixup/cutmix: the transform mixed the inputs; its MixedTargets hold both labels and the weight
        mixed = transform.mixed_targets(yb) if getattr(transform, "mixes", False) else None
        smoothing = float(options.label_smoothing)
        loss = loss_fn(self.task, out, yb, smoothing) if mixed is None else mixed.cross_entropy(out, smoothing)
        if self.classify:
            self.correct += (out.detach().argmax(1) == yb).sum()
        objective = loss + self.cfg.l1 * l1_penalty(self.model) if self.cfg.l1 > 0 else loss
        return loss.reshape(1), objective, len(idx)

    def train_epoch(self, epoch: int) -> list[dict]:
        """One epoch of optimiser steps (the engine's step loop), then the evaluation: the history row."""
        n, options = self.n, self.options
        t0 = time.perf_counter()
        self.model.train()
        self.correct = torch.zeros((), device=self.device)
        self.step, loss_sum, (lr,) = train_steps(self.step, rows=n, batch_size=self.cfg.batch_size,
                                                 generator=self.generator, n_models=1, lr_at=self.lr_at,
                                                 set_lr=self.set_lr, batch_loss=self.batch_loss,
                                                 optimizer=self.optimizer, events=self.events)
        row = {"epoch": epoch + 1, "train_loss": loss_sum[0].item() / n}
        if self.classify:
            row["train_acc"] = self.correct.item() / n
        train_done = time.perf_counter()
        if self.has_val:
            ev = evaluate(self.train_model, self.x_val, self.y_val, self.task, batch_size=options.eval_batch_size,
                          transform=self.transform, tta_flip=options.tta_flip, amp=options.amp)
            row["val_loss"] = ev["loss"]
            if self.classify:
                row["val_acc"] = ev["accuracy"]
        row["lr"] = lr
        row["seconds"] = time.perf_counter() - t0  # training + evaluation of this epoch
        row["eval_seconds"] = time.perf_counter() - train_done
        return [row]

    def save_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_path is not None:
            atomic_torch_save(_checkpoint(self.model, self.optimizer, self.generator, self.policy, self.result,
                                          epoch + 1, self.step), self.checkpoint_path)
            self.saved = epoch + 1
