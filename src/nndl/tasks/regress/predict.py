"""Predictions of a regression run: CSV rows of inputs in, predictions (and intervals) out.

The inputs are read by the training CSV's column names (:func:`read_inputs`); the outputs are the
final model's prediction, the fold models' mean and spread when saved, and the 90% interval of runs
that saved one. :mod:`nndl.tools.predict` reaches this module through
:class:`~nndl.tasks.regress.task.RegressionTask`.
"""
from __future__ import annotations

import json as _json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from nndl.base.errors import NndlError
from nndl.data.regression_table import read_table
from nndl.tasks.predict_base import MAX_INPUT_VALUES, LoadedRun, bad, built_checked, csv_text, is_int, names


@dataclass
class LoadedRegressor(LoadedRun):
    """A regressor rebuilt from a run's ``model.pt`` (``model``: for ``final="ensemble"`` the mean of the fold models).

    Attributes
    ----------
    fold_models : list of nn.Module
        The cross-validation fold models (empty when not saved).
    in_features : int
    x_names, y_name : list of str, str
        The column names of the training CSV.
    interval : dict
        What :mod:`nndl.nn.intervals` needs for the 90% interval (empty: the run saved none).
    """

    fold_models: list[nn.Module] = field(default_factory=list)
    in_features: int = 0
    x_names: list[str] = field(default_factory=list)
    y_name: str = ""
    interval: dict = field(default_factory=dict)


def check_model_meta(path: Path, payload: dict) -> None:
    n = payload.get("in_features")
    if n is not None and not (is_int(n) and 1 <= n <= MAX_INPUT_VALUES):
        raise bad(path, "in_features", n, f"expected a whole number in 1..{MAX_INPUT_VALUES:,}")
    if payload.get("x_names") is not None:
        names(path, payload, "x_names", length=n)
    if payload.get("y_name") is not None and not isinstance(payload["y_name"], str):
        raise bad(path, "y_name", payload["y_name"], "expected a name (str)")
    members = payload.get("member_configs") or []
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise bad(path, "member_configs", members, "expected a list of config dicts")
    interval = payload.get("interval") or {}
    numbers = {k: interval.get(k) for k in ("noise_var", "spread_scale", "level")} if isinstance(interval, dict) else {}
    if not isinstance(interval, dict) or (interval and not (
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                for v in numbers.values()) and 0 < numbers["level"] < 1
            and interval.get("spread_from", "members") in ("members", "folds"))):
        raise bad(path, "interval", interval, "expected noise_var, spread_scale >= 0, level in (0, 1) and "
                   "spread_from members or folds")
    if interval.get("method", "model") != "model":
        _check_cv_plus(path, interval, len(payload.get("state_dicts") or []), len(payload.get("fold_state_dicts") or []))


def _check_cv_plus(path: Path, interval: dict, members: int, folds: int) -> None:
    """A CV+ interval dict: residuals >= 0, each row's fold and each interval model's fold in range."""
    from nndl.nn.conformal import min_rows

    r, rows, models = (interval.get(k) for k in ("residuals", "row_fold", "model_fold"))
    n_models = folds if interval.get("spread_from") == "folds" and folds else members
    ok = (interval.get("method") == "cv_plus" and all(isinstance(v, list) for v in (r, rows, models))
          and len(r) == len(rows) >= min_rows(interval["level"]) and len(models) == n_models
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in r)
          and all(is_int(k) for k in rows + models))
    if ok:
        kinds = set(models)
        ok = kinds == set(range(len(kinds))) and set(rows) <= kinds
    if not ok:
        raise bad(path, "interval", {k: interval.get(k) for k in ("method", "level", "spread_from")},
                   "expected method cv_plus with residuals >= 0 and row_fold (one per calibration row, enough "
                   "for the level) and model_fold (one per interval model) naming folds 0..K-1")


def _regressor(cfg, in_features: int, state: dict, path: Path) -> nn.Module:
    from nndl.nn.models import Standardized, build_regressor

    stats = ("x_mean", "x_std", "y_mean", "y_std")
    if cfg.standardize and not all(k in state for k in stats):
        raise NndlError(f"{path}: standardize=true but the checkpoint has no input/target statistics")

    def build() -> nn.Module:
        net = build_regressor(cfg, in_features)
        # the statistics are buffers in the state dict: built with their shapes, then loaded
        return Standardized(net, *(state[k] for k in stats)) if cfg.standardize else net

    return built_checked(build, state, path)


def rebuild(payload: dict, path: Path, cfg, saved_config: Callable[[dict], Any]) -> LoadedRegressor:
    """The regressor of a checked ``model.pt`` payload: the final model (an auto ensemble's members each with
    its own config fields, ``saved_config`` of its fields), the fold models and the column names."""
    from nndl.base import config as config_mod
    from nndl.nn.models import Ensemble

    states = payload["state_dicts"]
    first_weight = next((v for k, v in states[0].items() if k.endswith("layers.0.weight")), None)
    in_features = int(payload.get("in_features") or (first_weight.shape[1] if first_weight is not None
                                                     and first_weight.dim() == 2 else 1))
    mixed = payload.get("member_configs") or []
    member_cfgs = ([saved_config({**config_mod.to_dict(cfg), **m}) if m else cfg for m in mixed]
                   if len(mixed) == len(states) else [cfg] * len(states))
    members = [_regressor(c, in_features, sd, path) for c, sd in zip(member_cfgs, states)]
    model = members[0] if len(members) == 1 else Ensemble(members).eval()
    folds = [_regressor(cfg, in_features, sd, path) for sd in payload.get("fold_state_dicts") or []]
    x_names = list(payload.get("x_names") or [f"x{i}" for i in range(in_features)])
    if len(x_names) != in_features:
        raise bad(path, "x_names", x_names, f"expected {in_features} names, one per input")
    return LoadedRegressor(payload["task"], cfg, model, path=str(path), fold_models=folds, in_features=in_features,
                           x_names=x_names, y_name=str(payload.get("y_name") or "y"),
                           interval=dict(payload.get("interval") or {}))


