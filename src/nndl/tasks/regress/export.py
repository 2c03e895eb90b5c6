"""What ``nndl export`` writes of a regression run (the contract is in :mod:`nndl.tools.export`)."""
from __future__ import annotations

import json

import torch
from torch import nn


def export_module(run) -> tuple[nn.Module, torch.Tensor, str, dict]:
    """The regressor (with its interval outputs when the run saved one: :class:`nndl.nn.intervals.IntervalModel`),
    an example batch of two, the output's name and the regressor's metadata."""
    example = torch.randn(2, run.in_features)
    meta = dict(x_names=json.dumps(run.x_names), y_name=run.y_name,
                input=f"float32 (N, {run.in_features}) columns {', '.join(run.x_names)}",
                output=f"prediction of {run.y_name}, float32 (N, 1)")
    if not run.interval:
        meta["interval"] = "none: this run saved no prediction interval"
        return run.model.eval(), example, "prediction", meta
    from nndl.nn.intervals import IntervalModel

    level = f"{100 * run.interval.get('level', 0.9):g}%"
    meta["interval"] = (f"{level} prediction interval: ONNX outputs lower and upper (N, 1); TorchScript "
                        "model.interval(x) -> (lower, upper)")
    return IntervalModel(run.model, run.fold_models, run.interval).eval(), example, "prediction", meta
