"""Index splits of a data set: stratified hold-out and K-fold of class labels, shuffled K-fold,
blocked K-fold (contiguous ranges of x) and leave-one-cluster-out.

Each returns index tensors; the seeded ones use a private ``torch.Generator`` (the global RNG is
untouched). :mod:`nndl.training.crossval` wraps them as splitters for cross-validation.
"""
from __future__ import annotations

import numpy as np
import torch

from nndl.base.errors import NndlError


def _class_perms(labels, seed: int) -> list[torch.Tensor]:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise NndlError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in torch.unique(labels):  # sorted, so the generator is consumed in a fixed order
        idx = torch.nonzero(labels == c).flatten()
        out.append(idx[torch.randperm(len(idx), generator=g)])
    return out


def stratified_split(labels, val_fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices into train/validation keeping each class's proportion.

    ``labels`` is 1-D ints; each class gives ``round(val_fraction * n_class)`` samples
    to validation, ``0 <= val_fraction < 1``; ``seed`` seeds a private ``torch.Generator``
    (the global RNG is untouched).

    Returns
    -------
    train_idx, val_idx : torch.Tensor
        Sorted ``int64`` indices; disjoint, and together all of ``range(N)``.
    """
    if not 0 <= val_fraction < 1:
        raise NndlError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [torch.empty(0, dtype=torch.int64)], [torch.empty(0, dtype=torch.int64)]
    for perm in _class_perms(labels, seed):
        n_val = int(round(val_fraction * len(perm)))
        val.append(perm[:n_val])
        train.append(perm[n_val:])
    return torch.sort(torch.cat(train)).values, torch.sort(torch.cat(val)).values


def stratified_kfold(labels, k: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, stratified K-fold indices.

    Each class's shuffled indices are dealt round robin into the folds, so every fold
    has (within one sample) the same class mix; shuffling avoids the sorted-data trap.

    ``labels`` is 1-D ints; ``2 <= k <=`` the smallest class count; ``seed`` seeds a
    private ``torch.Generator``.

    Returns
    -------
    list of (train_idx, val_idx)
        ``k`` pairs of sorted ``int64`` tensors; the ``val_idx`` partition ``range(N)``.
    """
    perms = _class_perms(labels, seed)
    smallest = min((len(p) for p in perms), default=0)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2 or k > smallest:
        raise NndlError(f"k must be an integer >= 2 and <= the smallest class count ({smallest}), got {k}")
    folds: list[list[torch.Tensor]] = [[] for _ in range(k)]
    offset = 0
    for perm in perms:
        for j in range(k):
            # Rotate the starting fold so classes' leftover samples land in different folds.
            folds[(offset + j) % k].append(perm[j::k])
        offset += len(perm) % k
    vals = [torch.sort(torch.cat(f)).values for f in folds]
    return [(torch.sort(torch.cat(vals[:j] + vals[j + 1:])).values, vals[j]) for j in range(k)]


SPLITTERS = ("kfold", "blocked", "cluster")


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
    only: give that column's values as ``x`` to block along another (the regression task refuses
    several inputs without a ``block_col``). Fold sizes differ by at most one.
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


def make_splits(x: torch.Tensor, cfg, groups=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The folds ``cfg.splitter`` asks for: ``kfold`` (shuffled, seeded by ``cfg.seed``),
    ``blocked`` (contiguous blocks of sorted x) or ``cluster`` (leave one cluster out)."""
    kind = getattr(cfg, "splitter", "kfold")
    if kind == "kfold":
        return kfold_indices(len(x), cfg.folds, cfg.seed)
    if kind == "blocked":  # along the block column when the task gives one (``groups``), else x's first
        return blocked_indices(x if groups is None else torch.as_tensor(groups, dtype=torch.float64), cfg.folds)
    if kind == "cluster":
        return cluster_indices(x, groups, cfg.folds)
    raise NndlError(f"splitter = {kind!r}: choose one of {', '.join(SPLITTERS)}")


def _check_sizes(n: int, k: int) -> None:
    if k < 2:
        raise NndlError(f"folds = {k}: cross-validation needs at least 2 folds")
    if n < k:
        raise NndlError(f"only {n} rows for {k} folds: use fewer folds (--set folds=N) or more data")
