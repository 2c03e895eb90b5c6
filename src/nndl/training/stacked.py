"""The stacked trainer: N models of one architecture trained as one batched model.

One forward pass and one batch order serve every model; learning rates, weight decay, L1,
schedules, epochs and stopping stay per model (:data:`PER_MODEL_FIELDS`). Used by the batched
cross-validation (:func:`nndl.training.crossval.cross_validate_many`) and the stacked searches.
"""
from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

from nndl.base.progress import progress_bar
from nndl.nn.models import StackedMLP
from nndl.training.callbacks import StackMemberState
from nndl.training.engine import Events, StackWeights, StopPolicy, lr_factor, run_epochs, train_steps
from nndl.training.trainer import TrainResult, make_optimizer
from nndl.training.threads import ThreadProbe


# Config fields that may differ between the models of one stack: they enter only the optimiser
# step, the L1 term, the per-model lr schedule and the per-model stopping. Everything else
# (architecture, data, batch size, optimiser kind, seed) must be equal, because one batched
# forward pass and one batch order serve every model.
PER_MODEL_FIELDS = frozenset({"lr", "weight_decay", "l1", "epochs", "schedule", "warmup_epochs", "min_lr_factor",
                              "patience"})


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


def stack_key(cfg) -> tuple:
    """Configs with equal keys can train as one stack (they differ at most in ``PER_MODEL_FIELDS``)."""
    return tuple((f.name, repr(getattr(cfg, f.name))) for f in dataclasses.fields(cfg)
                 if f.name not in PER_MODEL_FIELDS)


class PerModelOptimizer:
    """Adam / AdamW / SGD over stacked parameters (dimension 0 = model) with an lr and a weight decay per model.

    torch's optimisers take one lr per parameter tensor, and a stack holds every model in
    one tensor. The update rules are torch's (bias correction and eps as in ``Adam``,
    decoupled decay as in ``AdamW``, coupled L2 and Nesterov as in ``SGD``), written with
    broadcasting; a model with lr 0 does not move.
    """

    def __init__(self, params: list[torch.Tensor], cfg, weight_decay: torch.Tensor):
        self.params, self.kind, self.weight_decay = params, cfg.optimizer, weight_decay
        self.momentum, self.nesterov = cfg.momentum, cfg.nesterov and cfg.momentum > 0
        self.betas, self.eps, self.steps = (0.9, 0.999), 1e-8, 0
        self.lr: torch.Tensor | None = None  # one entry per model, set before each step
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: torch.Tensor | None = None) -> None:
        """One update with ``lr`` (one entry per model), or the ``lr`` set before."""
        lr = self.lr if lr is None else lr
        self.steps += 1
        beta1, beta2 = self.betas
        for p, state in zip(self.params, self.state):
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr_k, decay_k = lr.view(shape), self.weight_decay.view(shape)
            grad = p.grad
            if self.kind == "adamw":
                p.mul_(1 - lr_k * decay_k)
            else:
                grad = grad + decay_k * p
            if self.kind == "sgd":
                if self.momentum:
                    if "buf" not in state:
                        state["buf"] = grad.clone()
                    else:
                        state["buf"].mul_(self.momentum).add_(grad)
                    grad = grad + self.momentum * state["buf"] if self.nesterov else state["buf"]
                p.sub_(lr_k * grad)
                continue
            if not state:
                state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
            m, v = state["m"], state["v"]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(1 - beta2 ** self.steps)).add_(self.eps)
            p.sub_(lr_k / (1 - beta1 ** self.steps) * m / denom)


def _schedules(cfgs: list, steps_per_epoch: int) -> tuple[list[tuple], list[int]]:
    """The distinct lr schedules of a stack's configs, and which one each model follows (computed once
    per step, then spread over its models)."""
    schedules = [(c.lr, c.epochs * steps_per_epoch, int(c.warmup_epochs * steps_per_epoch), c.schedule,
                  c.min_lr_factor) for c in cfgs]
    distinct = list(dict.fromkeys(schedules))
    return distinct, [distinct.index(s) for s in schedules]


