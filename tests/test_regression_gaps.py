"""Regression that must hold up in gaps: gap-aware splitters, honest intervals, the auto preset,
and a thread policy that leaves the caller's setting alone."""
import json

import numpy as np
import pytest
import torch

import nndl
from nndl.base import config
from nndl.nn import intervals as uncertainty
from nndl.training.threads import thread_policy
from nndl.data.splits import blocked_indices, cluster_indices, find_clusters, make_splits
from nndl.base.errors import NndlError
from nndl.nn.models import MLP, Ensemble
from nndl.tasks.regress.task import auto_fit, fit_arrays, load_data

QUIET = dict(progress=False, echo=lambda s: None)
GAPS = [(-3.0, -1.0), (1.7, 3.1)]


def clustered_x(n=90, seed=0, gaps=GAPS):
    """1-D inputs on [-5, 5] outside ``gaps``, in shuffled order (splitters must not rely on sorted files)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-5, 5, 4 * n)
    x = x[~np.any([(a < x) & (x < b) for a, b in gaps], axis=0)][:n]
    return torch.as_tensor(x, dtype=torch.float32)[:, None]


def test_blocked_folds_are_contiguous_ranges_of_x():
    x = clustered_x()
    splits = blocked_indices(x, 5)
    assert sorted(torch.cat([va for _, va in splits]).tolist()) == list(range(len(x)))
    for tr, va in splits:
        lo, hi = x[va, 0].min(), x[va, 0].max()
        inside = (x[tr, 0] > lo) & (x[tr, 0] < hi)
        assert not inside.any()  # no training point lies within a validation block
        assert set(tr.tolist()).isdisjoint(va.tolist()) and len(tr) + len(va) == len(x)
    assert max(len(v) for _, v in splits) - min(len(v) for _, v in splits) <= 1


def test_blocked_sorts_several_columns_by_the_first():
    x = torch.stack([torch.linspace(0, 1, 20).flip(0), torch.randn(20)], 1)
    for _, va in blocked_indices(x, 4):
        assert len(va) == 5 and (x[va, 0].max() - x[va, 0].min()).item() < 5 / 19 + 1e-6


def test_cluster_folds_are_the_gap_separated_regions():
    x = clustered_x()
    splits = cluster_indices(x)
    assert len(splits) == 3  # two gaps -> three clusters, one fold each
    ranges = sorted((x[va, 0].min().item(), x[va, 0].max().item()) for _, va in splits)
    for (_, hi), (lo, _), (a, b) in zip(ranges, ranges[1:], GAPS):
        assert hi <= a and lo >= b  # each validation fold ends at a gap
    cfg = config.resolve("regress", "seed", {"splitter": "cluster"})
    assert all(torch.equal(v1, v2) for (_, v1), (_, v2) in zip(make_splits(x, cfg), splits))


def test_cluster_from_a_group_column_and_without_clear_gaps():
    x = torch.linspace(0, 1, 12)[:, None]
    groups = np.array([5, 5, 7, 7, 7, 9, 9, 9, 9, 5, 7, 9])
    labels = find_clusters(x, groups)
    assert len(set(labels.tolist())) == 3 and all((labels[groups == g] == labels[groups == g][0]).all()
                                                  for g in (5, 7, 9))
    # evenly spaced x has no gap: the k - 1 widest spacings cut it into k clusters
    assert len(cluster_indices(torch.linspace(0, 1, 30)[:, None] ** 2, k=4)) == 4
    with pytest.raises(NndlError, match="group"):
        cluster_indices(x, np.zeros(12))


def test_group_column_is_read_and_not_an_input(tmp_path):
    x = clustered_x(60)[:, 0].numpy()
    groups = np.digitize(x, [-2, 2.4])
    path = tmp_path / "train.csv"
    np.savetxt(path, np.c_[x, groups, np.sin(x)], delimiter=",", header="x,site,y", comments="")
    cfg = config.resolve("regress", "seed", {"train_path": str(path), "test_path": "", "group_col": "site",
                                             "splitter": "cluster", "epochs": 5})
    data, _ = load_data(cfg)
    assert data.x_names == ["x"] and data.y_name == "y"
    fit = fit_arrays(cfg, torch.as_tensor(data.x), torch.as_tensor(data.y), groups)
    assert len(fit.folds) == 3


def test_interval_and_coverage_match_a_hand_computation():
    members = np.array([[0.0, 1.0, 2.0, 3.0], [2.0, 1.0, 2.0, 5.0]])  # variances (ddof=1): 2, 0, 0, 2
    center = members.mean(0)  # 1, 1, 2, 4
    lower, upper = uncertainty.interval_bounds(center, members, noise_var=0.25, spread_scale=2.0, level=0.9)
    half = 1.6448536 * np.sqrt(np.array([2 * 2 + 0.25, 0.25, 0.25, 2 * 2 + 0.25]))
    np.testing.assert_allclose(upper - center, half, rtol=1e-6)
    np.testing.assert_allclose(center - lower, half, rtol=1e-6)
    y = np.array([1 + 3.5, 1.5, 2 - 0.9, 4.0])  # in (3.5 < 3.39? no), in, out (0.9 > 0.82), in
    covered = (y >= lower) & (y <= upper)
    assert covered.tolist() == [False, True, False, True]
    assert uncertainty.coverage(y, lower, upper) == 0.5
    assert np.isnan(uncertainty.coverage([], [], []))


def test_spread_scale_makes_held_out_points_covered():
    rng = np.random.default_rng(0)
    truth = rng.normal(0, 1.0, 400)  # the members agree far more than their error says
    members = rng.normal(0, 0.3, (5, 400))
    y = truth
    scale = uncertainty.fit_spread_scale(y, members, noise_var=0.0, level=0.9)
    assert 5 < scale < 100  # ~ (1.645^2 * 1) / (1.645^2 * 0.09): inside the clip range
    lo, hi = uncertainty.interval_bounds(members.mean(0), members, 0.0, scale, 0.9)
    assert uncertainty.coverage(y, lo, hi) >= 0.9
    assert uncertainty.fit_spread_scale(members.mean(0), members, noise_var=1.0) == 1.0  # never below 1


def test_ensemble_prediction_is_the_mean_of_its_members():
    torch.manual_seed(0)
    members = [MLP(1, [8], 1, "tanh") for _ in range(4)]
    x = np.linspace(-2, 2, 7, dtype=np.float32)[:, None]
    each = uncertainty.member_predictions(members, x)
    center, lower, upper = uncertainty.predict_interval(Ensemble(members), [], x, uncertainty.interval_info(0.1))
    np.testing.assert_allclose(center, each.mean(0), rtol=1e-5, atol=1e-6)
    assert (lower < center).all() and (upper > center).all()


def test_thread_policy_uses_one_thread_for_tiny_work_and_restores():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with thread_policy(1e4) as n:
            assert n == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with thread_policy(1e12):  # big work keeps the caller's count
            assert torch.get_num_threads() == 2
        with thread_policy(1e4, threads=2):  # an explicit count wins
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def problem(seed=3):
    """The homework shape: 100 clustered noisy points, test points everywhere (gaps included)."""
    from nndl.data.regression_table import target_function

    rng = np.random.default_rng(seed)
    x = clustered_x(100, seed)[:, 0].numpy()
    xt = rng.uniform(-5, 5, 100)
    return (x[:, None], (target_function(x) + rng.normal(0, 0.5, 100)).astype(np.float32),
            xt[:, None].astype(np.float32), target_function(xt).astype(np.float32))


def test_auto_beats_seed_in_the_gaps():
    x, y, xt, ft = problem()
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    seed = fit_arrays(config.resolve("regress", "seed", {"epochs": 300, "test_path": ""}), xs, ys)
    space = {"network": [["tanh", [32]], ["gelu", [32, 32]]], "weight_decay": [1e-3, 1e-2], "lr": [0.01],
             "epochs": [300], "standardize": [True]}
    cfg = config.resolve("regress", "auto", {"test_path": "", "ensemble_top": 2})
    auto = auto_fit(cfg, xs, ys, None, space=space)
    mse = {name: float(np.mean((uncertainty.member_predictions([f.final], xt)[0] - ft) ** 2))
           for name, f in (("seed", seed), ("auto", auto))}
    assert mse["auto"] < 0.7 * mse["seed"], mse
    assert len(auto.members) == 2 * 5 and auto.interval["spread_scale"] >= 1
    assert auto.extra["search_candidates"] == 4


def test_run_records_splitter_coverage_and_interval(tmp_path):
    m = nndl.regress(out=tmp_path / "r", overrides={"epochs": 30, "splitter": "blocked", "hidden": [16]},
                     figures=True, **QUIET)
    saved = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert saved["splitter"] == "blocked" and 0 <= saved["test_coverage_90"] <= 1
    assert {"train_mse", "val_mse", "val_mse_std", "test_mse", "folds", "cv_seconds"} <= set(saved)
    payload = torch.load(tmp_path / "r" / "model.pt", weights_only=True)
    assert payload["interval"]["noise_var"] > 0 and payload["interval"]["spread_from"] == "folds"
    assert (tmp_path / "r" / "figures" / "fit.png").stat().st_size > 0
    assert m["test_mse"] == saved["test_mse"]


def test_tune_regress_without_a_space_uses_the_default(tmp_path):
    from nndl.search import tune

    summary = tune("regress", trials=2, out=tmp_path / "study", figures=False,
                   retrain=False, sampler="random", echo=lambda s: None)
    marker = json.loads((tmp_path / "study" / "tune.json").read_text())
    assert marker["space"].endswith("regress_default.toml") and summary["counts"]["COMPLETE"] == 2
    assert {"activation", "hidden", "weight_decay", "lr", "epochs"} == set(summary["best"]["params"])
    with pytest.raises(NndlError, match="--space"):
        tune("classify", trials=1, out=tmp_path / "c", echo=lambda s: None)


def test_typical_student_loop_row_learns():
    """The bench's baseline is a real loop that learns, not a strawman."""
    pytest.importorskip("sklearn")
    from nndl.tasks.regress.bench import regression_typical

    d, _ = load_data(config.resolve("regress", "seed"))
    x, y = torch.as_tensor(d.x), torch.as_tensor(d.y)
    row = regression_typical(x, y, epochs=300)
    assert row["seconds"] > 0 and row["threads"] >= 1
    assert row["val_mse"] < 0.5 * y.var().item()


