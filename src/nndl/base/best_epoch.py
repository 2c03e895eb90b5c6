"""Which epoch is the best one: the single tie rule that early stopping, metrics.json and the plots share.

An epoch is better only when its value is strictly better, so among equal values the *first* epoch
wins (the weights early stopping keeps are that epoch's). The loss plot used to mark the last of
tied accuracies, and so named another epoch than ``best_epoch`` in ``metrics.json``.
"""
from __future__ import annotations

import math
from typing import Sequence


def improves(value: float, best: float, higher: bool) -> bool:
    """Whether ``value`` beats ``best`` (strictly: a tie keeps the earlier epoch)."""
    return value > best if higher else value < best


def best_epoch(history: Sequence[dict], key: str, higher: bool) -> tuple[int, float] | None:
    """``(epoch, value)`` of the best finite ``key`` in ``history`` (rows with ``epoch``), or None.

    Parameters
    ----------
    history : list of dict
        One row per epoch.
    key : str
        The monitored column (``val_acc``, ``val_loss`` ...).
    higher : bool
        Larger is better (accuracy) rather than smaller (loss).
    """
    best = None
    for row in history:
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and (best is None or
                                                                       improves(value, best[1], higher)):
            best = (row["epoch"], value)
    return best
