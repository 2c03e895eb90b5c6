"""Temperature scaling: one number T that makes a classifier's probabilities honest.

``softmax(logits / T)`` keeps every prediction (the arg max does not move) and changes only the
confidence: T < 1 sharpens under-confident probabilities, T > 1 softens over-confident ones.
T is fitted on the validation split (never the test set) by minimising its log loss, within
:data:`BOUNDS`, and then folded into the network's last linear layer (its weight and bias divided
by T), so that ``model.pt``, ``nndl predict`` and ``nndl export`` use the calibrated logits with no
extra step; the run records T in ``model.pt`` (``temperature``) and ``metrics.json``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

BOUNDS = (0.25, 4.0)  # beyond these a temperature hides a training problem rather than fixing calibration


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = BOUNDS) -> float:
    """The T in ``bounds`` minimising the mean cross-entropy of ``logits / T`` (golden-section search on log T).

    The loss is convex in 1/T, so the search finds its minimum (or the nearer bound).
    """
    z, y = logits.detach().double().cpu(), labels.detach().long().cpu()

    def loss(log_t: float) -> float:
        return float(nn.functional.cross_entropy(z / math.exp(log_t), y))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(60):  # the bracket shrinks by 0.618 a step: 60 steps reach ~1e-12 in log T
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    best = min((loss(lo), lo), (loss(hi), hi), (fa, a), (fb, b))[1]
    return float(math.exp(best))


def last_linear(model: nn.Module) -> nn.Linear:
    """The network's output layer: its last ``nn.Linear`` (every nndl classifier ends in one)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no linear output layer to fold a temperature into")
    return layers[-1]


@torch.no_grad()
def fold_temperature(model: nn.Module, temperature: float) -> None:
    """Divide the output layer's weight and bias by ``temperature``: the logits become ``logits / T``.

    Exact for networks whose logits are their last linear layer's output times a constant (all
    of nndl's classifiers, the fast net's fixed logit scale included).
    """
    head = last_linear(model)
    head.weight.div_(temperature)
    if head.bias is not None:
        head.bias.div_(temperature)
