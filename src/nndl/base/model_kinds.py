"""The classifier registry: each network's name, what it is, and which config settings it reads.

This is the one list of models. It drives the ``model`` choices of
:class:`~nndl.tasks.classify.config.ClassifyConfig` (and so ``nndl classify --model``), the "does not
apply" check (``--set hidden=64`` for a CNN is refused because only the models listing
``hidden`` read it), the listing of ``nndl presets``, whether a model can read table rows,
and -- through :func:`nndl.nn.models.build_classifier` -- which builder makes it. It imports no
torch, so the CLI's ``--help`` stays instant.

Adding a model: its class and a builder decorated ``@builds("name")`` in :mod:`nndl.nn.models`,
plus one :class:`ModelKind` line here (``tests/test_config.py`` checks the two agree).
"""
from __future__ import annotations

from dataclasses import dataclass

MLP_SETTINGS = ("hidden", "dropout", "activation", "init")
CONV_SETTINGS = ("channels",)


@dataclass(frozen=True)
class ModelKind:
    """One classifier of the registry.

    Attributes
    ----------
    name : str
        The value of the ``model`` setting.
    summary : str
        One line for listings.
    reads : tuple of str
        The model-specific settings its builder reads (of :data:`MODEL_SETTINGS`); the
        others are refused when given for it.
    images_only : bool
        Needs ``(C, H, W)`` images (convolutions); False for a model that also reads table rows.
    scaled_logits : bool
        Its design shrinks the logits (a fixed logit scale): with few optimiser steps its
        probabilities come out under-confident, so ``calibrate=auto`` fits a temperature for it.
    """

    name: str
    summary: str
    reads: tuple[str, ...]
    images_only: bool = True
    scaled_logits: bool = False


MODEL_KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (
    ModelKind("mlp", "multi-layer perceptron on the flattened input (images or table rows)", MLP_SETTINGS,
              images_only=False),
    ModelKind("cnn", "the reference CNN: conv5x5, pool, two conv3x3, pool, linear", CONV_SETTINGS),
    ModelKind("resnet", "a small ResNet: stem and three residual stages, global pooling", CONV_SETTINGS),
    ModelKind("fast", "speed-run net (after airbench): conv-pool-BN-GELU blocks, max-pooled head", CONV_SETTINGS,
              scaled_logits=True),
    ModelKind("lite", "cheap CNN for CPUs: stride-2 stem, nothing at full resolution", CONV_SETTINGS),
    ModelKind("lite4", "lite with a second conv at 1/4 resolution (4 convs): accuracy per CPU second", CONV_SETTINGS),
)}

# Every model-specific setting: a setting of this set that the chosen model does not read does not apply.
MODEL_SETTINGS: tuple[str, ...] = tuple(dict.fromkeys(k for kind in MODEL_KINDS.values() for k in kind.reads))


def why_unused(model: str, key: str) -> str:
    """Why ``key`` does not apply to ``model``: which models read it."""
    users = [k.name for k in MODEL_KINDS.values() if key in k.reads]
    if key in CONV_SETTINGS and model == "mlp":
        return "the MLP has no convolutions"
    names = "the MLP" if users == ["mlp"] else "models " + ", ".join(users)
    return f"only {names} use{'s' if len(users) == 1 else ''} it (model {model})"


def describe_models() -> str:
    """The registry as lines for ``nndl presets``."""
    lines = ["classify models (--model NAME or --set model=NAME):"]
    for kind in MODEL_KINDS.values():
        lines.append(f"  {kind.name:<8} {kind.summary}; reads {', '.join(kind.reads)}")
    return "\n".join(lines)
