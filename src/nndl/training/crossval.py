"""Cross-validation: splitters (shuffled, blocked, leave-one-cluster-out), and the fold models trained
one by one or stacked, under a thread policy sized to the work."""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from nndl.base.progress import progress_bar

from nndl.base.errors import NndlError
from nndl.nn.models import StackedMLP
from nndl.training.callbacks import StackMemberState
from nndl.training.engine import Events, StackWeights, StopPolicy, lr_factor, run_epochs, train_steps
from nndl.training.trainer import TrainResult, evaluate, make_optimizer, train


def kfold_indices(n: int, k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled K-fold split of ``range(n)``: a list of ``(train_idx, val_idx)``.

    Shuffling matters: on data sorted by x an unshuffled split validates by
    extrapolation. Fold sizes differ by at most one.
    """
    _check_sizes(n, k)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    chunks = torch.tensor_split(perm, k)
    return [(torch.cat([c for j, c in enumerate(chunks) if j != i]).sort().values, chunks[i].sort().values)
            for i in range(k)]


def _sorted_order(x: torch.Tensor) -> torch.Tensor:
    """Row order along the first input column (stable, so ties keep file order)."""
    return torch.sort(x.reshape(len(x), -1)[:, 0].detach().cpu(), stable=True).indices


def _from_val_sets(n: int, val_sets: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    everything = torch.arange(n)
    out = []
    for va in val_sets:
        keep = torch.ones(n, dtype=torch.bool)
        keep[va] = False
        out.append((everything[keep], va.sort().values))
    return out


def blocked_indices(x: torch.Tensor, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Blocked K-fold: each validation fold is a contiguous block of rows along the sorted input.

    For 1-D ``x`` the blocks are intervals of x, so a fold model must fill a hole in the
    data the way the final model must fill a gap (the first and last blocks test
    extrapolation). For several input columns the rows are sorted by the **first column**
    only. Fold sizes differ by at most one.
    """
    n = len(x)
    _check_sizes(n, k)
    return _from_val_sets(n, list(torch.tensor_split(_sorted_order(x), k)))


def find_clusters(x: torch.Tensor, groups=None, k: int = 5, factor: float = 6.0) -> torch.Tensor:
    """A cluster label (0, 1, ...) per row.

    With ``groups`` (one value per row, e.g. a group column) each distinct value is a
    cluster. Otherwise rows are sorted by the first input column and cut at every gap
    wider than ``factor`` times the median spacing and 5% of the range (the same rule
    the fit figure uses to shade gaps); when no such gap exists, at the ``k - 1``
    widest gaps, so there are always at least two clusters for ``n >= 2``.
    """
    n = len(x)
    if groups is not None:
        values = torch.as_tensor(groups).reshape(-1)
        if len(values) != n:
            raise NndlError(f"group column has {len(values)} values for {n} rows; give one group per row")
        return torch.unique(values, return_inverse=True)[1]
    order = _sorted_order(x)
    xs = x.reshape(n, -1)[:, 0].detach().cpu().double()[order]
    spacing = xs.diff()
    if len(spacing) == 0:
        return torch.zeros(n, dtype=torch.long)
    threshold = max(factor * spacing.median().item(), 0.05 * (xs[-1] - xs[0]).item())
    cuts = torch.nonzero(spacing > threshold).flatten() if threshold > 0 else torch.empty(0, dtype=torch.long)
    if len(cuts) == 0:
        cuts = torch.topk(spacing, min(max(1, k - 1), len(spacing))).indices.sort().values
    step = torch.zeros(n, dtype=torch.long)
    step[cuts + 1] = 1
    labels = torch.empty(n, dtype=torch.long)
    labels[order] = step.cumsum(0)
    return labels


def cluster_indices(x: torch.Tensor, groups=None, k: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Leave-one-cluster-out: one fold per cluster of :func:`find_clusters` (``k`` only matters
    when no clear gap exists). The number of folds is the number of clusters."""
    labels = find_clusters(x, groups, k)
    n_clusters = int(labels.max()) + 1
    if n_clusters < 2:
        raise NndlError("splitter = cluster found only one cluster (one group value); give a group column with "
                        "at least two values, or use --set splitter=blocked")
    return _from_val_sets(len(x), [torch.nonzero(labels == c).flatten() for c in range(n_clusters)])


SPLITTERS = ("kfold", "blocked", "cluster")


def make_splits(x: torch.Tensor, cfg, groups=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The folds ``cfg.splitter`` asks for: ``kfold`` (shuffled, seeded by ``cfg.seed``),
    ``blocked`` (contiguous blocks of sorted x) or ``cluster`` (leave one cluster out)."""
    kind = getattr(cfg, "splitter", "kfold")
    if kind == "kfold":
        return kfold_indices(len(x), cfg.folds, cfg.seed)
    if kind == "blocked":
        return blocked_indices(x, cfg.folds)
    if kind == "cluster":
        return cluster_indices(x, groups, cfg.folds)
    raise NndlError(f"splitter = {kind!r}: choose one of {', '.join(SPLITTERS)}")


# Splitters as values: ``splitter(x, y) -> [(train_idx, val_idx), ...]``, for :func:`cross_validate`.
def shuffled_kfold(k: int, seed: int = 0):
    """Shuffled K-fold over the rows (:func:`kfold_indices`)."""
    return lambda x, y: kfold_indices(len(x), k, seed)


def stratified_kfold(k: int, seed: int = 0):
    """Shuffled K-fold that keeps each class's share of ``y`` (integer labels) in every fold."""
    def split(x, y):
        from nndl.data.splits import stratified_kfold as by_class  # a generic helper that lives with the image data

        return by_class(y.detach().cpu(), k, seed)

    return split


def blocked_kfold(k: int):
    """Contiguous blocks of rows along the sorted first input column (:func:`blocked_indices`)."""
    return lambda x, y: blocked_indices(x, k)


def per_cluster(k: int = 5, groups=None):
    """Leave one cluster (or one group value) out (:func:`cluster_indices`)."""
    return lambda x, y: cluster_indices(x, groups, k)


def _check_sizes(n: int, k: int) -> None:
    if k < 2:
        raise NndlError(f"folds = {k}: cross-validation needs at least 2 folds")
    if n < k:
        raise NndlError(f"only {n} rows for {k} folds: use fewer folds (--set folds=N) or more data")


# Below this many multiply-adds per optimiser step (models x rows x weights) a second OpenMP
# thread may cost more in wake-ups than it saves, and on a busy machine it is ruinous: the seed
# preset's batched 5-fold CV took 4.0 s on 1 thread and 44 s on 2 on a 2-core machine shared with
# other users' jobs (load average 2-4, measured back to back), while on a quiet machine 2 threads
# take 0.65 s against 1 thread's 1.0 s. So tiny work starts on one thread, and a stack of models
# (the batched CV) measures both counts as it trains and keeps the faster (ThreadProbe).
ONE_THREAD_BELOW = 2e8

_caller_threads: list[int] = []  # the thread count the outermost thread_policy found (the caller's)


def step_work(n_models: int, rows: int, model: nn.Module) -> float:
    """Multiply-adds of one forward pass of ``n_models`` copies of ``model`` over ``rows`` rows."""
    weights = sum(p.numel() for p in model.parameters() if p.dim() > 1)
    return float(n_models) * rows * weights


@contextlib.contextmanager
def thread_policy(work: float, threads: int = 0):
    """Run a block with a torch intra-op thread count chosen for ``work`` (see :func:`step_work`).

    ``threads > 0`` is used as given; ``0`` means one thread for tiny work (below
    :data:`ONE_THREAD_BELOW`; a stack trained inside may then probe the caller's count, see
    :class:`ThreadProbe`) and the caller's count otherwise. The caller's count is restored on
    exit, so a library call never leaks a thread setting into the user's process.
    """
    before = torch.get_num_threads()
    _caller_threads.append(_caller_threads[0] if _caller_threads else before)
    want = threads if threads > 0 else (1 if work < ONE_THREAD_BELOW else before)
    if want != before:
        torch.set_num_threads(want)
    try:
        yield want
    finally:
        _caller_threads.pop()
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class ThreadProbe:
    """While a stack trains, use one thread or the caller's thread count, whichever is measured faster.

    Which is faster depends on how busy the machine is at the moment, not on the work alone
    (see :data:`ONE_THREAD_BELOW`). Each count trains one unmeasured epoch (switching counts
    wakes new threads) and then ``probe`` measured ones. More threads are chosen only when their
    mean epoch is clearly shorter (below ``margin`` times one thread's) and steady: on a busy
    machine OpenMP threads that wait for each other give mostly short epochs with rare 50x
    stalls, which a mean over a few epochs can miss. So while more threads are in use, one epoch
    three times slower than they measured switches back to one thread at once. The choice holds
    for ``hold`` epochs, then both counts are measured again. The thread count changes only the
    time: the batched matrix products give the same numbers on 1 or 2 threads
    (``tests/test_stacked_members.py`` checks it).
    """

    def __init__(self, counts: tuple[int, ...], probe: int = 4, hold: int = 60, margin: float = 0.8):
        self.counts, self.probe, self.hold, self.margin = counts, probe, hold, margin
        self.plan: list[tuple[int, bool]] = []  # (threads, measured) for the coming epochs
        self.samples: dict[int, list[float]] = {}
        self.current, self.hold_until, self.reference = counts[0], 0, math.inf
        self._measure_again()

    @classmethod
    def for_stack(cls, threads_setting: int) -> "ThreadProbe | None":
        """A probe when the thread policy put tiny work on one thread and the caller has more
        (``threads = 0``); None when the count was given or there is nothing to choose from."""
        caller = _caller_threads[0] if _caller_threads else torch.get_num_threads()
        if threads_setting or torch.get_num_threads() != 1 or caller <= 1:
            return None
        return cls((1, caller))

    def _measure_again(self) -> None:
        self.plan = [(c, measured) for c in self.counts for measured in [False] + [True] * self.probe]
        self.samples = {c: [] for c in self.counts}

    def _choose(self, epoch: int) -> None:
        one, many = self.counts[0], self.counts[-1]
        mean = {c: sum(v) / len(v) for c, v in self.samples.items()}
        steady = max(self.samples[many]) < 3 * min(self.samples[many])
        self.current = many if steady and mean[many] < self.margin * mean[one] else one
        self.reference, self.hold_until = mean[self.current], epoch + self.hold

    def begin(self, epoch: int) -> None:
        """Set the thread count for epoch ``epoch`` (0-based; epoch 0 warms up on the current count)."""
        want = self.plan[0][0] if epoch > 0 and self.plan else self.current
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)

    def end(self, epoch: int, seconds: float) -> None:
        """Record epoch ``epoch``'s time; choose once every count has been measured."""
        if epoch == 0:
            return
        if self.plan:
            threads, measured = self.plan.pop(0)
            if measured:
                self.samples[threads].append(seconds)
            if not self.plan:
                self._choose(epoch)
        elif self.current != self.counts[0] and seconds > 3 * self.reference:
            self.current, self.hold_until = self.counts[0], epoch + self.hold  # a stall: back to one thread
        elif epoch >= self.hold_until:
            self._measure_again()


@dataclass
class FoldResult:
    model: nn.Module
    result: TrainResult
    train_mse: float
    val_mse: float
    val_idx: torch.Tensor | None = None  # the held-out rows (for out-of-fold predictions)


def cross_validate(make_model, x: torch.Tensor, y: torch.Tensor, cfg, *, splitter=None, task: str = "regression",
                   transform=None, batched: bool = False, progress: bool = True, groups=None, callbacks=None,
                   on_fold=None) -> list[FoldResult]:
    """Train one model per fold of a split and score it on the held-out fold (any task, any splitter).

    Parameters
    ----------
    make_model : callable
        ``make_model(fold) -> nn.Module``: a fresh model (seed it per fold for reproducibility).
    x, y : Tensor
        Training inputs and targets (values, or class labels) on the training device.
    cfg : RegressConfig or ClassifyConfig
        Configures :func:`~nndl.training.trainer.train`; without ``splitter``, its ``splitter``,
        ``folds`` and ``seed`` pick the split (:func:`make_splits`).
    splitter : callable, optional
        ``splitter(x, y) -> [(train_idx, val_idx), ...]``: :func:`shuffled_kfold`,
        :func:`stratified_kfold`, :func:`blocked_kfold`, :func:`per_cluster`, or your own.
    task : {"regression", "classification"}
        Regression folds are scored by their train and held-out MSE; other tasks leave
        ``train_mse``/``val_mse`` NaN (their scores are in ``result.history``).
    transform : callable, optional
        The input transform of :func:`~nndl.training.trainer.train` (normalisation, augmentation).
    on_fold : callable, optional
        ``on_fold(i, fold_result)`` after fold ``i`` (0-based) is trained; a true return value
        ends the cross-validation there (e.g. a diverged fold that already decides a trial);
        it may also raise (e.g. a pruner).
    batched : bool
        Train all folds as one :class:`~nndl.nn.models.StackedMLP` (requires MLP models).
        Full-batch training then matches the one-by-one path up to float rounding.
    groups : array-like, optional
        One group value per row, for ``splitter = "cluster"``.
    callbacks : list, optional
        :mod:`nndl.training.callbacks` called on each fold model's training events (``state.fold`` = 1..K).

    Returns
    -------
    list of FoldResult, one per fold (``len`` is the number of clusters for the cluster
    splitter), each model with its best weights restored.
    """
    regression = task == "regression"
    if batched:
        if not regression:
            raise NndlError(f"batched cross-validation trains regression MLPs only, not task {task!r}")
        return cross_validate_many([make_model], x, y, [cfg], progress=progress, groups=groups,
                                   callbacks=callbacks, splitter=splitter)[0]
    splits = splitter(x, y) if splitter is not None else make_splits(x, cfg, groups)
    models = [make_model(i) for i in range(len(splits))]
    # The thread policy is sized for MLP work (rows x weights); image models keep the caller's threads.
    threads = (thread_policy(step_work(1, len(x), models[0]), getattr(cfg, "threads", 0)) if regression
               else contextlib.nullcontext())
    out = []
    with threads:
        for i, (model, (tr, va)) in enumerate(zip(models, splits)):
            res = train(model, x[tr], y[tr], cfg, task=task, x_val=x[va], y_val=y[va], transform=transform,
                        progress=progress, desc=f"fold {i + 1}/{len(splits)}", callbacks=callbacks, fold=i + 1)
            fold = (_scored([model], [res], [(tr, va)], x, y)[0] if regression
                    else FoldResult(model, res, math.nan, math.nan, va))
            out.append(fold)
            if on_fold is not None and on_fold(i, fold):
                break
    return out


def _scored(models, results, splits, x, y) -> list[FoldResult]:
    """Each trained fold model with its final train and held-out MSE."""
    return [FoldResult(model, res, evaluate(model, x[tr], y[tr], "regression")["loss"],
                       evaluate(model, x[va], y[va], "regression")["loss"], va)
            for model, res, (tr, va) in zip(models, results, splits)]


@torch.no_grad()
def out_of_fold(folds: list[FoldResult], x: torch.Tensor) -> torch.Tensor:
    """Each row's prediction by the fold model that did not train on it (NaN for rows no fold held out)."""
    pred = torch.full((len(x),), float("nan"), device=x.device)
    for f in folds:
        f.model.eval()
        pred[f.val_idx] = f.model(x[f.val_idx]).reshape(-1).float()
    return pred


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


# Config fields that may differ between the models of one stack: they enter only the optimiser
# step, the L1 term, the per-model lr schedule and the per-model stopping. Everything else
# (architecture, data, batch size, optimiser kind, seed) must be equal, because one batched
# forward pass and one batch order serve every model.
PER_MODEL_FIELDS = frozenset({"lr", "weight_decay", "l1", "epochs", "schedule", "warmup_epochs", "min_lr_factor",
                              "patience"})


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


def cross_validate_many(make_models: list, x: torch.Tensor, y: torch.Tensor, cfgs: list, *,
                        progress: bool = False, groups=None, callbacks=None, splitter=None) -> list[list[FoldResult]]:
    """Cross-validate several configs at once: all their fold models train as one stack.

    Parameters
    ----------
    make_models : list of callable
        One ``make_model(fold) -> nn.Module`` per config.
    x, y : Tensor
        Training inputs and regression targets on the training device.
    cfgs : list of RegressConfig
        Configs with one :func:`stack_key`: they share the network, the data, the batch
        size, the optimiser and the seed, and may differ in ``PER_MODEL_FIELDS`` (lr,
        weight decay, L1, epochs, schedule, patience) -- e.g. the trials of a search.
    groups : array-like, optional
        One group value per row, for ``splitter = "cluster"``.
    splitter : callable, optional
        ``splitter(x, y) -> [(train_idx, val_idx), ...]`` instead of the configs' ``splitter``.

    Returns
    -------
    One list of :class:`FoldResult` per config, equal (up to float rounding) to what
    ``cross_validate(make_model, x, y, cfg, batched=False)`` gives for that config.
    """
    if len({stack_key(c) for c in cfgs}) > 1:
        raise NndlError("configs trained as one stack must differ only in " + ", ".join(sorted(PER_MODEL_FIELDS)))
    splits = splitter(x, y) if splitter is not None else make_splits(x, cfgs[0], groups)
    k = len(splits)
    models = [make(i) for make in make_models for i in range(k)]
    with thread_policy(step_work(len(models), len(x), models[0]), getattr(cfgs[0], "threads", 0)):
        results = train_stacked(models, x, y, splits * len(cfgs), [c for c in cfgs for _ in range(k)],
                                progress=progress, callbacks=callbacks)
        folds = _scored(models, results, splits * len(cfgs), x, y)
    return [folds[i * k:(i + 1) * k] for i in range(len(cfgs))]


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
