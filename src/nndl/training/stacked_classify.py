"""The stacked classifier trainer: N MLP classifiers of one shape trained as one batched model.

Each model keeps what makes its one-by-one training what it is: its own training rows (a fold,
less its validation rows), its own batch order and dropout masks (from its own seed), its own
lr, schedule, weight decay, L1, label smoothing and epochs, and its own early stopping on its
validation accuracy with the best weights restored (the engine's :class:`StopPolicy`, higher
is better). One batched forward pass serves them all.

How the one-by-one batch order is reproduced: :func:`nndl.training.trainer.train` draws each
epoch's permutation of its ``n`` rows from a generator seeded with ``seed``, and its dropout
masks from torch's global generator seeded with ``seed``. Both streams depend only on
``(seed, n)``, so models that share both share one permutation and one mask per step, and a
stack keeps one pair of generators per distinct ``(seed, n)`` (folds of unequal length get
their own). A model whose fold has fewer batches than the longest sits out the last steps of
an epoch: it takes no optimiser step there (its Adam moments and step count stay as they were),
so its trajectory is the one-by-one trajectory, up to float rounding (batched vs single matmuls).

CNN classifiers (nndl's cnn, lite, lite4 and fast networks) go to :mod:`nndl.training.stacked_cnn`
(grouped convolutions, per-model batch norm, each model's augmentation from its own generator).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nndl.base.errors import NndlError
from nndl.base.progress import progress_bar
from nndl.nn.models import MLP, StackedMLP
from nndl.training.callbacks import StackMemberState
from nndl.training.engine import Events, StackWeights, StopPolicy, lr_factor, run_epochs
from nndl.training.stacked import PER_MODEL_FIELDS
from nndl.training.trainer import TrainResult

# Config fields that may differ between the models of a classifier stack: besides the regression
# stack's (optimiser step, penalties, schedule, epochs, patience) the label smoothing (it enters
# only the loss), the seed (init happens before; batch order and dropout come from per-seed
# generators here) and val_fraction (the caller hands each model its own rows).
CLASSIFY_PER_MODEL_FIELDS = PER_MODEL_FIELDS | {"label_smoothing", "seed", "val_fraction"}
# Settings a stack does not reproduce (they draw from torch's global RNG per batch or change the
# arithmetic); they must be off.
_UNSTACKABLE_ON = ("flip", "translate", "erase", "rotate", "scale", "noise", "mixup", "cutmix", "tta_flip",
                   "compile")


@dataclass
class Member:
    """What one model of a stack trains and validates on.

    Parameters
    ----------
    train_idx : LongTensor
        Rows of ``x`` the model trains on, in the order the one-by-one run sees them
        (its permutation indexes this list).
    val_idx : LongTensor, optional
        Rows it is validated on after each epoch (None: no validation, no early stopping).
    mean, std : Tensor, optional
        Per-feature input scaling ``(x - mean) / std`` (``(D,)``), as a wrapper of the
        one-by-one model would apply; None: the inputs as they are.
    """

    train_idx: torch.Tensor
    val_idx: torch.Tensor | None = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None


def classify_stack_key(cfg) -> tuple:
    """Configs with equal keys can train as one classifier stack (they differ at most in
    :data:`CLASSIFY_PER_MODEL_FIELDS`)."""
    return tuple((f.name, repr(getattr(cfg, f.name))) for f in dataclasses.fields(cfg)
                 if f.name not in CLASSIFY_PER_MODEL_FIELDS)


def _shape(model: nn.Module) -> str:
    if not isinstance(model, MLP):  # a CNN: its class and every tensor's shape
        return type(model).__name__ + " " + ",".join("x".join(map(str, t.shape)) for t in model.state_dict().values())
    sizes = [model.layers[0].in_features] + [layer.out_features for layer in model.layers]
    drops = [d.p for d in model.drops]
    return "-".join(map(str, sizes)) + f" {type(model.act).__name__}" + (f" dropout {drops}" if any(drops) else "")


def check_stackable(models: list[nn.Module], cfgs: list, members: list[Member]) -> None:
    """One line naming what keeps these models out of one stack, or nothing."""
    if not models:
        raise NndlError("stacked training needs at least one model")
    if not len(models) == len(cfgs) == len(members):
        raise NndlError(f"stacked training needs one config and one member per model: got {len(models)} models, "
                        f"{len(cfgs)} configs, {len(members)} members")
    from nndl.nn.stacked_cnn import groupable

    first = _shape(models[0])
    mlp = isinstance(models[0], MLP)
    for i, m in enumerate(models):
        why = None if isinstance(m, MLP) else groupable(m)
        if why or isinstance(m, MLP) != mlp:
            raise NndlError(f"stacked classifier training takes MLPs (nndl.nn.models.MLP) or CNNs of the cnn, lite, "
                            f"lite4 or fast kind; model {i + 1} is a {type(m).__name__}"
                            f"{f' ({why})' if why else ''}: train it one by one")
        if _shape(m) != first:
            raise NndlError(f"stacked training needs models of one shape: model {i + 1} is {_shape(m)}, model 1 "
                            f"is {first}; train them in separate stacks")
    keys = [classify_stack_key(c) for c in cfgs]
    for i, key in enumerate(keys):
        if key != keys[0]:
            field = next(a for a, b in zip(keys[0], key) if a != b)[0]
            raise NndlError(f"config key '{field}' differs between model 1 and model {i + 1}: a stack may differ "
                            f"only in {', '.join(sorted(CLASSIFY_PER_MODEL_FIELDS))}")
    from nndl.training.stacked_cnn import UNSTACKABLE_ON

    on = [k for k in (_UNSTACKABLE_ON if mlp else UNSTACKABLE_ON) if getattr(cfgs[0], k, False)]
    if on and mlp:
        raise NndlError(f"config key '{on[0]}' = {getattr(cfgs[0], on[0])!r}: stacked training has no augmentation, "
                        "test-time flip or compilation; turn it off or train one by one")
    if on:
        raise NndlError(f"config key '{on[0]}' = {getattr(cfgs[0], on[0])!r}: a CNN stack has no mixup/cutmix "
                        "(mixed targets), test-time flip or compilation; turn it off or train one by one")
    for i, mb in enumerate(members):
        if len(mb.train_idx) == 0:
            raise NndlError(f"model {i + 1} of the stack has no training rows")


class StackOptimizer:
    """Adam / AdamW / SGD over stacked parameters with per-model lr, weight decay and step counts.

    Unlike :class:`~nndl.training.stacked.PerModelOptimizer` (one step count for the stack), each
    model counts its own steps and a step may leave some models out (``active``): a model whose
    fold ran out of batches before the longest fold's epoch ended keeps its weights, moments and
    step count, exactly as it would alone. The update rules are those of torch's fused kernels.
    """

    def __init__(self, params: list[torch.Tensor], cfg, weight_decay: torch.Tensor):
        self.params, self.kind, self.weight_decay = params, cfg.optimizer, weight_decay
        self.momentum, self.nesterov = cfg.momentum, cfg.nesterov and cfg.momentum > 0
        self.betas, self.eps = (0.9, 0.999), 1e-8
        self.coupled_decay = cfg.optimizer != "adamw" and bool((weight_decay != 0).any())
        self.steps = torch.zeros(len(weight_decay), dtype=torch.float64, device=weight_decay.device)
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lrs: list[float], active: list[bool], keep: list[bool]) -> None:
        """One update with ``lrs`` (one per model) of the ``active`` models.

        ``keep`` marks the inactive models that must not change at all (a live model without rows in
        this batch); the others (stopped models, lr 0) may be updated or not, whichever is cheaper.
        """
        if self.kind in ("adam", "adamw") and all(p.device.type in ("cpu", "cuda") for p in self.params):
            return self._fused(lrs, active)
        dev = self.params[0].device
        lr = torch.tensor(lrs, dtype=torch.float64, device=dev)
        self._step(lr, torch.tensor([not k for k in keep], device=dev) if any(keep) else None)

    def _fused(self, lrs: list[float], active: list[bool]) -> None:
        """Adam / AdamW as the one-by-one run does it (LeanAdam: torch's fused kernel), one call per distinct
        (lr, weight decay) over the active models' slices; an idle model is simply not in any call."""
        if not self.state[0]:
            for p, st in zip(self.params, self.state):
                st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
            self.views = [[(p[k], st["m"][k], st["v"][k]) for p, st in zip(self.params, self.state)]
                          for k in range(len(lrs))]
            self.step_counts = [torch.zeros((), dtype=torch.float32, device=self.params[0].device)
                                for _ in lrs]
            self.decays = self.weight_decay.tolist()
        groups: dict[tuple[float, float], list[int]] = {}
        for k, on in enumerate(active):
            if on:
                groups.setdefault((lrs[k], self.decays[k]), []).append(k)
        kernel = torch._fused_adamw_ if self.kind == "adamw" else torch._fused_adam_
        grads = [p.grad for p in self.params]
        for (lr, decay), models in groups.items():
            torch._foreach_add_([self.step_counts[k] for k in models], 1)
            ps, gs, ms, vs, steps = [], [], [], [], []
            for k in models:
                for (p, m, v), g in zip(self.views[k], grads):
                    ps.append(p), gs.append(g[k]), ms.append(m), vs.append(v), steps.append(self.step_counts[k])
            kernel(ps, gs, ms, vs, [], steps, amsgrad=False, lr=lr, beta1=self.betas[0], beta2=self.betas[1],
                   weight_decay=decay, eps=self.eps, maximize=False)

    def _step(self, lr: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """The broadcast update (SGD, or tensors the fused kernels do not take)."""
        saved = None
        if active is not None:  # rare (the last steps of an epoch of unequal folds): keep the idle models' state
            saved = [(p.clone(), {k: v.clone() for k, v in s.items()}) for p, s in zip(self.params, self.state)]
            self.steps += active.double()
        else:
            self.steps += 1
        beta1, beta2 = self.betas
        step_size = (lr / (1 - beta1 ** self.steps)).float()
        bc2_sqrt = (1 - beta2 ** self.steps).sqrt().float()
        lr32, decay = lr.float(), self.weight_decay
        for p, state in zip(self.params, self.state):
            shape = (-1,) + (1,) * (p.dim() - 1)
            grad = p.grad
            if self.kind == "adamw":
                p.mul_(1 - (lr32 * decay).view(shape))
            elif self.coupled_decay:
                grad = grad.add(decay.view(shape) * p)
            if self.kind == "sgd":
                if self.momentum:
                    if "buf" not in state:
                        state["buf"] = grad.clone()
                    else:
                        state["buf"].mul_(self.momentum).add_(grad)
                    grad = grad.add(state["buf"], alpha=self.momentum) if self.nesterov else state["buf"]
                p.sub_(lr32.view(shape) * grad)
                continue
            if not state:
                state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
            m, v = state["m"], state["v"]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / bc2_sqrt.view(shape)).add_(self.eps)
            p.sub_(step_size.view(shape) * m / denom)
        if saved is not None:
            keep = ~active
            for p, state, (p0, s0) in zip(self.params, self.state, saved):
                sel = keep.view((-1,) + (1,) * (p.dim() - 1))
                p.copy_(torch.where(sel, p0, p))
                for k, v in state.items():
                    if k in s0:
                        v.copy_(torch.where(sel, s0[k], v))
                    else:  # created on this step: an idle model's entry starts at zero, as it would have
                        v.copy_(torch.where(sel, torch.zeros_like(v), v))


def _padded(index_sets: list[torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Index tensors of different lengths as (K, M) with a 0/1 mask for the padding."""
    m = max(1, max(len(ix) for ix in index_sets))
    idx = torch.zeros(len(index_sets), m, dtype=torch.long)
    mask = torch.zeros(len(index_sets), m)
    for i, ix in enumerate(index_sets):
        idx[i, : len(ix)], mask[i, : len(ix)] = ix.cpu(), 1
    return idx.to(device), mask.to(device)


def _scaling(members: list[Member], d: int, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each model's input shift and scale as (K, 1, D), or None when no model scales its inputs."""
    if all(mb.mean is None and mb.std is None for mb in members):
        return None
    zero, one = torch.zeros(d, device=device), torch.ones(d, device=device)
    mean = torch.stack([(mb.mean if mb.mean is not None else zero).reshape(d).float().to(device) for mb in members])
    std = torch.stack([(mb.std if mb.std is not None else one).reshape(d).float().to(device) for mb in members])
    return mean[:, None, :], std[:, None, :]


def _per_model_ce(logits: torch.Tensor, target: torch.Tensor, w: torch.Tensor,
                  smoothing: torch.Tensor | None) -> torch.Tensor:
    """Each model's mean cross-entropy over its real rows: (K, B, C), (K, B), (K, B) -> (K,).

    With ``smoothing`` (one value per model) it is torch's label-smoothed cross-entropy."""
    logp = logits.float().log_softmax(-1)
    rows = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    if smoothing is not None:
        eps = smoothing.view(-1, 1)
        rows = (1 - eps) * rows + eps * (-logp.mean(-1))
    return (rows * w).sum(1) / w.sum(1).clamp(min=1)


def train_stacked_classifiers(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, members: list[Member],
                              cfgs: list, *, progress: bool = False, callbacks=None,
                              transform=None) -> list[TrainResult]:
    """Train MLP (or CNN) classifiers of one shape at once; copy each one's kept weights back into ``models``.

    CNNs (the ``cnn``, ``lite``, ``lite4`` and ``fast`` models) train as one grouped network:
    :func:`nndl.training.stacked_cnn.train_stacked_cnns`, with ``x`` the raw images and
    ``transform`` the one-by-one run's input transform (normalisation and augmentation).

    Parameters
    ----------
    models : list of MLP (or of one CNN kind)
        Freshly initialised (each as its one-by-one run would initialise it), one shape.
    x, y : Tensor
        All rows any model uses: float inputs ``(N, D)`` and int64 labels ``(N,)``, on the device.
    members : list of Member
        Per model: its training rows, validation rows and input scaling.
    cfgs : list of ClassifyConfig
        One per model; they may differ only in :data:`CLASSIFY_PER_MODEL_FIELDS`.
    progress : bool
        One progress bar over the epochs of the longest-training model.
    callbacks : list, optional
        :mod:`nndl.training.callbacks` on each model's events (``state.fold`` = 1..N).

    Returns
    -------
    list of TrainResult, one per model, as :func:`nndl.training.trainer.train` would return it
    for that model with ``x_train = x[train_idx]`` and ``x_val = x[val_idx]``: the same history
    keys, stop reasons and best epochs, and the same numbers up to float rounding (dropout
    included). Without validation rows, ``best_epoch`` is the last epoch, as there.
    """
    check_stackable(models, cfgs, members)
    if not isinstance(models[0], MLP):
        from nndl.training.stacked_cnn import train_stacked_cnns

        return train_stacked_cnns(models, x, y, members, cfgs, transform=transform or (lambda xb, gen: xb.float()),
                                  progress=progress, callbacks=callbacks)
    k, dev, base = len(models), x.device, cfgs[0]
    x = x.reshape(len(x), -1).float()
    stack = StackedMLP(models).to(dev)
    rates, act = stack.drop_rates, stack.act
    scale = _scaling(members, x.shape[1], dev)
    lengths = [len(mb.train_idx) for mb in members]
    bs = base.batch_size
    n_batches = [math.ceil(n / bs) for n in lengths]
    nb_max = max(n_batches)
    nb_t = torch.tensor(n_batches, device=dev)
    train_rows = [mb.train_idx.to(dev) for mb in members]
    has_val = [mb.val_idx is not None and len(mb.val_idx) > 0 for mb in members]
    val_idx, val_mask = _padded([mb.val_idx if v else torch.zeros(0, dtype=torch.long)
                                 for mb, v in zip(members, has_val)], dev)

    # one permutation generator and one dropout generator per distinct (seed, rows): see the module docs
    group_of = list(dict.fromkeys((c.seed, n) for c, n in zip(cfgs, lengths)))
    owner = [group_of.index((c.seed, n)) for c, n in zip(cfgs, lengths)]
    owner_t = torch.tensor(owner, device=dev)
    perm_gens = [torch.Generator(device=dev).manual_seed(seed) for seed, _ in group_of]
    drop_gens = [torch.Generator(device=dev).manual_seed(seed) for seed, _ in group_of]
    group_members = [[i for i in range(k) if owner[i] == g] for g in range(len(group_of))]

    params = list(stack.parameters())
    optimizer = StackOptimizer(params, base, torch.tensor([c.weight_decay for c in cfgs], device=dev))
    l1 = torch.tensor([c.l1 for c in cfgs], device=dev) if any(c.l1 > 0 for c in cfgs) else None
    smoothing = (torch.tensor([float(c.label_smoothing) for c in cfgs], device=dev)
                 if any(c.label_smoothing > 0 for c in cfgs) else None)
    schedules = [(c.lr, c.epochs * nb, int(c.warmup_epochs * nb), c.schedule, c.min_lr_factor)
                 for c, nb in zip(cfgs, n_batches)]
    steps = [0] * k  # each model's optimiser steps so far (its lr schedule's position)

    results, policy, events, bar = start_stack(cfgs, StackWeights(params), StackMemberState, stack, any(has_val),
                                               base.time_limit, callbacks, progress, "classifiers")

    def inputs(idx: torch.Tensor) -> torch.Tensor:
        xb = x[idx]  # (K, B, D)
        return xb if scale is None else (xb - scale[0]) / scale[1]

    def forward(xb: torch.Tensor, noise: list[torch.Tensor | None] | None) -> torch.Tensor:
        """The stack's forward pass with the given dropout masks (None: evaluation, no dropout)."""
        last = len(stack.weights) - 1
        for i, (w, b) in enumerate(zip(stack.weights, stack.biases)):
            xb = torch.baddbmm(b, xb, w)
            if i < last:
                xb = act(xb)
                if noise is not None and noise[i] is not None:
                    xb = xb * noise[i]
        return xb

    def dropout_masks(b: int, live_groups: list[int]) -> list[torch.Tensor | None] | None:
        """Batch ``b``'s dropout masks, drawn as ``F.dropout`` draws them alone, one per live group."""
        if not any(p > 0 for p in rates):
            return None
        out: list[torch.Tensor | None] = []
        widths = [w.shape[-1] for w in stack.weights[:-1]]
        drawn = {g: [] for g in live_groups}
        for p, width in zip(rates, widths):  # layer by layer, the order of the forward pass
            if p == 0:  # F.dropout with p = 0 draws nothing
                out.append(None)
                continue
            masks = torch.ones(len(group_of), bs, width, device=dev)
            for g in live_groups:
                rows = min(bs, group_of[g][1] - b * bs)
                masks[g, :rows] = torch.empty(rows, width, device=dev).bernoulli_(1 - p, generator=drop_gens[g]) \
                    .div_(1 - p)
            out.append(masks[owner_t])
        return out

    def epoch_order() -> tuple[torch.Tensor, torch.Tensor]:
        """This epoch's rows of every model in its one-by-one order, padded to the longest: (K, nb_max * bs)."""
        order = torch.zeros(k, nb_max * bs, dtype=torch.long, device=dev)
        valid = torch.zeros(k, nb_max * bs, device=dev)
        for g, (_, n) in enumerate(group_of):
            if not any(policy.alive[i] for i in group_members[g]):
                continue  # nobody left to draw for: the stream no longer matters
            perm = torch.randperm(n, device=dev, generator=perm_gens[g])
            for i in group_members[g]:
                order[i, :n], valid[i, :n] = train_rows[i][perm], 1
        return order, valid

    @torch.no_grad()
    def validate() -> tuple[torch.Tensor, torch.Tensor]:
        """Each model's validation loss (no smoothing, as :func:`evaluate`) and accuracy, in chunks of rows."""
        loss_sum, correct = torch.zeros(k, device=dev), torch.zeros(k, device=dev)
        chunk = max(1, base.eval_batch_size)
        for s in range(0, val_idx.shape[1], chunk):
            idx, w = val_idx[:, s:s + chunk], val_mask[:, s:s + chunk]
            out, target = forward(inputs(idx), None), y[idx]
            loss_sum += _per_model_ce(out, target, w, None) * w.sum(1)
            correct += ((out.argmax(-1) == target).float() * w).sum(1)
        count = val_mask.sum(1).clamp(min=1)
        return loss_sum / count, correct / count

    def train_epoch(epoch: int) -> list[dict | None]:
        t0 = time.perf_counter()
        alive = torch.tensor(policy.alive, device=dev)
        order, valid = epoch_order()
        loss_sum, correct = torch.zeros(k, device=dev), torch.zeros(k, device=dev)
        for b in range(nb_max):
            cols = slice(b * bs, (b + 1) * bs)
            idx, w = order[:, cols], valid[:, cols]
            live_groups = [g for g in range(len(group_of)) if b < math.ceil(group_of[g][1] / bs)
                           and any(policy.alive[i] for i in group_members[g])]
            active = alive & (b < nb_t)  # the models that train on this batch
            lrs = [s[0] * lr_factor(steps[i], *s[1:]) if policy.alive[i] and b < n_batches[i] else 0.0
                   for i, s in enumerate(schedules)]
            out = forward(inputs(idx), dropout_masks(b, live_groups))
            target = y[idx]
            losses = _per_model_ce(out, target, w, smoothing)
            objective = torch.where(active, losses, 0.0).sum()  # idle and stopped models: zero gradient
            if l1 is not None:
                objective = objective + sum((l1.view(-1, 1, 1) * weight.abs()).sum() for weight in stack.weights)
            optimizer.zero_grad()
            objective.backward()
            # a stopped model (lr 0) may take a step or not; a live model without rows in this batch must not
            stepping = [policy.alive[i] and b < n_batches[i] for i in range(k)]
            optimizer.step(lrs, stepping, [policy.alive[i] and not on for i, on in enumerate(stepping)])
            for i in range(k):
                if stepping[i]:
                    steps[i] += 1
                    last_lr[i] = lrs[i]  # the history's lr: the last one this model stepped with
            if events.per_batch:  # only when a callback listens per batch: each event is a host sync
                for i in range(k):
                    if stepping[i]:
                        events.batch_end(b, losses[i].detach(), i)
            rows = w.sum(1)
            loss_sum += losses.detach() * rows
            correct += ((out.detach().argmax(-1) == target).float() * w).sum(1)
        train_done = time.perf_counter()
        val_loss, val_acc = validate() if any(has_val) else (torch.zeros(k), torch.zeros(k))
        n_t = torch.tensor(lengths, device=dev, dtype=torch.float32)
        values = torch.stack([loss_sum / n_t, correct / n_t, val_loss.to(dev), val_acc.to(dev)]).tolist()
        now = time.perf_counter()
        if progress:
            bar.update(1)
        return epoch_rows(epoch, policy.stopped, values, has_val, last_lr, (now - t0) / k, (now - train_done) / k)

    last_lr = [0.0] * k
    return run_stack(policy, events, bar, results, cfgs, train_epoch, models,
                     lambda: stack.unstack(models[0]), has_val)


def start_stack(cfgs: list, weights, member_state, net, validated: bool, time_limit: float, callbacks,
                progress: bool, what: str):
    """A classifier stack's results, stop policy (higher validation accuracy is better), events (begun)
    and epoch bar; ``member_state`` is the callbacks' view of one model of ``net``."""
    k = len(cfgs)
    results = [TrainResult(best_metric=-math.inf) for _ in range(k)]
    policy = StopPolicy(weights, patience=[c.patience for c in cfgs], epochs=[c.epochs for c in cfgs],
                        lr=[c.lr for c in cfgs], higher=True, validated=validated, time_limit=time_limit)
    states = [member_state("classification", c, net, i, fold=i + 1, desc=f"model {i + 1}/{k}", history=res.history)
              for i, (c, res) in enumerate(zip(cfgs, results))]
    events = Events(callbacks, states)
    events.train_begin()
    bar = progress_bar(total=max(c.epochs for c in cfgs), desc=f"{k} {what} (stacked)", leave=False,
                       enabled=progress, dynamic_ncols=True)
    return results, policy, events, bar


def epoch_rows(epoch: int, stopped: list[bool], values: list[list[float]], has_val: list[bool], last_lr: list[float],
               seconds: float, eval_seconds: float) -> list[dict | None]:
    """Each model's history row of a stack's epoch (None for a model that has stopped).

    ``values`` holds four lists, one value per model: train loss, train accuracy, val loss, val
    accuracy. The stack's seconds are shared out evenly.
    """
    rows: list[dict | None] = []
    for i, done in enumerate(stopped):
        if done:
            rows.append(None)
            continue
        row = {"epoch": epoch + 1, "train_loss": values[0][i], "train_acc": values[1][i]}
        if has_val[i]:
            row["val_loss"], row["val_acc"] = values[2][i], values[3][i]
        row.update(lr=last_lr[i], seconds=seconds, eval_seconds=eval_seconds)
        rows.append(row)
    return rows


def run_stack(policy, events, bar, results: list, cfgs: list, train_epoch, models: list, unstack, has_val: list):
    """The epochs of a classifier stack (the engine's loop, watching each model's validation accuracy),
    then each trained model's weights back into ``models``; ``unstack()`` returns the trained models
    (called after the last epoch)."""
    try:
        run_epochs(policy, events, results, start_epoch=0, max_epochs=max(c.epochs for c in cfgs),
                   train_epoch=train_epoch, monitor=lambda row: row.get("val_acc"))
    finally:
        bar.close()
    for i, (model, trained) in enumerate(zip(models, unstack())):
        model.load_state_dict(trained.state_dict())
        if not has_val[i] and results[i].history:  # as train() without validation: the last epoch is kept
            results[i].best_epoch, results[i].best_metric = len(results[i].history), math.nan
    return results
