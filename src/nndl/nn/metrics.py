"""Classification metrics computed from labels and predicted probabilities (numpy only).

The network's test metrics must not need scikit-learn (an optional extra), so they are computed
here; tests check each one against scikit-learn's own function (``f1_score(average="macro")``,
``balanced_accuracy_score``, ``log_loss``) and the calibration error against a plain loop.
"""
from __future__ import annotations

import numpy as np

CALIBRATION_BINS = 15  # equal-width confidence bins of the expected calibration error and the reliability diagram


def _as_arrays(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs must have shape (N, classes) with N = {len(y)}, got {p.shape}")
    return y, p


def macro_f1(labels, predicted) -> float:
    """The unweighted mean of the per-class F1 scores, over the classes that occur in ``labels`` or
    ``predicted`` (scikit-learn's ``f1_score(average="macro")``; a class with no true and no
    predicted example would be 0/0 and is left out)."""
    y, pred = np.asarray(labels).ravel(), np.asarray(predicted).ravel()
    scores = []
    for c in np.union1d(y, pred):
        tp = np.sum((pred == c) & (y == c))
        denominator = np.sum(pred == c) + np.sum(y == c)  # 2 tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def balanced_accuracy(labels, predicted) -> float:
    """The mean recall over the classes present in ``labels`` (scikit-learn's ``balanced_accuracy_score``)."""
    y, pred = np.asarray(labels).ravel(), np.asarray(predicted).ravel()
    recalls = [np.mean(pred[y == c] == c) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else float("nan")


def log_loss(labels, probs) -> float:
    """Mean negative log-probability of the true class, probabilities clipped to [eps, 1 - eps] and
    renormalised as scikit-learn's ``log_loss`` does (eps of float64), so a confident mistake is a
    large finite number rather than infinity."""
    y, p = _as_arrays(labels, probs)
    eps = np.finfo(np.float64).eps
    p = np.clip(p, eps, 1 - eps)
    p = p / p.sum(1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y]))) if len(y) else float("nan")


def calibration_bins(labels, probs, bins: int = CALIBRATION_BINS) -> dict[str, np.ndarray]:
    """Confidence (the top probability) against accuracy in ``bins`` equal-width bins of (0, 1].

    Returns
    -------
    dict
        ``edges`` (bins + 1,), and per bin ``count``, ``confidence`` (mean top probability) and
        ``accuracy`` (share of correct top predictions); NaN for an empty bin.
    """
    y, p = _as_arrays(labels, probs)
    confidence, correct = p.max(1), (p.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin i holds confidences in (edges[i], edges[i + 1]]; a confidence of 0 cannot occur (it is >= 1/classes)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, confidence, minlength=bins) / count
        accuracy = np.bincount(which, correct, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": accuracy}


def expected_calibration_error(labels, probs, bins: int = CALIBRATION_BINS) -> float:
    """Expected calibration error: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over ``bins``
    (default 15) equal-width bins of the top-class confidence, each bin ``(lo, hi]``.

    0 means that among predictions made with confidence ~c, a share ~c is right.
    """
    b = calibration_bins(labels, probs, bins)
    filled = b["count"] > 0
    if not filled.any():
        return float("nan")
    gaps = np.abs(b["accuracy"][filled] - b["confidence"][filled])
    return float(np.sum(b["count"][filled] * gaps) / b["count"].sum())


def classification_metrics(labels, probs, prefix: str = "test_") -> dict[str, float]:
    """``{prefix}macro_f1``, ``balanced_accuracy``, ``log_loss`` and ``ece`` of ``probs`` (N, classes)."""
    y, p = _as_arrays(labels, probs)
    predicted = p.argmax(1)
    return {f"{prefix}macro_f1": macro_f1(y, predicted), f"{prefix}balanced_accuracy": balanced_accuracy(y, predicted),
            f"{prefix}log_loss": log_loss(y, p), f"{prefix}ece": expected_calibration_error(y, p)}
