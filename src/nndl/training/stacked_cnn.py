"""The stacked CNN trainer: N convolutional classifiers of one shape trained as one grouped network.

The contract is :mod:`nndl.training.stacked_classify`'s for MLPs: each model keeps its own
training rows, batch order, augmentation draws, lr, schedule, weight decay, L1, label smoothing,
epochs and early stopping with its best weights (BN running statistics included), and ends where
its one-by-one :func:`nndl.training.trainer.train` ends, up to float rounding. The network is
:class:`nndl.nn.stacked_cnn.GroupedCNN` (grouped convolutions; bench/cnn_stack_speed.py measured it
against torch.func's vmap and against the plain loop).

What differs from the MLP stack, and why:

* Batch norm couples the rows of a batch, so padding a short batch (the last one of a shorter
  fold) would change its statistics. A step runs each distinct batch length as its own pass over
  the models that have it; a model without rows in a step, or stopped, is not in any pass, so its
  weights and BN statistics stay as they were.
* Augmentation (flip, translate, erase, rotate, scale, noise) is drawn from the generator that
  also draws the permutation (:func:`nndl.training.engine.train_steps`): one generator per distinct
  ``(seed, rows)``, as for the permutations, and every model of that group starts each batch's
  augmentation from the same generator state, so each sees the draws it would see alone (the draws
  depend only on the batch's shape). mixup/cutmix (mixed targets), test-time flip, compilation and
  autocast are refused (:data:`UNSTACKABLE_ON`).
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from nndl.base.errors import NndlError
from nndl.nn.stacked_cnn import GroupedCNN, groupable, models_per_pass
from nndl.training.callbacks import TrainState
from nndl.training.engine import StackWeights, lr_factor
from nndl.training.stacked_classify import StackOptimizer, epoch_rows, run_stack, start_stack
from nndl.training.trainer import TrainResult

# The classify models whose networks GroupedCNN stacks (feature Sequentials and a linear head; the ResNet's
# residual blocks do not).
STACKABLE_CNNS = ("cnn", "lite", "lite4", "fast")
# What a CNN stack refuses: mixing changes the targets per batch, test-time flip and compilation change
# the arithmetic of evaluation or training (the augmentations drawn from the model's generator stack).
UNSTACKABLE_ON = ("mixup", "cutmix", "tta_flip", "compile")


def cnn_blocker(model: nn.Module, cfg) -> str | None:
    """Why a CNN ``model`` trained with ``cfg`` cannot join a stack (one phrase), or None."""
    why = groupable(model)
    if why:
        return why
    on = [k for k in UNSTACKABLE_ON if getattr(cfg, k, False)]
    return f"{on[0]}={getattr(cfg, on[0])!r}" if on else None


class GroupedMemberState(TrainState):
    """The callbacks' state of model ``index`` of a :class:`GroupedCNN`: its slice of every tensor."""

    def __init__(self, task: str, cfg, net: GroupedCNN, index: int, **kw):
        super().__init__(task, cfg, **kw)
        self.net, self.index = net, index

    def _tensors(self) -> list[torch.Tensor]:
        return list(self.net.parameters()) + self.net.bn_buffers()

    def named_weights(self):
        for name, p in self.net.named_parameters():
            if name.startswith(("conv_w", "head_w")):
                yield name, p[self.index].detach()

    def snapshot(self):
        return [t[self.index].detach().clone() for t in self._tensors()]

    @torch.no_grad()
    def restore(self, snap) -> None:
        for t, kept in zip(self._tensors(), snap):
            t[self.index] = kept


def _kernels(net: GroupedCNN):
    """The stacked weights that have more than one dimension per model (conv filters, the head)."""
    return (p for name, p in net.named_parameters() if name.startswith(("conv_w", "head_w")))


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, smoothing: list[float]) -> torch.Tensor:
    """Each model's mean (label-smoothed) cross-entropy: (M, B, C), (M, B) -> (M,)."""
    logp = logits.float().log_softmax(-1)
    rows = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    if any(smoothing):
        eps = torch.tensor(smoothing, device=logits.device).view(-1, 1)
        rows = (1 - eps) * rows + eps * (-logp.mean(-1))
    return rows.mean(1)