def predict_files(run: LoadedRegressor, files: Sequence[str | Path], top: int, json: bool,
                  table: bool) -> tuple[list[dict], str]:
    """One row per input row of ``files`` and their text, JSON or CSV (``top`` and ``table`` do not apply:
    the output is a table anyway; see :func:`nndl.tools.predict.predict`)."""
    columns, results = _regress_files(run, files)
    return results, _json.dumps(results, indent=2) if json else csv_text(columns, results).rstrip("\n")


def _generated_names(names: Sequence[str]) -> bool:
    """True when the training CSV had no header (its columns were named ``col0, col1, ...`` by nndl)."""
    return all(re.fullmatch(r"col\d+", n) for n in names)


def read_inputs(path: str | Path, x_names: list[str], y_name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Read regression inputs from a CSV, optionally with the target column too (float32, as the model
    computes; see :func:`_read_columns` for the rules)."""
    x, y = _read_columns(path, x_names, y_name)
    return x.astype(np.float32), (y.astype(np.float32) if y is not None else None)


def _read_columns(path: str | Path, x_names: list[str], y_name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Regression inputs (and the target, when present) from a CSV, as the float64 values written there.

    A first row without numbers is a header (as in training; a mixed one is refused).

    - Training CSV with a header: a file with a header is read **by name** (the
      target column is optional; other columns are ignored), and a missing input
      column is an error naming it. A file without a header is read by position
      only when the model has one input (nothing can be swapped); with several
      inputs it must name them, since a silent column swap gives wrong numbers.
    - Training CSV without a header (columns ``col0, col1, ...``): by position,
      ``len(x_names)`` columns are inputs only, one more is inputs then the target
      (the training layout).

    Returns
    -------
    x : float64 (N, D)
    y : float64 (N,) or None

    Raises
    ------
    NndlError
        The file names the wrong columns, has no header where one is needed, or
        has a column count that fits neither layout.
    """
    path = Path(path)
    values, header, has_header = read_table(path)
    d = len(x_names)
    by_position = _generated_names(x_names + [y_name]) or (not has_header and d == 1)
    if has_header and not by_position:
        missing = [n for n in x_names if n not in header]
        if missing:
            raise NndlError(f"{path}: no column '{missing[0]}'; the model was trained on the input columns "
                            f"{', '.join(x_names)} (found {', '.join(header)}); rename the header to match")
        x_idx = [header.index(n) for n in x_names]
        y_idx = header.index(y_name) if y_name in header else None
    elif not by_position:
        raise NndlError(f"{path}: no header row; the model has {d} inputs ({', '.join(x_names)}), read by name so "
                        "that columns cannot be swapped silently; add the header row")
    elif len(header) in (d, d + 1):
        x_idx, y_idx = list(range(d)), (d if len(header) == d + 1 else None)
    else:
        raise NndlError(f"{path}: {len(header)} columns; expected the input columns {', '.join(x_names)} ({d} by "
                        f"position, optionally followed by {y_name})")
    y = values[:, y_idx] if y_idx is not None else None
    return values[:, x_idx], y


def regression_predictions(run: LoadedRegressor, x: np.ndarray) -> dict[str, np.ndarray]:
    """``prediction`` of the final model, ``fold_mean``/``fold_std`` of the fold models when saved, and
    ``lower``/``upper``, the 90% interval (ensemble spread plus noise), for runs that saved one."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    with torch.no_grad():
        out = {"prediction": run.model(xt).reshape(-1).numpy()}
        if run.fold_models:
            folds = torch.stack([m(xt).reshape(-1) for m in run.fold_models]).numpy()
            out["fold_mean"], out["fold_std"] = folds.mean(0), folds.std(0)
    if run.interval:
        from nndl.nn.intervals import predict_interval

        with torch.no_grad():
            _, out["lower"], out["upper"] = predict_interval(run.model, run.fold_models, xt, run.interval)
    return out


def _regress_files(run: LoadedRegressor, files: Sequence[str | Path]) -> tuple[list[str], list[dict]]:
    rows: list[dict] = []
    any_y = False
    parts = []
    for f in files:
        x, y = _read_columns(f, run.x_names, run.y_name)  # float64: the user's values are echoed exactly
        parts.append((str(f), x, y, regression_predictions(run, x)))
        any_y |= y is not None
    columns = (["file"] if len(files) > 1 else []) + run.x_names + ([run.y_name] if any_y else []) + ["prediction"]
    if run.fold_models:
        columns += ["fold_mean", "fold_std"]
    if run.interval:
        columns += ["lower", "upper"]
    for name, x, y, pred in parts:
        for i in range(len(x)):
            row: dict[str, Any] = {"file": name} if len(files) > 1 else {}
            row.update({n: float(x[i, j]) for j, n in enumerate(run.x_names)})
            if any_y:
                row[run.y_name] = float(y[i]) if y is not None else None
            row.update({k: _short(v[i]) for k, v in pred.items()})
            rows.append(row)
    return columns, rows


def _short(value: np.floating) -> float:
    """A float32 model output as the shortest decimal that reads back as the same float32
    (``0.1``, not ``0.10000000149011612``): digits past float32 precision are noise."""
    return float(str(np.float32(value)))
