"""The regression task end to end: data -> CV (shuffled, blocked or per cluster) -> final model or
ensemble (optionally chosen by the built-in ``auto`` search) and a reference model beside it -> test
scores and interval coverage -> run folder."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nndl.base import config as config_mod
from nndl.nn import conformal, intervals as uncertainty
from nndl.tasks.regress import NAME, reference
from nndl.training.crossval import FoldResult, cross_validate, out_of_fold
from nndl.training.threads import step_work, thread_policy
from nndl.data.regression_table import RegressionData, read_csv, read_table
from nndl.base.errors import NndlError, function_argument
from nndl.figures import common, regression as regfig
from nndl.nn.models import Ensemble, Standardized, build_regressor
from nndl.tasks.base import Setup, Task, run_task
from nndl.runfolder.files import save_model, write_history_csv
from nndl.training.trainer import evaluate, pick_device
from nndl.training.trainer import train as fit


def _input_columns(cfg) -> list[str] | None:
    """Input columns: ``x_cols``, or with a group column every column but the target and the groups."""
    if cfg.x_cols or not cfg.group_col:
        return cfg.x_cols or None
    _, header, has_header = read_table(cfg.train_path)
    if not has_header or cfg.group_col not in header:
        raise NndlError(f"{cfg.train_path}: no column named '{cfg.group_col}' for group_col; columns are "
                        f"{', '.join(header)} (a group column needs a header row)")
    y_name = cfg.y_col or header[-1]
    return [h for h in header if h not in (cfg.group_col, y_name)]


def load_data(cfg) -> tuple[RegressionData, RegressionData | None]:
    """Read and check the training (and optional test) CSV named in ``cfg``."""
    train_data = read_csv(cfg.train_path, _input_columns(cfg), cfg.y_col)
    check_blocked(cfg, train_data.x.shape[1])
    if len(train_data.y) < cfg.folds:
        raise NndlError(f"{cfg.train_path}: {len(train_data.y)} rows is fewer than folds = {cfg.folds}; "
                        "use fewer folds (--set folds=N) or more data")
    test_data = None
    if cfg.test_path:
        named = train_data.has_header  # read the test file's columns by the training file's names
        test_data = read_csv(cfg.test_path, train_data.x_names if named else None, train_data.y_name if named else "")
        if test_data.x.shape[1] != train_data.x.shape[1]:
            raise NndlError(f"{cfg.test_path}: has {test_data.x.shape[1]} input columns but the training file "
                            f"{cfg.train_path} has {train_data.x.shape[1]}; give matching files")
    return train_data, test_data


def load_groups(cfg) -> np.ndarray | None:
    """The column the splitter reads per row: group labels (``group_col``, for ``splitter=cluster``) or
    the column ``splitter=blocked`` sorts along (``block_col``); None without either."""
    key = "group_col" if cfg.group_col else "block_col"
    name = getattr(cfg, key)
    if not name:
        return None
    values, header, _ = read_table(cfg.train_path)
    if name not in header:
        raise NndlError(f"{cfg.train_path}: no column named '{name}' for {key}; columns are {', '.join(header)}")
    return values[:, header.index(name)]


def check_blocked(cfg, inputs: int) -> None:
    """Blocked folds along one column: refuse, in one line, a blocked split of several inputs that does not
    say which column to sort along (sorting by whichever column comes first would validate on an
    arbitrary slice of the data, the trap of issue 21)."""
    if cfg.splitter == "blocked" and inputs > 1 and not cfg.block_col:
        raise NndlError(f"splitter = blocked: {cfg.train_path} has {inputs} input columns; name the one to block "
                        "along (--set block_col=COL, e.g. a time or position column) or use --set splitter=kfold")


def fit_to_data(cfg, user_keys: set[str], preset: str | None, echo: Callable[[str], None]):
    """:func:`fit_to_inputs` for the training file ``cfg`` names (its input columns read from the header)."""
    if not cfg.train_path:
        return cfg
    _, header, _ = read_table(cfg.train_path)
    names = _input_columns(cfg) or [h for h in header if h != (cfg.y_col or header[-1])]
    return fit_to_inputs(cfg, len(names), user_keys, preset, echo)


# The default recipe for a table of several input columns (``preset`` not given): the reference
# notebook's net (sigmoid 128-256, lr 0.02, 600 epochs, almost no L2) was made for 100 points of one x
# and overfits a 10-column table (diabetes: test R^2 -0.18 against ridge's 0.37). Chosen with
# bench/datasets.py-style runs on diabetes and Friedman #1/#2 (3 seeds; docs/benchmarks.md): a smooth
# net with real L2, early stopping on each fold's held-out rows, and the fold models' average.
TABLE_RECIPE: dict[str, Any] = {"activation": "gelu", "hidden": [64, 64], "lr": 0.003, "weight_decay": 1e-2,
                                "epochs": 600, "patience": 50, "final": "ensemble"}
# search=auto on several columns stops each candidate's fold models early as well (same patience):
# on diabetes and Friedman #1/#2 as good or better than without, and 2-4x faster.
TABLE_SEARCH_PATIENCE = 50


def fit_to_inputs(cfg, inputs: int, user_keys: set[str], preset: str | None, echo: Callable[[str], None]):
    """``cfg`` adapted to a table of several input columns, each change said in one line.

    Without a preset (``preset=None``) the net is :data:`TABLE_RECIPE` instead of the reference
    notebook's; a built-in preset's blocked split (``auto``'s, made for gaps along one x) becomes a
    shuffled K-fold, whose candidates stop early (:data:`TABLE_SEARCH_PATIENCE`); and inputs and
    target are standardised -- several columns on different scales otherwise share one learning rate
    and one weight decay. Keys the user set (``user_keys``) are never changed. One input column (the
    seed notebook's case) is left as it is.
    """
    if inputs < 2:
        return cfg
    changes: dict[str, Any] = {}
    if preset is None:
        recipe = {key: value for key, value in TABLE_RECIPE.items() if key not in user_keys}
        if recipe:
            changes.update(recipe)
            echo(f"default recipe for {inputs} input columns: gelu 64-64, weight decay 1e-2, early stopping "
                 "(patience 50) on each fold, the fold models' average (--preset seed keeps the notebook's net)")
    if cfg.splitter == "blocked" and not cfg.block_col and "splitter" not in user_keys:
        changes["splitter"] = "kfold"
        echo(f"splitter=blocked of preset {preset} switched to kfold: {inputs} input columns and no block_col "
             "to sort along (--set block_col=COL blocks along one)")
    if cfg.search == "auto" and not cfg.patience and "patience" not in user_keys:
        changes["patience"] = TABLE_SEARCH_PATIENCE
        echo(f"search=auto on {inputs} input columns: each fold model stops early (patience "
             f"{TABLE_SEARCH_PATIENCE}; --set patience=0 trains every epoch)")
    if not cfg.standardize and "standardize" not in user_keys:
        changes["standardize"] = True
        echo(f"standardize on: {inputs} input columns (--set standardize=false keeps raw scales)")
    return replace(cfg, **changes) if changes else cfg


def make_model_factory(cfg, x: torch.Tensor, y: torch.Tensor) -> Callable[[int], torch.nn.Module]:
    """``factory(i)`` builds model number ``i`` with seed ``cfg.seed + i`` (fold i, or the refit for i = folds)."""
    stats = (x.mean(0), x.std(0).clamp(min=1e-6), y.mean(), y.std().clamp(min=1e-6))

    def factory(i: int) -> torch.nn.Module:
        torch.manual_seed(cfg.seed + i)
        net = build_regressor(cfg, x.shape[1])
        model = Standardized(net, *stats) if cfg.standardize else net
        return model.to(x.device)

    return factory


@dataclass
class Fit:
    """What a fitting strategy hands to :func:`regress` for metrics, files and figures."""

    folds: list[FoldResult]  # the CV whose scores are val_mse (of cfg.splitter)
    final: torch.nn.Module
    members: list[torch.nn.Module]  # saved as state_dicts (the final model, or the ensemble's members)
    member_configs: list[dict]  # per member: the config fields that differ from cfg (auto search)
    spread_models: list[torch.nn.Module]  # whose disagreement widens the interval
    interval: dict
    cv_seconds: float = 0.0
    refit: Any = None
    extra: dict = field(default_factory=dict)
    val_folds: list[FoldResult] | None = None  # the folds val_mse averages (default: all of ``folds``)
    # interval=cv_plus: per config, the folds whose fold models (in spread_models' order) and
    # held-out residuals make the CV+ interval (default: [folds])
    cv_plus_folds: list[list[FoldResult]] | None = None


def _oof_noise(folds: list[FoldResult], x: torch.Tensor, y: torch.Tensor) -> float:
    pred = out_of_fold(folds, x)
    seen = torch.isfinite(pred)
    return uncertainty.noise_variance(y[seen].cpu().numpy(), pred[seen].cpu().numpy())


def plain_fit(cfg, x: torch.Tensor, y: torch.Tensor, groups, progress: bool, callbacks=None) -> Fit:
    """CV with ``cfg.splitter``, then a refit on all data or the mean of the fold models."""
    factory = make_model_factory(cfg, x, y)
    t0 = time.perf_counter()
    folds = cross_validate(factory, x, y, cfg, batched=cfg.batched, progress=progress, groups=groups,
                           callbacks=callbacks)
    cv_seconds = time.perf_counter() - t0
    noise = _oof_noise(folds, x, y)
    fold_models = [f.model for f in folds]
    if cfg.final == "refit":
        final = factory(cfg.folds)
        refit_cfg = cfg
        if cfg.patience > 0:  # no validation data for the refit: train as long as the folds found best
            best = int(round(np.mean([f.result.best_epoch for f in folds])))
            refit_cfg = config_mod.resolve("regress", None, {**config_mod.to_dict(cfg), "epochs": max(1, best),
                                                             "patience": 0})
        refit = fit(final, x, y, refit_cfg, task="regression", progress=progress, desc="refit on all data",
                    callbacks=callbacks, fold="refit")
        return Fit(folds, final, [final], [{}], fold_models, uncertainty.interval_info(noise, spread_from="folds"),
                   cv_seconds, refit)
    return Fit(folds, Ensemble(fold_models), fold_models, [{} for _ in folds], fold_models,
               uncertainty.interval_info(noise), cv_seconds)


# The built-in search of ``--preset auto``: smooth function classes (activation x width/depth, on
# standardised inputs and targets) crossed with L2 strength and learning rate; one stack per network.
# Chosen with bench/regression_suite.py (generated gap problems), never on one problem's test set.
AUTO_SPACE: dict[str, list] = {
    "network": [["tanh", [32]], ["tanh", [64, 64]], ["gelu", [32, 32]], ["gelu", [64, 64]],
                ["sigmoid", [64]], ["sigmoid", [64, 64]]],
    "weight_decay": [1e-4, 1e-3, 1e-2],
    "lr": [0.003, 0.01],
    "epochs": [600],
    "standardize": [True],
}


def auto_candidates(space: dict[str, list] | None = None) -> list[dict]:
    """Every combination of :data:`AUTO_SPACE` (or ``space``) as config overrides, grouped by network."""
    space = space or AUTO_SPACE
    out = []
    for act, hidden in space["network"]:
        for std in space["standardize"]:
            for epochs in space["epochs"]:
                for wd in space["weight_decay"]:
                    for lr in space["lr"]:
                        out.append({"activation": act, "hidden": list(hidden), "standardize": std, "epochs": epochs,
                                    "weight_decay": wd, "lr": lr})
    return out


def _cv_many(base: dict, overrides: list[dict], x, y, groups) -> list[list[FoldResult]]:
    """Cross-validate configs ``base + overrides[i]``: one stack per network (and epochs)."""
    from nndl.training.crossval import cross_validate_many
    from nndl.training.stacked import stack_key

    # from_dict, not resolve: these are derived configs (validated), not settings a user gave
    cfgs = [config_mod.from_dict("regress", {**base, **o}) for o in overrides]
    groups_by_key: dict[Any, list[int]] = {}
    for i, c in enumerate(cfgs):
        groups_by_key.setdefault((stack_key(c), c.epochs), []).append(i)
    out: list[Any] = [None] * len(cfgs)
    for members in groups_by_key.values():
        sub = [cfgs[i] for i in members]
        for i, folds in zip(members, cross_validate_many([make_model_factory(c, x, y) for c in sub], x, y, sub,
                                                         groups=groups)):
            out[i] = folds
    return out


def _score(folds: list[FoldResult], interior: bool) -> float:
    """Mean held-out MSE over folds; ``interior`` drops the folds holding the smallest or largest x
    (a blocked split's end blocks test extrapolation, which a test set inside the range never asks)."""
    if any(f.result.diverged for f in folds):
        return float("inf")
    vals = [f.val_mse for f in folds]
    if interior and len(folds) > 2:
        vals = vals[1:-1]
    return float(np.mean(vals)) if all(np.isfinite(vals)) else float("inf")


def auto_fit(cfg, x: torch.Tensor, y: torch.Tensor, groups, progress: bool = False,
             space: dict[str, list] | None = None, interior: bool = True,
             echo: Callable[[str], None] = lambda s: None) -> Fit:
    """``search=auto``: score every candidate by ``cfg.splitter`` CV, keep the best ``cfg.ensemble_top``,
    and make the final ensemble from their fold models on a shuffled K-fold split.

    The gap-aware split picks the function class; the shuffled split's fold models (each
    config x each fold) form the ensemble, whose out-of-fold residuals estimate the noise;
    the selection split's held-out blocks calibrate how much to widen the members' spread.
    """
    base = {**config_mod.to_dict(cfg), "search": "none", "final": "ensemble", "test_path": ""}
    candidates = auto_candidates(space)
    t0 = time.perf_counter()
    selection = _cv_many(base, candidates, x, y, groups)
    interior = interior and cfg.splitter == "blocked" and cfg.folds > 2
    scores = [_score(f, interior) for f in selection]
    order = [i for i in np.argsort(scores, kind="stable") if np.isfinite(scores[i])][: max(1, cfg.ensemble_top)]
    if not order:
        raise NndlError("search=auto: every candidate diverged; check the data (e.g. huge target values)")
    best = [candidates[i] for i in order]
    echo(f"auto: {len(candidates)} candidates scored by {cfg.splitter} CV in {time.perf_counter() - t0:.1f} s; "
         f"best {best[0]} ({scores[order[0]]:.4g})")
    # The members: each chosen config's fold models on a shuffled split (every row is held out once).
    final_folds = _cv_many({**base, "splitter": "kfold"}, best, x, y, None)
    oof = torch.stack([out_of_fold(f, x) for f in final_folds]).mean(0)
    noise = uncertainty.noise_variance(y.cpu().numpy(), oof.cpu().numpy())
    # Calibrate the spread on the same held-out folds that scored the configs.
    scored = (lambda folds: folds[1:-1]) if interior else (lambda folds: folds)
    held_out = torch.stack([out_of_fold(scored(selection[i]), x) for i in order]).cpu().numpy()
    seen = np.isfinite(held_out).all(0)
    scale = uncertainty.fit_spread_scale(y.cpu().numpy()[seen], held_out[:, seen], noise)
    members = [f.model for folds in final_folds for f in folds]
    member_configs = [o for o, folds in zip(best, final_folds) for _ in folds]
    ens_oof = held_out.mean(0)[seen]
    extra = {"search": "auto", "search_candidates": len(candidates), "search_seconds": time.perf_counter() - t0,
             "ensemble_members": len(members), "ensemble_configs": best,
             "ensemble_val_mse": float(np.mean((ens_oof - y.cpu().numpy()[seen]) ** 2)),
             "candidate_scores": [{**c, "val_mse": scores[i]} for i, c in enumerate(candidates)]}
    if interior:
        extra["val_folds_scored"] = "interior blocks (the two end blocks extrapolate; they are in per_fold)"
    # CV+ takes the shuffled split's fold models (the saved members) and their held-out residuals:
    # every row is held out once, by folds that do not look at x, as the guarantee asks.
    return Fit(selection[order[0]], Ensemble(members), members, member_configs, members,
               uncertainty.interval_info(noise, scale), extra["search_seconds"], extra=extra,
               val_folds=scored(selection[order[0]]), cv_plus_folds=final_folds)


def fit_arrays(cfg, x: torch.Tensor, y: torch.Tensor, groups=None, progress: bool = False, callbacks=None,
               echo: Callable[[str], None] = lambda s: None) -> Fit:
    """Fit ``cfg`` (plain CV + final model, or the auto search) to tensors, under the thread policy."""
    stacked = cfg.folds * (len(AUTO_SPACE["lr"]) * len(AUTO_SPACE["weight_decay"]) if cfg.search == "auto" else 1)
    with thread_policy(step_work(stacked, len(x), build_regressor(cfg, x.shape[1])), cfg.threads):
        if cfg.search == "auto":
            result = auto_fit(cfg, x, y, groups, progress, echo=echo)
        else:
            result = plain_fit(cfg, x, y, groups, progress, callbacks=callbacks)
        if cfg.interval == "cv_plus":
            result.interval = cv_plus_interval(result, x, y)
    return result


def cv_plus_interval(result: Fit, x: torch.Tensor, y: torch.Tensor) -> dict:
    """The CV+ interval dict of a fit (:mod:`nndl.nn.conformal`): each row's absolute residual under the
    mean of the fold-k models that held it out (one per config of ``cv_plus_folds``; a plain run's
    ``folds``, of ``cfg.splitter``, whose models are its fold models / ensemble members)."""
    per_config = result.cv_plus_folds or [result.folds]
    held_out = [[f.val_idx.cpu().numpy() for f in folds] for folds in per_config]
    if any(len(h) != len(held_out[0]) or any(not np.array_equal(a, b) for a, b in zip(h, held_out[0]))
           for h in held_out):  # the configs' folds are one split (same seed): a different one is a bug
        raise RuntimeError("interval=cv_plus: the ensemble's configs were cross-validated on different splits")
    oof = torch.stack([out_of_fold(folds, x) for folds in per_config]).mean(0).cpu().numpy()
    row_fold = np.full(len(x), -1)
    for k, idx in enumerate(held_out[0]):
        row_fold[idx] = k
    seen = (row_fold >= 0) & np.isfinite(oof)  # a row no fold held out cannot calibrate
    level = result.interval.get("level", 0.9)
    if seen.sum() < conformal.min_rows(level):
        raise NndlError(f"interval=cv_plus: {int(seen.sum())} held-out rows; a {level:.0%} CV+ interval needs at "
                        f"least {conformal.min_rows(level)}; give more rows or use interval=model")
    residuals = np.abs(y.cpu().numpy().astype(np.float64) - oof)[seen]
    model_fold = [k for folds in per_config for k in range(len(folds))]
    return uncertainty.cv_plus_info(result.interval, residuals, row_fold[seen], model_fold)


def _metrics(cfg, result: Fit, x, y, test_data, device) -> dict[str, Any]:
    """The flat numbers of metrics.json; the test set is touched once, here."""
    folds, final = result.folds, result.final
    train_mses = np.array([f.train_mse for f in folds])
    val_mses = np.array([f.val_mse for f in result.val_folds or folds])
    metrics: dict[str, Any] = {
        "train_mse": float(train_mses.mean()), "train_mse_std": float(train_mses.std()),
        "val_mse": float(val_mses.mean()), "val_mse_std": float(val_mses.std()),
        "test_mse": float("nan"), "folds": len(folds), "splitter": cfg.splitter,
        "final": "ensemble" if cfg.search == "auto" else cfg.final,
        "final_train_mse": evaluate(final, x, y, "regression")["loss"], "epochs": cfg.epochs,
        "noise_var": result.interval["noise_var"], "interval_spread_scale": result.interval["spread_scale"],
        "test_coverage_90": float("nan"), "interval_method": uncertainty.method_of(result.interval),
        "per_fold": [{"fold": i + 1, "train_mse": f.train_mse, "val_mse": f.val_mse, "best_epoch": f.result.best_epoch,
                      "stop_reason": f.result.stop_reason} for i, f in enumerate(folds)],
        **{k: v for k, v in result.extra.items() if k != "search_seconds"},
    }
    if test_data is not None:
        xt = torch.as_tensor(test_data.x, device=device)
        yt = torch.as_tensor(test_data.y, device=device)
        metrics["test_mse"] = evaluate(final, xt, yt, "regression")["loss"]
        center, lower, upper = uncertainty.predict_interval(final, result.spread_models, test_data.x,
                                                            {**result.interval, "spread_from": "folds"})
        metrics["test_coverage_90"] = uncertainty.coverage(test_data.y, lower, upper)
        metrics["test_width_90"] = float(np.mean(upper - lower))
        metrics.update(reference.regression_scores(test_data.y, center))
    else:
        metrics["test_width_90"] = float("nan")
        metrics.update(reference.regression_scores([], []))
    diverged = [f"fold {i + 1}: {f.result.stop_reason}" for i, f in enumerate(folds) if f.result.diverged]
    if result.refit is not None and result.refit.diverged:
        diverged.append(f"refit: {result.refit.stop_reason}")
    metrics["diverged"] = bool(diverged)
    if diverged:
        metrics["stop_reasons"] = diverged
    return metrics


def fit_reference(cfg, train: RegressionData, result: Fit, echo: Callable[[str], None]) -> reference.Reference | None:
    """The run's reference model (``cfg.reference``) on the training rows, scored on the CV folds
    ``val_mse`` averages; None when it is off, or skipped (one line) because scikit-learn is missing."""
    if not reference.check_available(cfg.reference):
        if cfg.reference == "auto":
            echo(f"reference model skipped: {reference.MISSING_EXTRA}")
        return None
    kind = reference.choose(cfg.reference, *train.x.shape)
    val_sets = [f.val_idx.cpu().numpy() for f in result.val_folds or result.folds]
    return reference.fit_for_run(kind, train.x, train.y, val_sets, cfg.seed)


def _reference_curve(ref: reference.Reference | None, train_data, xt_np) -> dict | None:
    """The reference's mean and 90% band where fit.png draws the net's (the 1-D grid, or the rows)."""
    if ref is None:
        return None
    x_eval = regfig.curve_inputs(train_data.x, xt_np)
    mean, lower, upper = ref.model.interval(x_eval)
    return {"label": f"reference {ref.model.label}", "x": x_eval, "mean": mean, "lower": lower, "upper": upper}


def _figures(cfg, fig_dir: Path, result: Fit, train_data, test_data, x, ref=None) -> None:
    folds, final, refit = result.folds, result.final, result.refit
    refit_history = refit.history if refit is not None else []
    common.loss_curves([f.result.history for f in folds] + ([refit_history] if refit_history else []),
                       fig_dir / "losses.png", "Training and validation MSE per fold",
                       labels=[f"fold {i + 1}" for i in range(len(folds))] + (["refit"] if refit_history else []))
    xt_np = test_data.x if test_data else np.empty((0, x.shape[1]), np.float32)
    yt_np = test_data.y if test_data else np.empty(0, np.float32)
    regfig.fitted_function(final, result.spread_models, train_data.x, train_data.y, xt_np, yt_np,
                           fig_dir / "fit.png", train_data.x_names[0], train_data.y_name,
                           interval={**result.interval, "spread_from": "folds"},
                           members_label="fold models" if refit is not None else "ensemble members",
                           reference=_reference_curve(ref, train_data, xt_np))
    profile_model = final if refit is not None else folds[0].model
    common.weight_histograms(profile_model, fig_dir / "weight_histograms.png")
    if x.shape[1] == 1:
        probes = np.asarray(cfg.probe_inputs, dtype=np.float32)[:, None]
        labels = None
    else:  # several inputs: profile the first few test (or training) rows, labelled by their values
        source = xt_np if len(xt_np) else train_data.x
        probes, labels = source[:5], None
    regfig.activation_profiles(profile_model, probes, fig_dir / "activations.png",
                               "(refit model)" if refit is not None else "(fold 1 model)", labels,
                               x_names=train_data.x_names)


def _fold_scores(fold: FoldResult) -> dict:
    """One fold as :meth:`RegressionTask.cross_validate` reports it."""
    return {"score": fold.val_mse, "diverged": fold.result.diverged, "timed_out": fold.result.timed_out,
            "stop_reason": fold.result.stop_reason}


@dataclass
class RegressionInputs:
    """The checked inputs of a regression run: training and test tables and the group column."""

    train: RegressionData
    test: RegressionData | None
    groups: np.ndarray | None


@dataclass
class Trained:
    """What :meth:`RegressionTask.fit` hands to the later steps."""

    fit: Fit
    x: torch.Tensor
    y: torch.Tensor
    device: torch.device
    started: float
    reference: reference.Reference | None = None


class RegressionTask(Task):
    """Regression of a target column on numeric columns: CV (any splitter), a final model or
    ensemble, the test MSE and the 90% interval's coverage."""

    name = NAME
    cli_flags = {"train_path": "--train", "test_path": "--test", "x_cols": "--x-cols", "y_col": "--y-col"}
    val_metric, direction, test_metric = "val_mse", "minimize", "test_mse"
    default_preset = "seed"
    default_space = "regress_default.toml"
    stacked_trials = lone_trials_stacked = True
    key_metrics = ("test_mse", "val_mse", "val_mse_std", "train_mse", "folds", "epochs", "cv_seconds",
                   "test_coverage_90", "splitter")
    main_figures = ("fit", "losses")
    label = "regression"
    cards = ({"title": "Test MSE", "value": "test_mse"},
             {"title": "CV validation MSE", "value": "val_mse", "note": "± {val_mse_std} over folds"},
             {"title": "CV training MSE", "value": "train_mse"},
             {"title": "Folds", "value": "folds", "note": "final model: {final}"},
             {"title": "Epochs", "value": "epochs"},
             {"title": "Training time", "value": "train_seconds", "format": "seconds"})
    captions = {"losses.png": "Training (solid) and validation (dashed) MSE per epoch, for each fold (and the refit, "
                              "when the final model is one)."}
    lr_find_min_steps = 300  # small batches of a 1-D set: a short sweep's losses are mostly noise

    def search_folds(self, cfg) -> int:
        return cfg.folds

    def stack_key(self, cfg):
        # Equal epochs too: a stack computes every member until its longest one ends, and
        # on CPU the arithmetic of finished members would cost more than stacking saves.
        from nndl.training.stacked import stack_key

        return (stack_key(cfg), cfg.epochs) if cfg.batched else None

    def cross_validate_stacked(self, cfgs: list, data=None, folds: int | None = None) -> list[list[dict]]:
        """K-fold scores of configs that share a network: one stack for all when ``len(cfgs) > 1``
        (they share a ``stack_key``), otherwise the config's own ``batched`` choice. A search never
        reads the test set."""
        from dataclasses import replace

        from nndl.training.crossval import cross_validate_many

        cfgs = [replace(c, test_path="", **({"folds": folds} if folds else {})) for c in cfgs]
        data = data or self.load(cfgs[0])
        device = pick_device(cfgs[0].device)
        setups = [self.setup(c, data, device) for c in cfgs]
        x, y = setups[0].x, setups[0].y
        if len(cfgs) > 1:
            done = cross_validate_many([s.make_model for s in setups], x, y, cfgs, groups=data.groups)
        else:
            done = [cross_validate(setups[0].make_model, x, y, cfgs[0], batched=cfgs[0].batched, progress=False,
                                   groups=data.groups)]
        return [[_fold_scores(f) for f in folds_of] for folds_of in done]

    def inputs(self, cfg) -> list[str]:
        return [cfg.train_path, cfg.test_path]

    def load(self, cfg, data=None) -> RegressionInputs:
        reference.check_available(cfg.reference)  # an explicit reference without scikit-learn: one line, now
        train_data, test_data = load_data(cfg)
        return RegressionInputs(train_data, test_data, load_groups(cfg))

    def setup(self, cfg, data: RegressionInputs | None, device) -> Setup:
        data = data or self.load(cfg)
        x = torch.as_tensor(data.train.x, device=device)
        y = torch.as_tensor(data.train.y, device=device)
        return Setup(make_model_factory(cfg, x, y), x, y, None, "regression")

    def cross_validate(self, cfg, data=None, folds: int | None = None, on_fold=None) -> list[dict]:
        from dataclasses import replace

        cfg = replace(cfg, folds=folds) if folds else cfg
        setup = self.setup(cfg, data, pick_device(cfg.device))
        done = cross_validate(setup.make_model, setup.x, setup.y, cfg, batched=cfg.batched, progress=False,
                              groups=data.groups if data is not None else None)
        return [_fold_scores(f) for f in done]

    def fit(self, cfg, data: RegressionInputs, ctx) -> Trained:
        device = pick_device(cfg.device)
        setup = self.setup(cfg, data, device)
        started = time.perf_counter()
        result = fit_arrays(cfg, setup.x, setup.y, data.groups, ctx.progress, callbacks=ctx.callbacks, echo=ctx.echo)
        return Trained(result, setup.x, setup.y, device, started, fit_reference(cfg, data.train, result, ctx.echo))

    def test(self, cfg, data: RegressionInputs, fitted: Trained) -> dict:
        result = fitted.fit
        with thread_policy(step_work(len(result.members), len(fitted.x), result.members[0]), cfg.threads):
            metrics = _metrics(cfg, result, fitted.x, fitted.y, data.test, fitted.device)
        metrics["cv_seconds"] = result.extra.get("search_seconds", result.cv_seconds)
        metrics["train_seconds"] = time.perf_counter() - fitted.started
        if fitted.reference is not None:
            test = data.test
            metrics.update(reference.run_metrics(fitted.reference, test.x if test else np.empty((0, fitted.x.shape[1])),
                                                 test.y if test else np.empty(0)))
        return metrics

    def save(self, cfg, data: RegressionInputs, fitted: Trained, run_dir: Path) -> None:
        result = fitted.fit
        folds, refit = result.folds, result.refit
        rows = [{"fold": i + 1, **r} for i, f in enumerate(folds) for r in f.result.history]
        rows += [{"fold": "refit", **r} for r in (refit.history if refit is not None else [])]
        write_history_csv(run_dir / "history.csv", rows)
        # An auto ensemble may mix networks: config holds the best member's, member_configs each member's.
        saved_cfg = {**config_mod.to_dict(cfg), **result.member_configs[0]}
        save_model(run_dir / "model.pt", "regress", saved_cfg, [m.state_dict() for m in result.members],
                   fold_state_dicts=[f.model.state_dict() for f in folds], in_features=fitted.x.shape[1],
                   x_names=data.train.x_names, y_name=data.train.y_name, interval=result.interval,
                   member_configs=result.member_configs)

    def figures(self, cfg, data: RegressionInputs, fitted: Trained, fig_dir: Path) -> None:
        _figures(cfg, fig_dir, fitted.fit, data.train, data.test, fitted.x, fitted.reference)

    def notes(self, metrics: dict, fitted) -> list[str]:
        return [line for line in (reference.summary_line(metrics), reference.advice_line(metrics)) if line]

    def warnings(self, metrics: dict, fitted) -> list[str]:
        return list(metrics.get("stop_reasons", []))

    def check_model_meta(self, path: Path, payload: dict) -> None:
        from nndl.tasks.regress import predict

        predict.check_model_meta(path, payload)

    def rebuild(self, payload: dict, path: Path, cfg, saved_config):
        from nndl.tasks.regress import predict

        return predict.rebuild(payload, path, cfg, saved_config)

    def predict_files(self, run, files: list, top: int, json: bool, table: bool) -> tuple[list[dict], str]:
        from nndl.tasks.regress import predict

        return predict.predict_files(run, files, top, json, table)

    def export_module(self, run):
        from nndl.tasks.regress import export

        return export.export_module(run)


TASK = RegressionTask()


def regress(train: str | None = None, test: str | None = None, preset: str | None = None,
            overrides: dict[str, Any] | list[str] | None = None, seed: int | None = None, out: str | None = None,
            overwrite: bool = False, progress: bool = True, figures: bool = True, tensorboard: bool = False,
            echo: Callable[[str], None] = print, callbacks=None, verbose: bool | None = None):
    """Fit a regression MLP (or, with ``preset="auto"``, an ensemble chosen by a built-in search) with
    K-fold cross-validation, and evaluate it once on the test set, with a 90% prediction interval.

    The split is ``splitter``: shuffled K-fold, blocked K-fold (contiguous ranges of x, which
    validate across gaps) or leave-one-cluster-out; ``metrics.json`` names it (``splitter``)
    beside the validation score, and reports ``test_coverage_90``, the fraction of test points
    inside the interval, with ``test_width_90`` its mean width and ``test_r2``/``test_mae``/``test_rmse``.
    A reference model (``reference``: a Gaussian process for one input column, ridge for several;
    :mod:`nndl.tasks.regress.reference`) is fitted on the same training rows and scored the same way
    (``reference_*`` keys, a printed line). The steps are :func:`nndl.tasks.base.run_task`'s, with :data:`TASK`.

    Parameters
    ----------
    train, test : str, optional
        CSV files (default: the bundled ``data/regression`` set). ``test=""`` skips the test set.
    preset : str, optional
        A preset name (``seed``, ``smooth``, ``auto``) or a ``.toml``/``.json`` preset file.
        Default: the reference notebook's net (``seed``) for one input column, :data:`TABLE_RECIPE`
        for several.
    overrides : dict or list of "key=value", optional
        Config overrides (see :class:`nndl.tasks.regress.config.RegressConfig`).
    seed : int, optional
    out : str, optional
        Run folder (default: a new timestamped folder under ``runs/``).
    overwrite : bool
        Allow ``out`` to be an existing non-empty folder (its contents are replaced).
    progress, figures : bool
        Show progress bars; write the PNG figures.

    tensorboard : bool
        Log scalars and weight histograms to ``RUN/tensorboard`` live, epoch by epoch, and the
        figures at the end (the :class:`nndl.training.callbacks.TensorBoard` callback).
    callbacks : list, optional
        :mod:`nndl.training.callbacks` called on every fold model's (and the refit's) training events.
    verbose : bool, optional
        Print the resolved config and the metrics table (default: yes, except inside Jupyter).

    Returns
    -------
    nndl.runfolder.objects.Run
        The run (``.metrics``, ``.config``, ``.history``, ``.figure(name)``); as a mapping it is
        the metrics of ``metrics.json`` (``train_mse``, ``val_mse``, ``val_mse_std``,
        ``test_mse``, ``folds``, ...) plus ``run_dir``.
    """
    from nndl.training.callbacks import for_run
    from nndl.runfolder.objects import is_verbose

    cbs = for_run(callbacks, tensorboard)  # checks the tensorboard import before any work
    overrides = config_mod.parse_overrides(overrides)
    if train is not None:
        overrides["train_path"] = train
    if test is not None:
        overrides["test_path"] = test
    cfg = config_mod.resolve("regress", preset, overrides, seed)
    cfg = fit_to_data(cfg, config_mod.user_keys(preset, overrides), preset, function_argument(echo, "echo") or (lambda line: None))
    return run_task(TASK, cfg, out=out, overwrite=overwrite, progress=progress, figures=figures, echo=echo,
                    callbacks=cbs, verbose=is_verbose(verbose))
