"""Run and Study objects: what regress/classify/tune return and load_run opens."""
import json
import re

import pytest
from matplotlib.figure import Figure

import nndl
from conftest import FASHION_DIR, needs_fashion
from nndl.base.errors import NndlError
from nndl.runfolder.objects import Run, Study

QUIET = dict(progress=False, echo=lambda s: None)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("results") / "reg"
    return nndl.regress(out=out, overrides={"epochs": 30, "folds": 3}, **QUIET)


def test_regress_returns_a_run_that_still_reads_like_the_metrics_dict(reg_run):
    run = reg_run
    on_disk = json.loads((run.path / "metrics.json").read_text())
    assert isinstance(run, Run) and run.task == "regress"
    assert run["test_mse"] == pytest.approx(on_disk["test_mse"]) and run.metrics["val_mse"] == run["val_mse"]
    assert run["run_dir"] == str(run.path) and "run_dir" in run and run.get("nope") is None
    assert set(dict(run)) == set(on_disk) | {"run_dir"}
    assert run.config["epochs"] == 30 and run.config["folds"] == 3
    folds = [str(r["fold"]) for r in run.history]
    assert folds.count("1") == 30 and folds.count("refit") == 30 and len(run.history) == 4 * 30
    assert {"fit", "losses", "weight_histograms"} <= set(run.figures)
    assert "test_mse" in repr(run)


def test_run_figures_are_matplotlib_figures(reg_run):
    losses = reg_run.figure("losses")  # drawn again from history.csv
    assert isinstance(losses, Figure)
    lines = losses.axes[0].get_lines()
    assert len(lines) == 3 * 2 + 1  # train and validation per fold, train for the refit
    assert list(lines[0].get_xdata()) == list(range(1, 31))
    # drawn by the function that drew losses.png: the same legend and title, at the notebook size
    legend = [t.get_text() for t in losses.axes[0].get_legend().get_texts()]
    assert legend[:2] == ["fold 1 train loss", "fold 1 val loss"] and legend[-1] == "refit train loss"
    assert losses.axes[0].get_title() == "Training and validation MSE per fold"
    assert losses._repr_png_()[16:24] == (700).to_bytes(4, "big") + (400).to_bytes(4, "big")
    fit = reg_run.figure("fit")  # the saved PNG in a Figure
    assert isinstance(fit, Figure) and fit.axes[0].get_images()
    with pytest.raises(NndlError, match="no figure 'nope'.*fit"):
        reg_run.figure("nope")


def test_run_html_shows_numbers_and_inline_figures(reg_run):
    page = reg_run._repr_html_()
    assert f"{reg_run['test_mse']:.6g}" in page and f"{reg_run['val_mse']:.6g}" in page
    images = re.findall(r'<img src="([^"]+)"', page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)


def test_load_run_reopens_a_run(reg_run):
    again = nndl.load_run(reg_run.path)
    assert isinstance(again, Run) and dict(again) == dict(reg_run)
    assert again.history == reg_run.history and again.config == reg_run.config
    assert isinstance(nndl.load_run(reg_run.path / "metrics.json"), Run)  # a file inside the folder works too


def test_load_run_refuses_other_folders(tmp_path):
    with pytest.raises(NndlError, match="not an nndl run or study folder"):
        nndl.load_run(tmp_path)


def test_config_dump_only_when_verbose(tmp_path):
    lines = []
    nndl.regress(out=tmp_path / "a", overrides={"epochs": 2, "folds": 2}, progress=False, figures=False,
                 echo=lines.append)
    assert any("resolved config" in s for s in lines)  # outside Jupyter: verbose by default
    lines.clear()
    nndl.regress(out=tmp_path / "b", overrides={"epochs": 2, "folds": 2}, progress=False, figures=False,
                 echo=lines.append, verbose=False)
    assert lines == [f"run folder: {tmp_path / 'b'}"]


def test_tune_returns_a_study(tmp_path):
    space = tmp_path / "space.toml"
    space.write_text('[fixed]\nepochs = 20\nfolds = 3\n[params.lr]\ntype = "log-float"\nlow = 1e-3\nhigh = 3e-2\n')
    study = nndl.tune("regress", space, sampler="random", trials=3, out=tmp_path / "s", echo=lambda s: None)
    assert isinstance(study, Study) and study["ok"] and study["counts"] == {"COMPLETE": 3}
    assert study["study_dir"] == str(tmp_path / "s") and study.get("ok", False)
    assert len(study.history) == 3 and all(r["state"] == "COMPLETE" for r in study.trials)
    assert study.config["lr"] == pytest.approx(study["best"]["params"]["lr"]) and study.config["epochs"] == 20
    assert study.config["hidden"] == study.best_run.config["hidden"]  # the full config, defaults included
    assert isinstance(study.best_run, Run) and study.best_run["test_mse"] == study["best_run"]["test_mse"]
    fig = study.figure("history")
    assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()[0].get_xdata()) == 3
    page = study._repr_html_()
    assert f"{study['best']['value']:.6g}" in page and "data:image/png;base64," in page
    assert isinstance(nndl.load_run(tmp_path / "s"), Study)


@needs_fashion
def test_classify_returns_a_run(tmp_path):
    run = nndl.classify("mlp", {"subset": 1500, "epochs": 2, "test_subset": 500, "data": str(FASHION_DIR)},
                        out=tmp_path / "c", **QUIET)
    assert isinstance(run, Run) and run.task == "classify" and run["test_accuracy"] > 0.5
    assert [r["epoch"] for r in run.history] == [1, 2]
    fig = run.figure("losses")
    assert len(fig.axes) == 2  # loss and accuracy panels
    page = run._repr_html_()
    assert f"{run['test_accuracy']:.6g}" in page and page.count("data:image/png;base64,") == 2
