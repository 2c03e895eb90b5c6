"""The line task's config: its dataclass, its presets, registered on import."""
from __future__ import annotations

from dataclasses import dataclass

from nndl.base.config import TrainConfig, _doc, register


@dataclass
class LineConfig(TrainConfig):
    """Fit y = w x + b to a two-column CSV (x, y) with K-fold CV."""

    train_path: str = _doc("", "CSV with a header and two numeric columns: x, y")
    folds: int = _doc(3, "K of the K-fold cross-validation")
    lr: float = 0.05
    epochs: int = 60
    batch_size: int = 16

    def range_checks(self):
        return [("folds", self.folds >= 2, "must be >= 2")]


PRESETS = {"plain": {}, "slow": {"lr": 0.005}}

register("line", LineConfig, PRESETS)
