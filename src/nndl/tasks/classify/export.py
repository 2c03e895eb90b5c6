"""What ``nndl export`` writes of a classification run (the contract is in :mod:`nndl.tools.export`)."""
from __future__ import annotations

import json

import torch
from torch import nn


def export_module(run) -> tuple[nn.Module, torch.Tensor, str, dict]:
    """The classifier on raw inputs (:class:`nndl.nn.inference.RawInputClassifier`), an example batch of two,
    the output's name and the classifier's metadata."""
    from nndl.nn.inference import RawInputClassifier

    shape = tuple(run.meta["input_shape"])
    module = RawInputClassifier(run.model, run.meta, run.cfg.tta_flip).eval()
    dims = ", ".join(map(str, shape))
    if len(shape) == 3:
        example = torch.rand(2, *shape) * 255
        what = f"float32 (N, {dims}) raw pixels 0..255"
    else:
        example = torch.randn(2, *shape)
        what = f"float32 (N, {dims}) columns {', '.join(run.meta['feature_names'])}"
    meta = dict(class_names=json.dumps(run.class_names), input_shape=json.dumps(list(shape)),
                dataset=run.meta["dataset"], input=what, output="logits (N, classes); softmax gives probabilities")
    if run.meta.get("feature_names"):
        meta["feature_names"] = json.dumps(run.meta["feature_names"])
    return module, example, "logits", meta
