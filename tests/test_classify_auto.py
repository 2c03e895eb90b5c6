"""``nndl classify --preset auto``: candidates that fit the data kind, scored by CV on the training split only.

The search is checked with a scripted cross-validation (which candidate wins, ties, divergence, recipes
that do not fit the data), then once end to end on scikit-learn's wine table through the CLI.
"""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from conftest import run_cli
from nndl.base import config as config_mod
from nndl.base.errors import NndlError
from nndl.data import Dataset
from nndl.tasks.classify import auto
from nndl.tasks.classify.task import TASK, ClassificationTask
from test_golden import write_wine_csv


def _ds(shape, n=300, mirror=False):
    import torch

    return Dataset(kind="test", source="test", x_train=torch.zeros(n, *shape), y_train=torch.arange(n) % 3,
                   x_test=torch.zeros(10, *shape), y_test=torch.arange(10) % 3, input_shape=tuple(shape),
                   class_names=["a", "b", "c"], mean=[0.0], std=[1.0], mirror_invariant=mirror)


def _recipe_of(cfg) -> str:
    """The table recipe ``cfg`` was made from: the most specific one whose settings it has."""
    matching = [n for n, r in auto.TABLE_RECIPES.items() if all(getattr(cfg, k) == v for k, v in r.items())]
    return max(matching, key=lambda n: len(auto.TABLE_RECIPES[n]))


def _scripted(scores: dict[str, list[float]], diverged=()):
    """A cross_validate that returns fixed fold accuracies per recipe; ``calls`` records (recipe, folds)."""
    calls = []

    def cross_validate(cfg, ds, folds, only):
        name = _recipe_of(cfg)
        calls.append((name, tuple(only)))
        return [{"val_accuracy": scores[name][i], "diverged": name in diverged} for i in only]

    return cross_validate, calls


def _choose(cfg, ds, cross_validate, user_set=frozenset(), mirror_ok=False):
    lines: list[str] = []
    out = auto.choose_recipe(cfg, ds, set(user_set), mirror_ok, lambda c, rows: c, cross_validate, lines.append)
    return out, lines


def _cfg(**overrides):
    return config_mod.resolve("classify", "auto", overrides)


def test_tables_get_table_recipes_and_images_image_recipes():
    cfg = _cfg()
    assert list(auto.candidates(cfg, _ds((4,)), set(), False)) == list(auto.TABLE_RECIPES)
    small = auto.candidates(cfg, _ds((1, 8, 8)), set(), False)
    assert list(small) == ["mlp", "cnn", "cnn + shifts"] and small["cnn + shifts"]["translate"] == 1
    fashion = auto.candidates(cfg, _ds((1, 28, 28), mirror=True), set(), True)
    assert fashion["cnn + shifts"]["translate"] == 2 and fashion["cnn + shifts + flips"]["flip"] is True
    assert not any(r.get("flip") for r in auto.candidates(cfg, _ds((1, 28, 28)), set(), False).values())
    assert auto.IMAGE_RECIPES["cnn + shifts"]["translate"] == 1  # the shared table is not changed in place


def test_a_recipe_that_would_change_a_user_setting_is_dropped():
    cfg = _cfg(model="cnn")
    kept = auto.candidates(cfg, _ds((1, 28, 28)), {"model"}, False)
    assert list(kept) == ["cnn", "cnn + shifts"]
    lr = auto.candidates(_cfg(lr=0.01), _ds((4,)), {"lr"}, False)
    assert "default mlp, lr 3e-3" not in lr and "mlp 128" in lr
    assert auto.candidates(_cfg(hidden=[7], lr=0.01, dropout=[0.0]), _ds((4,)), {"hidden", "lr", "dropout"},
                           False) == {"default mlp": {}}  # the user's own network, their lr
    assert auto.candidates(_cfg(model="lite"), _ds((1, 28, 28)), {"model"}, False) == {"your settings": {}}


def test_the_best_mean_wins_and_ties_go_to_the_simpler_recipe():
    scores = {"default mlp": [0.9, 0.9, 0.9], "mlp 128": [0.95, 0.93, 0.94],
              "mlp 512-256, adamw 1e-2": [0.94, 0.94, 0.94], "default mlp, lr 3e-3": [0.5, 0.5, 0.5]}
    cv, calls = _scripted(scores)
    (cfg, choice), lines = _choose(_cfg(), _ds((4,)), cv)
    assert [name for name, only in calls if only == (0,)] == list(auto.TABLE_RECIPES)
    assert choice.name == "mlp 128" and cfg.hidden == [128] and cfg.dropout == [0.1] and cfg.search == "auto"
    assert math.isclose(choice.scores["mlp 128"], 0.94)
    assert lines[-1].startswith("auto: chose mlp 128 (4 candidates in ") and len(lines) == 5
    m = choice.metrics()
    assert m["search_choice"] == "mlp 128" and m["search_candidates"] == 4 and math.isclose(m["search_cv_accuracy"], 0.94)
    tie = {**scores, "mlp 128": [0.94] * 3}
    (_, choice), _ = _choose(_cfg(), _ds((4,)), _scripted(tie)[0])
    assert choice.name == "mlp 128"  # 0.94 == 0.94 of the adamw recipe: the earlier one is kept


def test_a_diverged_or_nan_candidate_is_never_ranked():
    scores = {"default mlp": [0.6] * 3, "mlp 128": [math.nan, 0.99, 0.99],
              "mlp 512-256, adamw 1e-2": [0.99] * 3, "default mlp, lr 3e-3": [0.7] * 3}
    (_, choice), _ = _choose(_cfg(), _ds((4,)), _scripted(scores, diverged={"mlp 512-256, adamw 1e-2"})[0])
    assert choice.name == "default mlp, lr 3e-3"
    nothing = {n: [math.nan] * 3 for n in scores}
    with pytest.raises(NndlError, match="every candidate recipe diverged"):
        _choose(_cfg(), _ds((4,)), _scripted(nothing)[0])


