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


def _padded(index_sets: list[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack index tensors of (nearly) equal length into (K, M) with a 0/1 mask for the padding."""
    m = max(len(ix) for ix in index_sets)
    idx = torch.zeros(len(index_sets), m, dtype=torch.long)
    mask = torch.zeros(len(index_sets), m)
    for i, ix in enumerate(index_sets):
        idx[i, : len(ix)], mask[i, : len(ix)] = ix, 1
    return idx.to(device), mask.to(device)


def train_stacked(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                  splits: list[tuple[torch.Tensor, torch.Tensor]], cfg, progress: bool = True) -> list[TrainResult]:
    """Train K same-shaped regression MLPs at once; copy the trained weights back into ``models``.

    Model k gets its own fold's rows, batch by batch, in the order the one-by-one
    path would use (the same seeded permutation), so its gradient equals the
    one-by-one gradient; the optimiser and penalties are element-wise, so each
    model follows its own trajectory. When fold sizes differ by one row, the
    shorter folds are padded and the padding is masked out of the loss.
    Early stopping and best-weights restore act per model. Models may be
    :class:`~nndl.models.MLP` or a wrapper with a ``net`` MLP (e.g.
    standardisation) whose non-trainable buffers are shared.
    """
    k, dev = len(models), x.device
    wrapper = models[0] if _inner(models[0]) is not models[0] else None
    stack = StackedMLP([_inner(m) for m in models]).to(dev)
    forward = (lambda xb: wrapper.apply_to(stack, xb)) if wrapper is not None else stack
    train_idx, train_mask = _padded([tr for tr, _ in splits], dev)
    val_idx, val_mask = _padded([va for _, va in splits], dev)
    x_val, y_val = x[val_idx], y[val_idx]  # (K, V, D), (K, V)
    n = train_idx.shape[1]

    def per_model_mse(out, target, w):  # (K, B, 1), (K, B), (K, B) -> (K,)
        return (((out.squeeze(-1) - target) ** 2) * w).sum(1) / w.sum(1).clamp(min=1)

    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=dev).manual_seed(cfg.seed)
    params = list(stack.parameters())
    optimizer = make_optimizer(params, cfg)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    results = [TrainResult(best_metric=math.inf) for _ in range(k)]
    best = [p.detach().clone() for p in params]
    last_finite = [p.detach().clone() for p in params]
    bad_epochs = [0] * k
    alive = torch.ones(k, dtype=torch.bool, device=dev)  # still training (not stopped early or diverged)
    alive_list = [True] * k
    track_best = cfg.patience > 0
    frozen: dict[int, list[torch.Tensor]] = {}  # last finite weights of diverged models
    step = 0
    t_start = time.perf_counter()
    bar = tqdm(total=cfg.epochs, desc=f"{k} folds (batched)", leave=False, disable=not progress, dynamic_ncols=True)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        torch._foreach_copy_(last_finite, [p.detach() for p in params])
        stack.train()
        perm = torch.randperm(n, device=dev, generator=generator)
        loss_sum = torch.zeros(k, device=dev)
        for b in range(steps_per_epoch):
            cols = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            idx, w = train_idx[:, cols], train_mask[:, cols]
            lr = cfg.lr * lr_factor(step, total_steps, warmup, cfg.schedule, cfg.min_lr_factor)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = per_model_mse(forward(x[idx]), y[idx], w)
            objective = torch.where(alive, losses, 0.0).sum()  # stopped models get exactly zero gradient
            if cfg.l1 > 0:
                objective = objective + cfg.l1 * l1_penalty(stack)
            optimizer.zero_grad(set_to_none=True)
            objective.backward()
            optimizer.step()
            step += 1
            loss_sum += losses.detach() * w.sum(1)
        stack.eval()
        with torch.no_grad():
            val = per_model_mse(forward(x_val), y_val, val_mask)
        train_loss = loss_sum / train_mask.sum(1)
        values = torch.stack([train_loss, val]).tolist()  # the epoch's one host sync
        seconds = (time.perf_counter() - t0) / k
        improved = []
        for i in range(k):
            if not alive_list[i]:
                continue
            res = results[i]
            row = {"epoch": epoch + 1, "train_loss": values[0][i], "val_loss": values[1][i], "lr": lr,
                   "seconds": seconds}
            res.history.append(row)
            res.train_seconds += seconds
            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
                alive_list[i] = False
                res.diverged = True
                res.stop_reason = (f"loss became nan/inf at epoch {epoch + 1}; kept the weights of epoch {epoch}. "
                                   f"The learning rate ({cfg.lr:g}) is probably too high: try --set lr={cfg.lr / 10:g}")
                frozen[i] = [good[i].clone() for good in last_finite]
                continue
            if row["val_loss"] < res.best_metric:
                res.best_metric, res.best_epoch, bad_epochs[i] = row["val_loss"], epoch + 1, 0
                improved.append(i)
            else:
                bad_epochs[i] += 1
                if track_best and bad_epochs[i] >= cfg.patience:
                    alive_list[i] = False
                    res.stop_reason = f"early stop: no improvement for {cfg.patience} epochs"
        if track_best and improved:
            sel = torch.zeros(k, dtype=torch.bool)
            sel[improved] = True
            sel = sel.to(dev)
            with torch.no_grad():
                for p, kept in zip(params, best):
                    kept.copy_(torch.where(sel.view(-1, *[1] * (p.dim() - 1)), p, kept))
        alive = torch.tensor(alive_list, device=dev)
        if progress:
            bar.update(1)
            bar.set_postfix(train=f"{sum(values[0]) / k:.4f}", val=f"{sum(values[1]) / k:.4f}")
        if not any(alive_list):
            break
        if cfg.time_limit and (time.perf_counter() - t_start) > cfg.time_limit and epoch + 1 < cfg.epochs:
            for i in range(k):
                if alive_list[i]:
                    results[i].stop_reason = f"time limit: stopped after {epoch + 1} epochs"
                    results[i].timed_out = True
            break
    bar.close()
    if track_best:  # early stopping restores each model's best epoch
        with torch.no_grad():
            for p, kept in zip(params, best):
                for i in range(k):
                    if not results[i].diverged:
                        p[i] = kept[i]
    with torch.no_grad():
        for i, weights in frozen.items():
            for p, good in zip(params, weights):
                p[i] = good
    for model, trained in zip(models, stack.unstack(_inner(models[0]))):
        _inner(model).load_state_dict(trained.state_dict())
    return results
