"""Adding a task is one package and one registry line: the toy ``line`` task of docs/architecture.md.

The task lives in ``tests/toy_line/`` (config + task), registers its config on import and is put in
``nndl.tasks.TASK_MODULES`` here; no module of ``src/nndl`` knows it. It then runs end to end (config
checks, run folder, metrics, report, ``load_run``) the way regress and classify do.
"""
from __future__ import annotations

import importlib
import json
import sys

import numpy as np
import pytest

from nndl import tasks
from nndl.base import config as config_mod
from nndl.base.errors import NndlError
from nndl.tasks.base import run_task

QUIET = dict(progress=False, echo=lambda line: None, verbose=False)


@pytest.fixture
def line(monkeypatch):
    """The toy task registered for one test: its config in a copy of the registry, its module in TASK_MODULES."""
    monkeypatch.setattr(config_mod, "_REGISTERED", dict(config_mod.registered()))
    sys.modules.pop("toy_line.config", None)
    importlib.import_module("toy_line.config")  # registers "line" (into the copy)
    monkeypatch.setitem(tasks.TASK_MODULES, "line", "toy_line.task")
    return tasks.get_task("line")


def _points(tmp_path, n=60, slope=2.0):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, n)
    y = slope * x + 0.5 + rng.normal(0, 0.05, n)
    path = tmp_path / "points.csv"
    path.write_text("x,y\n" + "".join(f"{a:.5f},{b:.5f}\n" for a, b in zip(x, y)))
    return str(path)


def test_the_toy_task_runs_end_to_end_like_the_built_in_ones(line, tmp_path):
    cfg = config_mod.resolve("line", "plain", {"train_path": _points(tmp_path)}, seed=0)
    run = run_task(line, cfg, out=tmp_path / "run", **QUIET)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert abs(metrics["slope"] - 2.0) < 0.1 and metrics["test_mse"] < 0.01  # it learns the line
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_path"].endswith("points.csv")
    html = (tmp_path / "run" / "report.html").read_text()
    assert "line fit" in html and "Slope" in html  # the report reads the task's view from the folder
    assert run.metrics["slope"] == metrics["slope"]
    from nndl import load_run

    assert load_run(tmp_path / "run").metrics == metrics


def test_its_config_is_checked_like_any_task_config(line, tmp_path):
    with pytest.raises(NndlError, match="unknown config key 'foldz'"):
        config_mod.resolve("line", None, {"foldz": 3})
    with pytest.raises(NndlError, match="folds"):
        config_mod.resolve("line", None, {"folds": 1})
    with pytest.raises(NndlError, match="epochs"):
        config_mod.resolve("line", None, {"epochs": "many"})
    assert config_mod.resolve("line", "slow").lr == 0.005
    assert "slow" in config_mod.describe_presets("line")


def test_bad_data_is_one_line_before_anything_is_written(line, tmp_path):
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    cfg = config_mod.resolve("line", None, {"train_path": str(tmp_path / "bad.csv")})
    with pytest.raises(NndlError, match="bad.csv: needs two columns"):
        run_task(line, cfg, out=tmp_path / "run", **QUIET)
    assert not (tmp_path / "run").exists()


def test_without_the_registry_line_the_task_does_not_exist():
    with pytest.raises(NndlError, match="unknown task 'line'"):
        tasks.get_task("line")
