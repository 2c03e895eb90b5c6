"""Stratified splits of class labels: one hold-out split and shuffled K-fold.

Both seed a private ``torch.Generator`` (the global RNG is untouched) and deal each class
separately, so every part keeps the class proportions.
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