def test_after_the_first_fold_only_the_better_half_go_on():
    scores = {"default mlp": [0.80, 0.99, 0.99], "mlp 128": [0.95, 0.90, 0.90],
              "mlp 512-256, adamw 1e-2": [0.90, 0.95, 0.95], "default mlp, lr 3e-3": [0.85, 0.99, 0.99]}
    cv, calls = _scripted(scores)
    (_, choice), lines = _choose(_cfg(), _ds((4,)), cv)
    # fold 1 ranks mlp 128 and the adamw recipe first: only they train folds 2 and 3
    assert [c for c in calls if c[1] != (0,)] == [("mlp 128", (1, 2)), ("mlp 512-256, adamw 1e-2", (1, 2))]
    assert choice.name == "mlp 512-256, adamw 1e-2" and set(choice.scores) == {"mlp 128", "mlp 512-256, adamw 1e-2"}
    assert choice.metrics()["search_candidates"] == 4
    assert "auto: default mlp                fold 1 accuracy 0.8000: not in the better half, dropped" in lines
    assert auto._halved({"a": 0.5, "b": 0.9}) == ["a", "b"]  # two candidates: both train every fold
    assert auto._halved({"a": 0.5, "b": 0.9, "c": 0.7}) == ["b", "c"]  # at least two go on
    assert auto._halved({"a": 0.9, "b": math.nan, "c": 0.9, "d": 0.1, "e": 0.2}) == ["a", "c", "e"]  # ties: order
    assert auto._halved({"a": math.nan, "b": 0.9}) == ["b"]


def test_a_fold_of_the_split_trains_as_it_does_in_the_full_cross_validation(tmp_path):
    """The halving search trains fold 1 first and the others later: each fold's numbers are unchanged."""
    from nndl.tasks.classify.task import cross_validate_classifier

    cfg = config_mod.resolve("classify", "mlp", {"data": str(write_wine_csv(tmp_path / "wine.csv")), "epochs": 3, "test_fraction": 0.25})
    full = cross_validate_classifier(cfg, folds=3)
    parts = cross_validate_classifier(cfg, folds=3, only=[0]) + cross_validate_classifier(cfg, folds=3, only=[1, 2])
    assert [f["val_accuracy"] for f in parts] == [f["val_accuracy"] for f in full]
    assert [f["val_loss"] for f in parts] == [f["val_loss"] for f in full]


def test_a_recipe_that_does_not_fit_the_data_is_skipped_with_a_line():
    def cross_validate(cfg, ds, folds, only):
        if cfg.model == "cnn":
            raise NndlError("config key 'model' = 'cnn': the cnn model needs images of at least 12x12 pixels")
        return [{"val_accuracy": 0.9, "diverged": False}] * len(only)

    (cfg, choice), lines = _choose(_cfg(), _ds((1, 8, 8)), cross_validate)
    assert choice.name == "mlp" and cfg.model == "mlp"
    assert sum("skipped: config key 'model'" in line for line in lines) == 2
    with pytest.raises(NndlError, match="at least 12x12"):  # nothing fits: the reason, not "diverged"
        _choose(_cfg(model="cnn"), _ds((1, 8, 8)), cross_validate, user_set={"model"})


def test_large_data_are_scored_on_a_subset_with_a_time_budget():
    seen = []

    def cross_validate(cfg, ds, folds, only):
        seen.append((cfg.subset, cfg.time_limit))
        return [{"val_accuracy": 0.9, "diverged": False}] * len(only)

    _choose(_cfg(), _ds((4,), n=auto.SEARCH_ROWS * 3), cross_validate)
    assert set(seen) == {(auto.SEARCH_ROWS, auto.FOLD_SECONDS)}
    seen.clear()
    _choose(_cfg(), _ds((4,), n=100), cross_validate)
    assert set(seen) == {(0, auto.FOLD_SECONDS)}


def test_tuning_refuses_a_search_inside_each_trial():
    with pytest.raises(NndlError, match="search=auto chooses a recipe inside one run"):
        TASK.cross_validate(_cfg())


def test_a_resumed_run_reads_the_search_back(tmp_path):
    (tmp_path / "search.json").write_text(json.dumps({"search": "auto", "search_choice": "mlp 128"}))
    ctx = SimpleNamespace(run_dir=tmp_path)
    assert ClassificationTask()._search_record(_cfg(), ctx)["search_choice"] == "mlp 128"
    assert ClassificationTask()._search_record(config_mod.resolve("classify", "mlp"), ctx) == {}


def test_auto_on_wine_from_the_cli_learns_and_records_its_choice(tmp_path):
    data = write_wine_csv(tmp_path / "wine.csv")
    proc = run_cli("classify", "--preset", "auto", "--set", f"data={data}", "--out", tmp_path / "run",
                   "--no-figures", check=0)
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("auto: ") and "CV accuracy" in line for line in lines) == 2  # the better half
    assert sum(line.startswith("auto: ") and line.endswith("dropped") for line in lines) == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert metrics["search_choice"] in auto.TABLE_RECIPES and metrics["search_candidates"] == 4
    assert saved["search"] == "auto"
    for key, value in auto.TABLE_RECIPES[metrics["search_choice"]].items():
        assert saved[key] == value  # the config saved is the one the run trained
    assert json.loads((tmp_path / "run" / "search.json").read_text())["search_choice"] == metrics["search_choice"]
    assert metrics["test_accuracy"] >= 0.9  # bench/datasets.py: 1.000 on its split; logistic regression 1.000