def train_stacked(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                  splits: list[tuple[torch.Tensor, torch.Tensor]], cfg, progress: bool = True,
                  callbacks=None) -> list[TrainResult]:
    """Train same-shaped regression MLPs at once; copy the trained weights back into ``models``.

    Model k gets its own split's rows, batch by batch, in the order the one-by-one
    path would use (the same seeded permutation), so its gradient equals the
    one-by-one gradient; the optimiser and penalties are element-wise, so each
    model follows its own trajectory. When split sizes differ by one row, the
    shorter ones are padded and the padding is masked out of the loss.
    ``cfg`` is one config for all models, or a list of one per model that may differ
    in ``PER_MODEL_FIELDS``: each model then follows its own lr schedule and stops
    after its own epochs (its lr is 0 from then on). Early stopping and best-weights
    restore act per model. Models may be :class:`~nndl.nn.models.MLP` or a wrapper with
    a ``net`` MLP (e.g. standardisation) whose non-trainable buffers are shared.
    """
    k, dev = len(models), x.device
    cfgs = list(cfg) if isinstance(cfg, (list, tuple)) else [cfg] * k
    base = cfgs[0]
    # One config for all: torch's fused optimiser with one lr. Otherwise lr/decay per model.
    uniform = all(c == base for c in cfgs)
    wrapper = models[0] if _inner(models[0]) is not models[0] else None
    stack = StackedMLP([_inner(m) for m in models]).to(dev)
    dropout = any(rate > 0 for rate in stack.drop_rates)  # else train/eval mode changes nothing: skip the toggles
    forward = (lambda xb: wrapper.apply_to(stack, xb)) if wrapper is not None else stack
    train_idx, train_mask = _padded([tr for tr, _ in splits], dev)
    val_idx, val_mask = _padded([va for _, va in splits], dev)
    x_val, y_val = x[val_idx], y[val_idx]  # (K, V, D), (K, V)
    n = train_idx.shape[1]

    def per_model_mse(out, target, w):  # (K, B, 1), (K, B), (K, B) -> (K,)
        return (((out.squeeze(-1) - target) ** 2) * w).sum(1) / w.sum(1).clamp(min=1)

    torch.manual_seed(base.seed)
    generator = torch.Generator(device=dev).manual_seed(base.seed)
    params = list(stack.parameters())
    distinct, owner = _schedules(cfgs, math.ceil(n / base.batch_size))
    owner_t = torch.tensor(owner, device=dev)
    if uniform:
        optimizer = make_optimizer(params, base, resumable=False)
    else:
        optimizer = PerModelOptimizer(params, base, torch.tensor([c.weight_decay for c in cfgs], device=dev))
    l1 = torch.tensor([c.l1 for c in cfgs], device=dev) if any(c.l1 > 0 for c in cfgs) else None
    results = [TrainResult(best_metric=math.inf) for _ in range(k)]
    # best weights, patience, NaN rollback, time limit and stop reasons per model: the engine's one policy
    policy = StopPolicy(StackWeights(params), patience=[c.patience for c in cfgs], epochs=[c.epochs for c in cfgs],
                        lr=[c.lr for c in cfgs], time_limit=base.time_limit)
    step = 0
    max_epochs = max(c.epochs for c in cfgs)
    bar = progress_bar(total=max_epochs, desc=f"{k} models (batched)", leave=False, enabled=progress,
                       dynamic_ncols=True)
    # each model gets its own training events and state (fold = i + 1)
    states = [StackMemberState("regression", c, stack, i, fold=i + 1, desc=f"fold {i + 1}/{k}", history=res.history)
              for i, (c, res) in enumerate(zip(cfgs, results))]
    events = Events(callbacks, states)
    events.train_begin()

    alive = torch.ones(k, dtype=torch.bool, device=dev)  # stopped, diverged or done models stay where they are
    probe = ThreadProbe.for_stack(getattr(base, "threads", 0)) if dev.type == "cpu" else None

    def lr_at(at: int) -> list[float]:  # each distinct schedule once per step, spread over its models below
        return [lr * lr_factor(at, total, warmup, kind, floor) for lr, total, warmup, kind, floor in distinct]

    def set_lr(lrs: list[float]) -> None:
        if uniform:
            for group in optimizer.param_groups:
                group["lr"] = lrs[0]
        else:
            optimizer.lr = torch.tensor(lrs, device=dev)[owner_t] * alive

    def batch_loss(cols: torch.Tensor):
        """Every model's masked MSE on its own rows of the batch (padding has weight 0)."""
        idx, w = train_idx[:, cols], train_mask[:, cols]
        losses = per_model_mse(forward(x[idx]), y[idx], w)
        objective = torch.where(alive, losses, 0.0).sum()  # stopped models get exactly zero gradient
        if l1 is not None:  # per-model L1 on the weight matrices, as l1_penalty does for one model
            objective = objective + sum((l1.view(-1, 1, 1) * weight.abs()).sum() for weight in stack.weights)
        return losses, objective, w.sum(1)

    def train_epoch(epoch: int) -> list[dict | None]:
        """One epoch of every model still training (the engine's step loop), then its held-out MSE:
        one history row per model."""
        nonlocal step, alive
        if probe is not None:
            probe.begin(epoch)
        t0 = time.perf_counter()
        alive = torch.tensor(policy.alive, device=dev)
        if dropout:
            stack.train()
        step, loss_sum, lrs = train_steps(step, rows=n, batch_size=base.batch_size, generator=generator, n_models=k,
                                          lr_at=lr_at, set_lr=set_lr, batch_loss=batch_loss, optimizer=optimizer,
                                          events=events)
        if dropout:
            stack.eval()
        with torch.no_grad():
            val = per_model_mse(forward(x_val), y_val, val_mask)
        train_loss = loss_sum / train_mask.sum(1)
        values = torch.stack([train_loss, val]).tolist()  # the epoch's one host sync
        if probe is not None:
            probe.end(epoch, time.perf_counter() - t0)
        seconds = (time.perf_counter() - t0) / k
        if progress:
            bar.update(1)
            bar.set_postfix(train=f"{sum(values[0]) / k:.4f}", val=f"{sum(values[1]) / k:.4f}",
                            refresh=False)  # tqdm redraws every mininterval, not on every short epoch
        return [None if policy.stopped[i] else  # None: model i trains no more
                {"epoch": epoch + 1, "train_loss": values[0][i], "val_loss": values[1][i], "lr": lrs[owner[i]],
                 "seconds": seconds} for i in range(k)]

    try:
        # the engine's epoch loop: per-model NaN rollback, events, best weights, patience, epochs, time limit;
        # at its end each model's weights to keep are back in the stack before the train-end events
        run_epochs(policy, events, results, start_epoch=0, max_epochs=max_epochs, train_epoch=train_epoch,
                   monitor=lambda row: row["val_loss"])
    finally:
        bar.close()
    for model, trained in zip(models, stack.unstack(_inner(models[0]))):
        _inner(model).load_state_dict(trained.state_dict())
    return results
