"""K-fold cross-validation: shuffled splits, and K fold models trained one by one or stacked."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import NndlError
from .models import MLP, StackedMLP
from .training import TrainResult, evaluate, l1_penalty, lr_factor, make_optimizer, train


def kfold_indices(n: int, k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled K-fold split of ``range(n)``: a list of ``(train_idx, val_idx)``.

    Shuffling matters: on data sorted by x an unshuffled split validates by
    extrapolation. Fold sizes differ by at most one.
    """
    if k < 2:
        raise NndlError(f"folds = {k}: cross-validation needs at least 2 folds")
    if n < k:
        raise NndlError(f"only {n} rows for {k} folds: use fewer folds (--set folds=N) or more data")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    chunks = torch.tensor_split(perm, k)
    return [(torch.cat([c for j, c in enumerate(chunks) if j != i]).sort().values, chunks[i].sort().values)
            for i in range(k)]


@dataclass
class FoldResult:
    model: nn.Module
    result: TrainResult
    train_mse: float
    val_mse: float


def cross_validate(make_model, x: torch.Tensor, y: torch.Tensor, cfg, *, batched: bool = False,
                   progress: bool = True) -> list[FoldResult]:
    """Train one model per fold of a shuffled K-fold split and score it on the held-out fold.

    Parameters
    ----------
    make_model : callable
        ``make_model(fold) -> nn.Module``: a fresh model (seed it per fold for reproducibility).
    x, y : Tensor
        Training inputs and regression targets on the training device.
    cfg : RegressConfig
        ``folds`` and ``seed`` pick the split; the rest configures :func:`~nndl.train.train`.
    batched : bool
        Train all folds as one :class:`~nndl.models.StackedMLP` (requires MLP models).
        Full-batch training then matches the one-by-one path up to float rounding.

    Returns
    -------
    list of FoldResult, one per fold, each model with its best weights restored.
    """
    splits = kfold_indices(len(x), cfg.folds, cfg.seed)
    models = [make_model(i) for i in range(cfg.folds)]
    if batched:
        results = train_stacked(models, x, y, splits, cfg, progress=progress)
    else:
        results = []
        for i, (model, (tr, va)) in enumerate(zip(models, splits)):
            results.append(train(model, x[tr], y[tr], cfg, task="regression", x_val=x[va], y_val=y[va],
                                 progress=progress, desc=f"fold {i + 1}/{cfg.folds}"))
    folds = []
    for model, res, (tr, va) in zip(models, results, splits):
        folds.append(FoldResult(model, res, evaluate(model, x[tr], y[tr], "regression")["loss"],
                                evaluate(model, x[va], y[va], "regression")["loss"]))
    return folds


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)