def test_auto_run_predicts_with_an_interval_and_exports(tmp_path):
    """An auto ensemble mixes networks: predict and export rebuild each member with its own config."""
    from nndl.tools.export import export
    from nndl.tools.predict import load_run, predict, regression_predictions

    run = nndl.regress(preset="auto", out=tmp_path / "auto", figures=False, **QUIET)
    loaded = load_run(tmp_path / "auto")
    x = np.linspace(-5, 5, 41, dtype=np.float32)[:, None]
    pred = regression_predictions(loaded, x)
    assert (pred["lower"] <= pred["prediction"]).all() and (pred["prediction"] <= pred["upper"]).all()
    from nndl.data.regression_table import target_function

    assert np.mean((pred["prediction"] - target_function(x[:, 0])) ** 2) < 0.5
    (tmp_path / "in.csv").write_text("x\n" + "\n".join(f"{v:.2f}" for v in x[:, 0]) + "\n")
    predict(tmp_path / "auto", [tmp_path / "in.csv"], out=tmp_path / "out.csv")
    header = (tmp_path / "out.csv").read_text().splitlines()[0].split(",")
    assert {"prediction", "lower", "upper"} <= set(header)
    path = export(tmp_path / "auto", fmt="torchscript")
    scripted = torch.jit.load(str(path))
    np.testing.assert_allclose(scripted(torch.as_tensor(x)).reshape(-1).detach().numpy(), pred["prediction"],
                               rtol=1e-4, atol=1e-5)
    assert run["search"] == "auto" and 0.5 <= run["test_coverage_90"] <= 1
