"""Tasks as plug-ins (nndl.tasks.base, nndl.tasks): the skeleton's order and clean-up, and each task's
building blocks as search, bench and the lr finder use them."""
import json
import math

import pytest
import torch

from nndl.base import config
from nndl.training.callbacks import CallbackList
from nndl.training.crossval import cross_validate
from nndl.base.errors import NndlError
from nndl.tasks.base import Setup, Task, run_task
from nndl.tasks import get_task, task_names

QUIET = dict(progress=False, echo=lambda s: None, callbacks=CallbackList([]), verbose=False)


class Recording(Task):
    """A task that records the skeleton's calls; ``fail_in`` names a step that raises."""

    name = "regress"  # any registered config name: the skeleton writes config.json with it

    def __init__(self, fail_in: str = ""):
        self.calls, self.fail_in = [], fail_in

    def _step(self, name, value=None):
        self.calls.append(name)
        if name == self.fail_in:
            raise RuntimeError(f"{name} failed")
        return value

    def inputs(self, cfg):
        return []

    def load(self, cfg, data=None):
        return self._step("load", {"rows": 3})

    def setup(self, cfg, data, device):
        return Setup(lambda i: torch.nn.Linear(1, 1), torch.zeros(3, 1), torch.zeros(3), None, "regression")

    def cross_validate(self, cfg, data, folds=None, on_fold=None):
        return []

    def header(self, cfg, data):
        return [f"data: {data['rows']} rows"]

    def fit(self, cfg, data, ctx):
        assert (ctx.run_dir / "config.json").exists()  # written before any training
        return self._step("fit", "model")

    def test(self, cfg, data, fitted):
        return self._step("test", {"test_mse": 0.5})

    def save(self, cfg, data, fitted, run_dir):
        self._step("save")
        assert not (run_dir / "metrics.json").exists()  # metrics.json comes last: it marks a finished run

    def figures(self, cfg, data, fitted, fig_dir):
        self._step("figures")

    def warnings(self, metrics, fitted):
        return ["one thing to know"]


def test_run_task_calls_the_steps_in_order_and_writes_the_run_folder(tmp_path):
    task, lines = Recording(), []
    run = run_task(task, config.resolve("regress"), out=tmp_path / "run", figures=True,
                   **{**QUIET, "echo": lines.append})
    assert task.calls == ["load", "fit", "test", "save", "figures"]
    folder = tmp_path / "run"
    assert json.loads((folder / "metrics.json").read_text()) == {"test_mse": 0.5}
    assert {"config.json", "environment.json", "report.html", ".nndl-run"} <= {p.name for p in folder.iterdir()}
    assert lines[0].splitlines()[:2] == [f"run folder: {folder}", "data: 3 rows"]
    assert "WARNING: one thing to know" in lines and run.metrics["test_mse"] == 0.5


@pytest.mark.parametrize("step", ["fit", "test", "save", "figures"])
def test_a_failed_step_leaves_no_run_folder(tmp_path, step):
    with pytest.raises(RuntimeError, match=f"{step} failed"):
        run_task(Recording(fail_in=step), config.resolve("regress"), out=tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()


def test_bad_data_fails_before_the_run_folder_exists(tmp_path):
    with pytest.raises(RuntimeError, match="load failed"):
        run_task(Recording(fail_in="load"), config.resolve("regress"), out=tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()


def test_registry():
    assert set(task_names()) == set(config.TASK_CONFIGS) == {"regress", "classify"}
    assert all(get_task(name).name == name for name in task_names())
    with pytest.raises(NndlError, match="unknown task 'cluster'"):
        get_task("cluster")


def test_regression_building_blocks_match_cross_validate():
    task = get_task("regress")
    cfg = config.resolve("regress", "seed", {"epochs": 30, "folds": 3, "test_path": ""})
    data = task.load(cfg)
    assert data.test is None and len(data.train.y) > 0
    setup = task.setup(cfg, data, torch.device("cpu"))
    assert setup.loss == "regression" and setup.transform is None and setup.x.shape[0] == len(data.train.y)
    scores = task.cross_validate(cfg, data)
    direct = cross_validate(setup.make_model, setup.x, setup.y, cfg, batched=True, progress=False)
    assert [s["score"] for s in scores] == [f.val_mse for f in direct]
    assert all(not s["diverged"] and s["stop_reason"] == "completed" for s in scores)


def test_classification_building_blocks_on_a_table(tmp_path):
    """Two separable blobs as a CSV table: the classify task loads, sets up and cross-validates it."""
    gen = torch.Generator().manual_seed(0)
    rows = ["a,b,label"] + [f"{x:.4f},{y:.4f},{'left' if i % 2 else 'right'}"
                            for i, (x, y) in enumerate(torch.randn(120, 2, generator=gen).tolist())
                            for x, y in [((x - 3) if i % 2 else (x + 3), y)]]
    path = tmp_path / "blobs.csv"
    path.write_text("\n".join(rows) + "\n")
    task = get_task("classify")
    cfg = config.resolve("classify", "mlp", {"data": str(path), "hidden": [16], "dropout": [0.0], "epochs": 15,
                                             "batch_size": 16, "lr": 0.01})
    data = task.load(cfg)
    setup = task.setup(cfg, data, torch.device("cpu"))
    assert setup.loss == "classification" and setup.make_model(0)(setup.transform(setup.x[:4], None)).shape == (4, 2)
    folds = task.cross_validate(cfg, None, folds=3)
    assert len(folds) == 3 and all(math.isfinite(f["score"]) and f["score"] > 0.9 for f in folds)
