"""The line task: load a CSV, K-fold CV, a final fit, the test MSE on the training rows' last fifth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nndl.base.errors import NndlError
from nndl.runfolder.files import save_model, write_history_csv
from nndl.tasks.base import Setup, Task
from nndl.training.crossval import cross_validate, shuffled_kfold
from nndl.training.trainer import evaluate, train


class LineTask(Task):
    name = "line"
    val_metric, direction, test_metric = "val_mse", "minimize", "test_mse"
    default_preset = "plain"
    key_metrics = ("test_mse", "val_mse", "slope")
    label = "line fit"
    cards = ({"title": "Test MSE", "value": "test_mse"}, {"title": "Slope", "value": "slope"})

    def inputs(self, cfg):
        return [cfg.train_path]

    def load(self, cfg, data=None):
        if data is not None:
            return data
        try:
            table = np.loadtxt(cfg.train_path, delimiter=",", skiprows=1, ndmin=2)
        except (OSError, ValueError) as e:
            raise NndlError(f"{cfg.train_path}: not a CSV of two numeric columns ({e}); give x,y rows") from None
        if table.shape[1] != 2 or len(table) < 10:
            raise NndlError(f"{cfg.train_path}: needs two columns (x, y) and at least 10 rows")
        xy = torch.as_tensor(table, dtype=torch.float32)
        cut = int(0.8 * len(xy))
        return {"x": xy[:cut, :1], "y": xy[:cut, 1], "x_test": xy[cut:, :1], "y_test": xy[cut:, 1]}

    def setup(self, cfg, data, device):
        return Setup(lambda i: torch.nn.Linear(1, 1), data["x"], data["y"], None, "regression")

    def cross_validate(self, cfg, data, folds=None, on_fold=None):
        data = self.load(cfg, data)
        torch.manual_seed(cfg.seed)
        scored = cross_validate(lambda i: torch.nn.Linear(1, 1), data["x"], data["y"], cfg,
                                splitter=shuffled_kfold(folds or cfg.folds, cfg.seed), progress=False)
        return [{"score": f.val_mse, "val_mse": f.val_mse, "diverged": f.result.diverged,
                 "timed_out": f.result.timed_out, "stop_reason": f.result.stop_reason} for f in scored]

    def fit(self, cfg, data, ctx):
        folds = self.cross_validate(cfg, data)
        torch.manual_seed(cfg.seed)
        model = torch.nn.Linear(1, 1)
        result = train(model, data["x"], data["y"], cfg, task="regression", progress=False)
        return {"model": model, "history": result.history, "val_mse": float(np.mean([f["val_mse"] for f in folds]))}

    def test(self, cfg, data, fitted):
        mse = evaluate(fitted["model"], data["x_test"], data["y_test"], "regression")["loss"]
        return {"test_mse": float(mse), "val_mse": fitted["val_mse"], "slope": float(fitted["model"].weight.item())}

    def save(self, cfg, data, fitted, run_dir: Path):
        write_history_csv(run_dir / "history.csv", fitted["history"])
        save_model(run_dir / "model.pt", self.name, {}, [fitted["model"].state_dict()])

    def figures(self, cfg, data, fitted, fig_dir: Path):
        pass  # the report draws the loss curve from history.csv


TASK = LineTask()