def train_stacked(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                  splits: list[tuple[torch.Tensor, torch.Tensor]], cfg, progress: bool = True) -> list[TrainResult]:
    """Train K same-shaped regression MLPs at once; copy the trained weights back into ``models``.

    Every model sees the whole ``x`` but a 0/1 mask keeps its loss to its own
    fold's training rows, so its gradient equals the one-by-one gradient; the
    optimiser and penalties are element-wise, so each model follows its own
    trajectory. Early stopping and best-weights restore act per model.
    Models may be :class:`~nndl.models.MLP` or a wrapper with an ``net`` MLP
    (e.g. standardisation), whose non-trainable buffers are shared.
    """
    k, n = len(models), len(x)
    wrapper = models[0] if _inner(models[0]) is not models[0] else None
    stack = StackedMLP([_inner(m) for m in models]).to(x.device)
    forward = (lambda xb: wrapper.apply_to(stack, xb)) if wrapper is not None else stack
    train_w = torch.zeros(k, n, device=x.device)
    val_w = torch.zeros(k, n, device=x.device)
    for i, (tr, va) in enumerate(splits):
        train_w[i, tr.to(x.device)] = 1
        val_w[i, va.to(x.device)] = 1

    def per_model_mse(out, target, w):  # (K, B, 1), (B,), (K, B) -> (K,)
        err = (out.squeeze(-1) - target) ** 2
        return (err * w).sum(1) / w.sum(1).clamp(min=1)

    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=x.device).manual_seed(cfg.seed)
    optimizer = make_optimizer(stack.parameters(), cfg)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    results = [TrainResult(best_metric=math.inf) for _ in range(k)]
    best = [p.detach().clone() for p in stack.parameters()]
    best_val = torch.full((k,), math.inf, device=x.device)
    bad_epochs = torch.zeros(k, dtype=torch.long)
    alive = torch.ones(k, dtype=torch.bool)  # still training (not stopped early or diverged)
    step = 0
    t_start = time.perf_counter()
    bar = tqdm(total=cfg.epochs, desc=f"{k} folds (batched)", leave=False, disable=not progress, dynamic_ncols=True)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        last_finite = [p.detach().clone() for p in stack.parameters()]
        stack.train()
        perm = torch.randperm(n, device=x.device, generator=generator)
        loss_sum = torch.zeros(k, device=x.device)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            lr = cfg.lr * lr_factor(step, total_steps, warmup, cfg.schedule, cfg.min_lr_factor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = per_model_mse(forward(x[idx]), y[idx], train_w[:, idx])
            objective = losses[alive.to(x.device)].sum()
            if cfg.l1 > 0:
                objective = objective + cfg.l1 * l1_penalty(stack)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            step += 1
            loss_sum += losses.detach() * train_w[:, idx].sum(1)
        stack.eval()
        with torch.no_grad():
            val = per_model_mse(forward(x), y, val_w)
        train_loss = (loss_sum / train_w.sum(1)).cpu()
        val_cpu = val.cpu()
        seconds = (time.perf_counter() - t0) / k
        for i in range(k):
            if not alive[i]:
                continue
            res = results[i]
            row = {"epoch": epoch + 1, "train_loss": train_loss[i].item(), "val_loss": val_cpu[i].item(),
                   "lr": lr, "seconds": seconds}
            res.history.append(row)
            res.train_seconds += seconds
            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
                alive[i] = False
                res.diverged = True
                res.stop_reason = (f"loss became nan/inf at epoch {epoch + 1}; kept the weights of epoch {epoch}. "
                                   f"The learning rate ({cfg.lr:g}) is probably too high: try --set lr={cfg.lr / 10:g}")
                with torch.no_grad():
                    for p, good in zip(stack.parameters(), last_finite):
                        p[i] = good[i]
                continue
            if row["val_loss"] < res.best_metric:
                res.best_metric, res.best_epoch, bad_epochs[i] = row["val_loss"], epoch + 1, 0
                with torch.no_grad():
                    for p, kept in zip(stack.parameters(), best):
                        kept[i] = p[i]
            else:
                bad_epochs[i] += 1
                if cfg.patience > 0 and bad_epochs[i] >= cfg.patience:
                    alive[i] = False
                    res.stop_reason = f"early stop: no improvement for {cfg.patience} epochs"
        bar.update(1)
        bar.set_postfix(train=f"{train_loss.mean():.4f}", val=f"{val_cpu.mean():.4f}")
        if not alive.any():
            break
        if cfg.time_limit and (time.perf_counter() - t_start) > cfg.time_limit and epoch + 1 < cfg.epochs:
            for i in range(k):
                if alive[i]:
                    results[i].stop_reason = f"time limit: stopped after {epoch + 1} epochs"
                    results[i].timed_out = True
            break
    bar.close()
    if cfg.patience > 0:  # early stopping restores each model's best epoch
        with torch.no_grad():
            for p, kept in zip(stack.parameters(), best):
                for i in range(k):
                    if not results[i].diverged:
                        p[i] = kept[i]
    for model, trained in zip(models, stack.unstack(_inner(models[0]))):
        _inner(model).load_state_dict(trained.state_dict())
    return results
