"""Cross-validation: splitters as values (shuffled, stratified, blocked, leave-one-cluster-out) and
the fold models, trained one by one or as one stack (:mod:`nndl.training.stacked`) under a thread
count sized to the work (:mod:`nndl.training.threads`); the index splits are :mod:`nndl.data.splits`."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from nndl.base.errors import NndlError
from nndl.data.splits import blocked_indices, cluster_indices, kfold_indices, make_splits
from nndl.training.stacked import PER_MODEL_FIELDS, stack_key, train_stacked
from nndl.training.threads import step_work, thread_policy
from nndl.training.trainer import TrainResult, evaluate, train


# Splitters as values: ``splitter(x, y) -> [(train_idx, val_idx), ...]``, for :func:`cross_validate`.
def shuffled_kfold(k: int, seed: int = 0):
    """Shuffled K-fold over the rows (:func:`kfold_indices`)."""
    return lambda x, y: kfold_indices(len(x), k, seed)


def stratified_kfold(k: int, seed: int = 0):
    """Shuffled K-fold that keeps each class's share of ``y`` (integer labels) in every fold."""
    def split(x, y):
        from nndl.data.splits import stratified_kfold as by_class

        return by_class(y.detach().cpu(), k, seed)

    return split


def blocked_kfold(k: int):
    """Contiguous blocks of rows along the sorted first input column (:func:`blocked_indices`)."""
    return lambda x, y: blocked_indices(x, k)


def per_cluster(k: int = 5, groups=None):
    """Leave one cluster (or one group value) out (:func:`cluster_indices`)."""
    return lambda x, y: cluster_indices(x, groups, k)


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


