"""The regression task end to end: data -> K-fold CV -> final model -> test MSE -> run folder."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import config as config_mod
from .crossval import cross_validate
from .data.regression import RegressionData, read_csv
from .errors import NndlError
from .figures import common, regression as regfig
from .models import Ensemble, Standardized, build_regressor
from .runs import environment, new_run_dir, save_model, write_history_csv, write_json
from .training import evaluate, pick_device
from .training import train as fit


def load_data(cfg) -> tuple[RegressionData, RegressionData | None]:
    """Read and check the training (and optional test) CSV named in ``cfg``."""
    train_data = read_csv(cfg.train_path, cfg.x_cols or None, cfg.y_col)
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


def make_model_factory(cfg, x: torch.Tensor, y: torch.Tensor) -> Callable[[int], torch.nn.Module]:
    """``factory(i)`` builds model number ``i`` with seed ``cfg.seed + i`` (fold i, or the refit for i = folds)."""
    stats = (x.mean(0), x.std(0).clamp(min=1e-6), y.mean(), y.std().clamp(min=1e-6))

    def factory(i: int) -> torch.nn.Module:
        torch.manual_seed(cfg.seed + i)
        net = build_regressor(cfg, x.shape[1])
        model = Standardized(net, *stats) if cfg.standardize else net
        return model.to(x.device)

    return factory


def regress(train: str | None = None, test: str | None = None, preset: str | None = "seed",
            overrides: dict[str, Any] | list[str] | None = None, seed: int | None = None, out: str | None = None,
            overwrite: bool = False, progress: bool = True, figures: bool = True, tensorboard: bool = False,
            echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Fit a regression MLP with shuffled K-fold cross-validation and evaluate it once on the test set.

    Parameters
    ----------
    train, test : str, optional
        CSV files (default: the bundled ``data/regression`` set). ``test=""`` skips the test set.
    preset : str, optional
        A preset name (``seed``, ``smooth``) or a ``.toml``/``.json`` preset file.
    overrides : dict or list of "key=value", optional
        Config overrides (see :class:`nndl.config.RegressConfig`).
    seed : int, optional
    out : str, optional
        Run folder (default: a new timestamped folder under ``runs/``).
    overwrite : bool
        Allow ``out`` to be an existing non-empty folder (its contents are replaced).
    progress, figures : bool
        Show progress bars; write the PNG figures.

    tensorboard : bool
        Also log scalars, weight histograms and figures to ``RUN/tensorboard``.

    Returns
    -------
    dict
        The metrics written to ``metrics.json`` (``train_mse``, ``val_mse``,
        ``val_mse_std``, ``test_mse``, ``folds``, ...) plus ``run_dir``.
    """
    overrides = config_mod.parse_overrides(overrides)
    if train is not None:
        overrides["train_path"] = train
    if test is not None:
        overrides["test_path"] = test
    cfg = config_mod.resolve("regress", preset, overrides, seed)
    train_data, test_data = load_data(cfg)  # all input checks happen before anything is written
    run_dir = new_run_dir(out, "regress", overwrite)
    echo(f"run folder: {run_dir}\nresolved config:\n{config_mod.format_config(cfg)}")
    write_json(run_dir / "config.json", config_mod.to_dict(cfg))

    device = pick_device(cfg.device)
    x = torch.as_tensor(train_data.x, device=device)
    y = torch.as_tensor(train_data.y, device=device)
    factory = make_model_factory(cfg, x, y)
    t0 = time.perf_counter()
    folds = cross_validate(factory, x, y, cfg, batched=cfg.batched, progress=progress)
    cv_seconds = time.perf_counter() - t0

    if cfg.final == "refit":
        final = factory(cfg.folds)
        refit_cfg = cfg
        if cfg.patience > 0:  # no validation data for the refit: train as long as the folds found best
            best = int(round(np.mean([f.result.best_epoch for f in folds])))
            refit_cfg = config_mod.resolve("regress", None, {**config_mod.to_dict(cfg), "epochs": max(1, best),
                                                             "patience": 0})
        refit = fit(final, x, y, refit_cfg, task="regression", progress=progress, desc="refit on all data")
        refit_history = refit.history
    else:
        final = Ensemble([f.model for f in folds])
        refit, refit_history = None, []
    total_seconds = time.perf_counter() - t0

    train_mses = np.array([f.train_mse for f in folds])
    val_mses = np.array([f.val_mse for f in folds])
    metrics: dict[str, Any] = {
        "train_mse": float(train_mses.mean()), "train_mse_std": float(train_mses.std()),
        "val_mse": float(val_mses.mean()), "val_mse_std": float(val_mses.std()),
        "test_mse": float("nan"), "folds": cfg.folds, "final": cfg.final,
        "final_train_mse": evaluate(final, x, y, "regression")["loss"],
        "epochs": cfg.epochs, "cv_seconds": cv_seconds, "train_seconds": total_seconds,
        "per_fold": [{"fold": i + 1, "train_mse": f.train_mse, "val_mse": f.val_mse, "best_epoch": f.result.best_epoch,
                      "stop_reason": f.result.stop_reason} for i, f in enumerate(folds)],
    }
    if test_data is not None:  # the test set is touched once, here
        xt = torch.as_tensor(test_data.x, device=device)
        yt = torch.as_tensor(test_data.y, device=device)
        metrics["test_mse"] = evaluate(final, xt, yt, "regression")["loss"]
    diverged = [f"fold {i + 1}: {f.result.stop_reason}" for i, f in enumerate(folds) if f.result.diverged]
    if refit is not None and refit.diverged:
        diverged.append(f"refit: {refit.stop_reason}")
    metrics["diverged"] = bool(diverged)
    if diverged:
        metrics["stop_reasons"] = diverged
        for line in diverged:
            echo(f"WARNING {line}")

    rows = [{"fold": i + 1, **r} for i, f in enumerate(folds) for r in f.result.history]
    rows += [{"fold": "refit", **r} for r in refit_history]
    write_history_csv(run_dir / "history.csv", rows)
    final_models = [final] if cfg.final == "refit" else [f.model for f in folds]
    save_model(run_dir / "model.pt", "regress", config_mod.to_dict(cfg), [m.state_dict() for m in final_models],
               fold_state_dicts=[f.model.state_dict() for f in folds], in_features=x.shape[1],
               x_names=train_data.x_names, y_name=train_data.y_name)
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "environment.json", environment())

    if figures:
        fig_dir = run_dir / "figures"
        common.loss_curves([f.result.history for f in folds] + ([refit_history] if refit_history else []),
                           fig_dir / "losses.png", "Training and validation MSE per fold",
                           labels=[f"fold {i + 1}" for i in range(len(folds))] + (["refit"] if refit_history else []))
        xt_np = test_data.x if test_data else np.empty((0, x.shape[1]), np.float32)
        yt_np = test_data.y if test_data else np.empty(0, np.float32)
        regfig.fitted_function(final, [f.model for f in folds], train_data.x, train_data.y, xt_np, yt_np,
                               fig_dir / "fit.png", train_data.x_names[0], train_data.y_name)
        profile_model = final if cfg.final == "refit" else folds[0].model
        common.weight_histograms(profile_model, fig_dir / "weight_histograms.png")
        if x.shape[1] == 1:
            probes = np.asarray(cfg.probe_inputs, dtype=np.float32)[:, None]
            labels = None
        else:  # several inputs: profile the first few test (or training) rows
            source = xt_np if len(xt_np) else train_data.x
            probes, labels = source[:5], [f"row {i + 1}" for i in range(min(5, len(source)))]
        regfig.activation_profiles(profile_model, probes, fig_dir / "activations.png",
                                   "(refit model)" if cfg.final == "refit" else "(fold 1 model)", labels)

    from .report import finish_run

    return finish_run(run_dir, metrics, tensorboard, echo)