def train_stacked_cnns(models: list[nn.Module], images: torch.Tensor, y: torch.Tensor, members: list, cfgs: list, *,
                       transform, progress: bool = False, callbacks=None, chunk: int | None = None
                       ) -> list[TrainResult]:
    """Train CNN classifiers of one shape at once; copy each one's kept weights back into ``models``.

    Parameters
    ----------
    models : list of nn.Module
        Freshly initialised, each as its one-by-one run would initialise it (see :func:`groupable`).
    images, y : Tensor
        All rows any model uses, raw as the one-by-one run gets them (e.g. uint8 ``(N, C, H, W)``),
        and int64 labels ``(N,)``, on the device.
    members : list of :class:`~nndl.training.stacked_classify.Member`
        Per model: its training rows (in its one-by-one order) and validation rows (no scaling:
        ``transform`` normalises).
    cfgs : list of ClassifyConfig
        One per model; they may differ only in ``CLASSIFY_PER_MODEL_FIELDS``.
    transform : callable
        The one-by-one run's ``transform(batch, generator or None)`` (normalisation, augmentation).
    chunk : int, optional
        Models per grouped pass (default: :func:`models_per_pass` on CPU, all on other devices).

    Returns
    -------
    list of TrainResult, one per model, as :func:`nndl.training.trainer.train` returns it.
    """
    k, dev, base = len(models), images.device, cfgs[0]
    for i, (m, c) in enumerate(zip(models, cfgs)):
        why = cnn_blocker(m, c)
        if why:
            raise NndlError(f"model {i + 1} of the stack does not stack: {why}; train it one by one")
    def per_pass(rows: int) -> int:
        if chunk is not None:
            return chunk
        return models_per_pass(models[0], tuple(images.shape[1:]), rows) if dev.type == "cpu" else 0

    train_chunk, eval_chunk = per_pass(base.batch_size), per_pass(max(1, base.eval_batch_size))
    net = GroupedCNN(models, channels_last=dev.type in ("cpu", "cuda"), chunk=train_chunk).to(dev)
    lengths = [len(mb.train_idx) for mb in members]
    bs = base.batch_size
    n_batches = [math.ceil(n / bs) for n in lengths]
    train_rows = [mb.train_idx.to(dev) for mb in members]
    has_val = [mb.val_idx is not None and len(mb.val_idx) > 0 for mb in members]
    val_rows = [mb.val_idx.to(dev) if v else None for mb, v in zip(members, has_val)]

    # one generator per distinct (seed, rows): its permutations and augmentation draws (module docs)
    group_of = list(dict.fromkeys((c.seed, n) for c, n in zip(cfgs, lengths)))
    owner = [group_of.index((c.seed, n)) for c, n in zip(cfgs, lengths)]
    gens = [torch.Generator(device=dev).manual_seed(seed) for seed, _ in group_of]

    params, buffers = list(net.parameters()), net.bn_buffers()
    optimizer = StackOptimizer(params, base, torch.tensor([c.weight_decay for c in cfgs], device=dev))
    kernels = list(_kernels(net))  # what l1_penalty sums: conv filters and the head's weight
    l1 = torch.tensor([c.l1 for c in cfgs], device=dev) if any(c.l1 > 0 for c in cfgs) else None
    smoothing = [float(c.label_smoothing) for c in cfgs]
    schedules = [(c.lr, c.epochs * nb, int(c.warmup_epochs * nb), c.schedule, c.min_lr_factor)
                 for c, nb in zip(cfgs, n_batches)]
    steps = [0] * k
    last_lr = [0.0] * k

    results, policy, events, bar = start_stack(cfgs, StackWeights(params + buffers), GroupedMemberState, net,
                                               any(has_val), base.time_limit, callbacks, progress, "CNNs")

    def batch_inputs(order: list, b: int, active: list[bool]) -> dict[int, torch.Tensor]:
        """Batch ``b`` of each active model, transformed (augmented) as its one-by-one run does it."""
        out = {}
        for g in range(len(group_of)):
            todo = [i for i in range(k) if owner[i] == g and active[i]]
            if not todo:
                continue
            start = gens[g].get_state()
            for j, i in enumerate(todo):
                if j:
                    gens[g].set_state(start)  # the same draws for every model of the group
                out[i] = transform(images[order[i][b * bs:(b + 1) * bs]], gens[g])
        return out

    def forward_passes(inputs: dict[int, torch.Tensor], targets: dict[int, torch.Tensor]):
        """Each model's loss and right predictions, one pass per distinct batch length."""
        by_rows: dict[int, list[int]] = {}
        for i, xb in inputs.items():
            by_rows.setdefault(len(xb), []).append(i)
        losses, correct = {}, {}
        for ids in by_rows.values():
            xs = torch.stack([inputs[i] for i in ids])
            out = net(xs) if ids == list(range(k)) else net(xs, torch.tensor(ids, device=dev))
            ys = torch.stack([targets[i] for i in ids])
            for j, (i, loss) in enumerate(zip(ids, _cross_entropy(out, ys, [smoothing[i] for i in ids]))):
                losses[i] = loss
                correct[i] = (out[j].detach().argmax(-1) == ys[j]).sum()
        return losses, correct

    @torch.no_grad()
    def validate() -> tuple[list[float], list[float]]:
        """Each live validated model's validation loss (no smoothing) and accuracy, in eval mode."""
        net.eval()
        net.chunk = eval_chunk  # evaluation batches are larger: fewer models per pass
        ids = [i for i in range(k) if has_val[i] and policy.alive[i]]
        loss_sum, right = {i: torch.zeros((), device=dev) for i in ids}, {i: torch.zeros((), device=dev) for i in ids}
        chunk_rows = max(1, base.eval_batch_size)
        longest = max((len(val_rows[i]) for i in ids), default=0)
        for s in range(0, longest, chunk_rows):
            part = [i for i in ids if s < len(val_rows[i])]
            by_rows: dict[int, list[int]] = {}
            for i in part:
                by_rows.setdefault(len(val_rows[i][s:s + chunk_rows]), []).append(i)
            for ids_r in by_rows.values():
                rows = [val_rows[i][s:s + chunk_rows] for i in ids_r]
                xs = torch.stack([transform(images[r], None) for r in rows])
                out = net(xs, torch.tensor(ids_r, device=dev)).float()
                ys = torch.stack([y[r] for r in rows])
                ce = -out.log_softmax(-1).gather(-1, ys.unsqueeze(-1)).squeeze(-1)
                for j, i in enumerate(ids_r):
                    loss_sum[i] += ce[j].sum()
                    right[i] += (out[j].argmax(-1) == ys[j]).sum()
        net.train()
        net.chunk = train_chunk
        vl, va = [math.nan] * k, [math.nan] * k
        for i in ids:
            n = len(val_rows[i])
            vl[i], va[i] = loss_sum[i].item() / n, right[i].item() / n
        return vl, va

    def train_epoch(epoch: int) -> list[dict | None]:
        t0 = time.perf_counter()
        net.train()
        order: list = [None] * k
        for g, (_, n) in enumerate(group_of):
            mine = [i for i in range(k) if owner[i] == g]
            if any(policy.alive[i] for i in mine):  # nobody left to draw for: the stream no longer matters
                perm = torch.randperm(n, device=dev, generator=gens[g])
                for i in mine:
                    order[i] = train_rows[i][perm]
        loss_sum = [torch.zeros((), device=dev) for _ in range(k)]
        right = [torch.zeros((), device=dev) for _ in range(k)]
        for b in range(max(n_batches)):
            stepping = [policy.alive[i] and b < n_batches[i] for i in range(k)]
            if not any(stepping):
                break
            lrs = [s[0] * lr_factor(steps[i], *s[1:]) if stepping[i] else 0.0 for i, s in enumerate(schedules)]
            inputs = batch_inputs(order, b, stepping)
            targets = {i: y[order[i][b * bs:(b + 1) * bs]] for i in inputs}
            losses, correct = forward_passes(inputs, targets)
            objective = torch.stack(list(losses.values())).sum()
            if l1 is not None:
                on = torch.tensor(stepping, device=dev)
                objective = objective + sum((torch.where(on, l1, 0.0).view(-1, *[1] * (w.dim() - 1)) * w.abs()).sum()
                                            for w in kernels)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step(lrs, stepping, [policy.alive[i] and not on for i, on in enumerate(stepping)])
            for i, loss in losses.items():
                steps[i] += 1
                last_lr[i] = lrs[i]
                loss_sum[i] += loss.detach() * len(targets[i])
                right[i] += correct[i]
                if events.per_batch:
                    events.batch_end(b, loss.detach(), i)
        train_done = time.perf_counter()
        val_loss, val_acc = validate() if any(has_val) else ([math.nan] * k, [math.nan] * k)
        values = torch.stack([torch.stack(loss_sum), torch.stack(right).float()]).tolist()
        now = time.perf_counter()
        if progress:
            bar.update(1)
        per_row = [[v / n for v, n in zip(values[0], lengths)], [v / n for v, n in zip(values[1], lengths)],
                   val_loss, val_acc]
        return epoch_rows(epoch, policy.stopped, per_row, has_val, last_lr, (now - t0) / k, (now - train_done) / k)

    return run_stack(policy, events, bar, results, cfgs, train_epoch, models,
                     lambda: net.unstack(models[0]), has_val)
