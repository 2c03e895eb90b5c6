"""The learning-rate finder: an exponential lr sweep over a fraction of an epoch.

The lr grows geometrically from ``lr_min`` to ``lr_max``, one value per mini-batch, on a
fresh model of the chosen preset with its own optimiser. The training loss (smoothed)
falls while the lr is useful and blows up once it is too high; the suggestion is a tenth
of the lr at the smoothed loss minimum (the steepest-fall lr is reported beside it). It is
a starting point for ``--set lr=...``, not a tuned value::

    nndl lr-find classify --preset cnn          # prints the suggestion, writes lr_find.png
    res = nndl.lr_find("regress", preset="seed"); res.suggestion
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nndl.base.errors import NndlError
from nndl.tasks import DEFAULT_TASK, get_task, task_names

SMOOTHING = 0.9  # exponential moving average of the batch loss (bias-corrected), so one noisy batch does not decide
DIVERGE_FACTOR = 4.0  # stop once the smoothed loss is this many times its best: everything after is blow-up


@dataclass
class LRFindResult:
    """What :func:`lr_find` returns.

    Attributes
    ----------
    lrs, losses : list of float
        The lr of each step and the smoothed training loss after it.
    raw_losses : list of float
        The unsmoothed batch losses.
    suggestion : float
        The suggested lr (inside ``[lrs[0], lrs[-1]]``): a tenth of the lr at the loss minimum.
    steepest : float
        The lr where the loss fell fastest (the other common rule; shown on the plot too).
    stop_reason : str
        "swept" or why the sweep ended early (the loss diverged).
    path : Path or None
        Folder holding ``lr_find.png`` and ``lr_find.json``.
    """

    task: str
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    raw_losses: list[float] = field(default_factory=list)
    suggestion: float = float("nan")
    steepest: float = float("nan")
    stop_reason: str = "swept"
    path: Path | None = None
    seconds: float = 0.0

    def __repr__(self) -> str:
        return (f"LRFindResult({self.task}, suggestion={self.suggestion:.3g}, {len(self.lrs)} steps, "
                f"{self.stop_reason!r}, path={str(self.path)!r})")

    def figure(self):
        """Loss against lr (log axis) with the suggestion marked, as a ``matplotlib.figure.Figure``."""
        from nndl.figures.inline import inline_figure

        fig = inline_figure(figsize=(6.5, 4), dpi=100)
        ax = fig.subplots()
        ax.plot(self.lrs, self.raw_losses, color="0.75", lw=0.8, label="batch loss")
        ax.plot(self.lrs, self.losses, color="C0", lw=1.6, label="smoothed loss")
        ax.axvline(self.suggestion, color="C3", ls="--", label=f"suggested lr {self.suggestion:.3g}")
        if math.isfinite(self.steepest):
            ax.axvline(self.steepest, color="0.5", ls=":", label=f"steepest fall {self.steepest:.3g}")
        ax.set_xscale("log")
        finite = [v for v in self.losses if math.isfinite(v)]
        if finite:  # the blow-up at the end would squash the useful part of the curve
            low, start = min(finite), finite[0]
            ax.set_ylim(low - 0.05 * abs(start - low) - 1e-12, start + 0.5 * abs(start - low) + 1e-12)
        ax.set(xlabel="learning rate", ylabel="training loss", title=f"lr finder ({self.task})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def _repr_html_(self) -> str:
        import base64
        import io

        buf = io.BytesIO()
        self.figure().savefig(buf, format="png")
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return (f"<p><b>suggested lr {self.suggestion:.3g}</b> ({len(self.lrs)} steps from {self.lrs[0]:.2g} to "
                f"{self.lrs[-1]:.2g}; {self.stop_reason})</p><img src='data:image/png;base64,{data}'/>")


def steepest(lrs, losses) -> float:
    """The lr where ``losses`` fall fastest against ``log10(lrs)``, before the loss minimum.

    A central-difference slope over a window of ~5% of the points smooths the last noise;
    when the loss never falls, the lowest lr is returned.
    """
    lrs, losses = _finite(lrs, losses)
    if len(lrs) < 3:
        return float(lrs[0]) if len(lrs) else float("nan")
    end = int(np.argmin(losses)) + 1  # after the minimum the loss only rises
    if end < 3:
        return float(lrs[0])
    x, y = np.log10(lrs[:end]), losses[:end]
    w = max(1, end // 20)
    if end > 2 * w:
        return float(lrs[int(np.argmin((y[2 * w:] - y[:-2 * w]) / (x[2 * w:] - x[:-2 * w]))) + w])
    return float(lrs[int(np.argmin(np.gradient(y, x)))])


def suggest(lrs, losses) -> float:
    """A tenth of the lr at the smoothed loss minimum (never below the first lr swept).

    The minimum sits just before the blow-up, so a tenth of it is still on the falling part
    of the curve with room to spare. The steepest point (:func:`steepest`) is the other usual
    rule; on small full-batch problems it comes late in the sweep, where the loss falls partly
    because the model has already trained for many steps, and so overshoots.
    """
    lrs, losses = _finite(lrs, losses)
    if not len(lrs):
        return float("nan")
    return float(max(lrs[0], lrs[int(np.argmin(losses))] / 10))


def _finite(lrs, losses) -> tuple[np.ndarray, np.ndarray]:
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    keep = np.isfinite(losses)
    return lrs[keep], losses[keep]


def _setup(spec, cfg, data, device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, Callable | None, str]:
    """A fresh model and the training tensors of ``cfg`` (the task's :meth:`~nndl.tasks.base.Task.setup`)."""
    setup = spec.setup(cfg, spec.load(cfg, data), device)
    return setup.make_model(0), setup.x, setup.y, setup.transform, setup.loss


def lr_find(task: str = DEFAULT_TASK, preset: str | None = None, overrides: dict[str, Any] | list[str] | None = None,
            seed: int | None = None, *, lr_min: float = 1e-6, lr_max: float = 1.0, fraction: float = 0.5,
            min_steps: int | None = None, out: str | Path | None = None, overwrite: bool = False, data=None,
            progress: bool = False, echo: Callable[[str], None] = print) -> LRFindResult:
    """Sweep the learning rate exponentially over a fraction of an epoch and suggest one.

    Parameters
    ----------
    task : {"regress", "classify"}
    preset, overrides, seed :
        The model, optimiser and data, as for :func:`nndl.regress` / :func:`nndl.classify`
        (``lr``, ``epochs`` and the schedule are ignored: the sweep sets the lr itself).
    lr_min, lr_max : float
        The swept range (``0 < lr_min < lr_max``).
    fraction : float
        Part of one epoch to sweep over (in mini-batches); at least ``min_steps`` batches,
        cycling through the data again when an epoch is shorter (small regression sets).
    min_steps : int, optional
        Default 100 for classify, 300 for regress: a full-batch regression set takes one step
        per epoch, and with fewer steps the sweep ends before the net has left its starting plateau.
    out : path, optional
        Folder for ``lr_find.png`` and ``lr_find.json`` (default: a new ``runs/lr-find-TASK-...``).
    data : FashionData, optional
        Already loaded Fashion-MNIST (classify only).

    Returns
    -------
    LRFindResult
        ``suggestion``, the swept ``lrs`` and ``losses``, ``figure()``, ``path``.
    """
    from nndl.base import config as config_mod
    from nndl.base.fileio import atomic_write_bytes
    from nndl.runfolder.files import new_run_dir, place, removed_on_failure, write_json
    from nndl.training.trainer import pick_device

    if task not in task_names():
        raise NndlError(f"lr-find: unknown task '{task}'; choose one of {', '.join(task_names())}")
    spec = get_task(task)
    if not (0 < lr_min < lr_max) or not math.isfinite(lr_max):
        raise NndlError(f"lr-find: need 0 < lr_min < lr_max (got lr_min={lr_min:g}, lr_max={lr_max:g})")
    min_steps = min_steps if min_steps is not None else spec.lr_find_min_steps
    if not 0 < fraction <= 10 or min_steps < 5:
        raise NndlError("lr-find: fraction must be in (0, 10] (epochs) and min_steps >= 5")
    preset = preset or spec.default_preset
    cfg = config_mod.resolve(task, preset, overrides, seed)
    device = pick_device(cfg.device)
    model, x, y, transform, loss_task = _setup(spec, cfg, data, device)
    folder = new_run_dir(out, f"lr-find-{task}", overwrite, writes=("lr_find.png", "lr_find.json"))
    with removed_on_failure(folder):
        result = _sweep(task, cfg, model, x, y, transform, loss_task, device, folder, lr_min, lr_max, fraction,
                        min_steps, progress)
        fig = result.figure()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        atomic_write_bytes(folder / "lr_find.png", buffer.getvalue())
        write_json(folder / "lr_find.json", {"task": task, "config": config_mod.to_dict(cfg), "suggestion":
                                             result.suggestion, "stop_reason": result.stop_reason,
                                             "lrs": result.lrs, "losses": result.losses,
                                             "raw_losses": result.raw_losses})
    result.path = folder = place(folder)  # over the folder it replaces (--overwrite), now that it is complete
    echo(f"suggested lr: {result.suggestion:.3g} ({len(result.lrs)} steps, {lr_min:g} to {result.lrs[-1]:.3g}; "
         f"{result.stop_reason}; {result.seconds:.1f} s)\nplot: {folder / 'lr_find.png'}\n"
         f"use it: {_use_it(task, preset, overrides, seed, result.suggestion)}")
    return result


def _use_it(task: str, preset: str, overrides, seed: int | None, lr: float) -> str:
    """The command that trains with the suggested lr on the same data and settings as the sweep."""
    import shlex

    from nndl.base.config import parse_overrides

    def text(value: Any) -> str:
        if isinstance(value, (list, tuple)):
            return ",".join(map(str, value))
        return str(value).lower() if isinstance(value, bool) else str(value)

    words = ["nndl", task, "--preset", preset]
    for key, value in parse_overrides(overrides).items():
        if key != "lr":
            flag = get_task(task).cli_flags.get(key)  # the task command's own flag, else --set
            words += [flag, text(value)] if flag else ["--set", f"{key}={text(value)}"]
    words += ["--seed", str(seed)] if seed is not None else []
    return shlex.join(words + ["--set", f"lr={lr:.3g}"])


def _sweep(task, cfg, model, x, y, transform, loss_task, device, folder, lr_min, lr_max, fraction, min_steps,
           progress) -> LRFindResult:
    """The sweep itself: one fresh model, the lr growing geometrically, smoothed losses, the suggestion.

    The steps are the engine's step loop (:func:`~nndl.training.engine.train_steps`), a pass over the
    data at a time (reshuffled each pass), ended after the last lr or once the loss blows up.
    """
    from nndl.base.progress import progress_bar
    from nndl.training.engine import train_steps
    from nndl.training.trainer import loss_fn, make_optimizer

    n = len(x)
    steps = max(min_steps, math.ceil(fraction * math.ceil(n / cfg.batch_size)))
    lrs = lr_min * (lr_max / lr_min) ** (np.arange(steps) / (steps - 1))
    optimizer = make_optimizer(model.parameters(), cfg)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    result = LRFindResult(task=task, path=folder)
    smoothing = float(getattr(cfg, "label_smoothing", 0.0))
    sweep = _Smoothed(result, lrs, steps)

    def set_lr(lr: list[float]) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr[0]

    def batch_loss(idx):
        xb, yb = x[idx], y[idx]
        if transform is not None:
            xb = transform(xb, generator)
        out = model(xb)
        mixed = transform.mixed_targets(yb) if getattr(transform, "mixes", False) else None  # mixup/cutmix
        loss = loss_fn(loss_task, out, yb, smoothing) if mixed is None else mixed.cross_entropy(out, smoothing)
        return loss.reshape(1), loss, len(idx)

    t0 = time.perf_counter()
    model.train()
    with progress_bar(total=steps, desc="lr sweep", leave=False, enabled=progress) as bar:
        def after_step(step: int, losses: torch.Tensor) -> bool:
            bar.update()
            return sweep.add(step - 1, losses[0].item())  # one host sync per step: the sweep needs every value

        step = 0
        while not sweep.done:
            step, _, _ = train_steps(step, rows=n, batch_size=cfg.batch_size, generator=generator, n_models=1,
                                     lr_at=lambda s: [float(lrs[s])], set_lr=set_lr, batch_loss=batch_loss,
                                     optimizer=optimizer, after_step=after_step)
    result.seconds = time.perf_counter() - t0
    result.suggestion = suggest(result.lrs, result.losses)
    result.steepest = steepest(result.lrs, result.losses)
    return result


class _Smoothed:
    """The sweep's record: each step's lr and loss, the bias-corrected moving average, and when to stop."""

    def __init__(self, result: LRFindResult, lrs: np.ndarray, steps: int):
        self.result, self.lrs, self.steps = result, lrs, steps
        self.avg, self.best, self.done = 0.0, math.inf, False

    def add(self, i: int, value: float) -> bool:
        """Record step ``i``'s batch loss; True once the sweep is over (the last lr, or a blow-up)."""
        result, lr = self.result, float(self.lrs[i])
        result.lrs.append(lr)
        result.raw_losses.append(value)
        self.done = i + 1 >= self.steps
        if not math.isfinite(value):
            result.losses.append(value)
            result.stop_reason = f"loss became {value} at lr {lr:.3g}"
            self.done = True
            return True
        self.avg = SMOOTHING * self.avg + (1 - SMOOTHING) * value
        smoothed = self.avg / (1 - SMOOTHING ** (i + 1))
        result.losses.append(smoothed)
        self.best = min(self.best, smoothed)
        if i > 10 and smoothed > DIVERGE_FACTOR * self.best:
            result.stop_reason = f"loss diverged (over {DIVERGE_FACTOR:g}x its best) at lr {lr:.3g}"
            self.done = True
        return self.done
