"""The one inference path: raw input -> normalised batch -> logits, with flip TTA, autocast and batching.

``training.evaluate`` (validation and test), ``nndl predict``, the exported wrapper module,
the figures and the benchmark all go through :class:`Predictor` and the input transforms
here, so a prediction is computed the same way wherever it is made.

An *input transform* is ``transform(raw_batch, generator_or_None) -> model input``: raw
``uint8`` images (``(B, C, H, W)``, or ``(B, H, W)`` for one channel) are scaled to [0, 1],
augmented when a generator is given (training), and normalised per channel; table rows
(``float32 (B, F)``) are standardised per feature.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Sequence

import torch
from torch import nn

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _per_channel(values: Sequence[float], ndim: int, like: torch.Tensor):
    # One channel: a Python float, so the arithmetic is exactly that of the original Fashion-MNIST
    # transform (same seeds -> same numbers); several: a broadcastable tensor on the batch's device.
    if len(values) == 1:
        return float(values[0])
    shape = (1, len(values)) + (1,) * (ndim - 2)
    return torch.tensor(list(values), dtype=torch.float32, device=like.device).view(shape)


def image_transform(mean: Sequence[float], std: Sequence[float], augment: Augment | None = None,
                    channels_last: bool = False):
    """``transform(uint8 (B, C, H, W) or (B, H, W), generator or None) -> normalised float (B, C, H, W)``.

    ``augment(x, generator)`` acts on [0, 1] images (so padding and erasing use the true
    background 0) and runs only when a generator is given.
    """

    def transform(xb: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        x = (xb.unsqueeze(1) if xb.dim() == 3 else xb).float().div_(255)
        if gen is not None and augment is not None:
            x = augment(x, gen)
        x = (x - _per_channel(mean, 4, x)) / _per_channel(std, 4, x)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    return transform


def table_transform(mean: Sequence[float], std: Sequence[float]):
    """``transform(float (B, F), generator or None) -> standardised (B, F)`` (no augmentation)."""
    mean_t = torch.tensor(list(mean), dtype=torch.float32)
    std_t = torch.tensor(list(std), dtype=torch.float32)

    def transform(xb: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        return (xb.float() - mean_t.to(xb.device)) / std_t.to(xb.device)

    return transform


def input_transform(meta: dict, augment: Augment | None = None, channels_last: bool = False):
    """The transform for a dataset's metadata (``input_shape``, ``mean``, ``std``; see
    :meth:`nndl.data.Dataset.meta`)."""
    if len(meta["input_shape"]) == 3:
        return image_transform(meta["mean"], meta["std"], augment, channels_last)
    return table_transform(meta["mean"], meta["std"])


@contextmanager
def eval_mode(model: nn.Module):
    """Every submodule in eval mode; each one's own flag restored on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.train(flag)


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class Predictor:
    """Batched, eval-mode inference of a classifier (or regressor) on raw inputs.

    Parameters
    ----------
    model : nn.Module
        Outputs logits (or values).
    to_input : callable, optional
        ``to_input(raw_batch) -> model input`` (e.g. ``lambda xb: transform(xb, None)``);
        identity when None.
    tta_flip : bool
        Average the logits of each image and its mirror image (4-D image inputs only:
        table rows have nothing to mirror).
    amp : bool
        bf16 autocast (meant for CUDA; the caller decides).
    batch_size : int
    fixed_batch : bool
        Pad every batch with zero rows to ``batch_size`` (their outputs are dropped), so that every
        row goes through kernels of one shape. A row's output then does not depend on how many
        rows share its batch: the matmul and convolution kernels that BLAS/oneDNN pick, and their
        summation order, change with the batch size (a row predicted alone differs from the same
        row in a batch of 20 by up to ~1e-5 relative). Off by default: training, testing and
        ``nndl predict`` compute as they always have; the scikit-learn estimators turn it on.
    """

    def __init__(self, model: nn.Module, to_input: Callable[[torch.Tensor], torch.Tensor] | None = None, *,
                 tta_flip: bool = False, amp: bool = False, batch_size: int = 2048, fixed_batch: bool = False):
        self.model = model
        self.to_input = to_input
        self.tta_flip = bool(tta_flip)
        self.amp = bool(amp)
        self.batch_size = int(batch_size)
        self.fixed_batch = bool(fixed_batch)

    def forward_batch(self, xb: torch.Tensor) -> torch.Tensor:
        """Float32 outputs of one raw batch (model already in the wanted mode; no grad handling)."""
        device = _device(self.model)
        xb = xb.to(device)
        xb = self.to_input(xb) if self.to_input is not None else xb
        with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=self.amp):
            out = self.model(xb).float()
            if self.tta_flip and xb.dim() == 4:  # mirror left-right
                out = 0.5 * (out + self.model(xb.flip(-1)).float())
        return out

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs for all of ``x`` (on the model's device), in batches, in eval mode."""
        outs = []
        with eval_mode(self.model):
            for start in range(0, len(x), self.batch_size):
                xb = x[start:start + self.batch_size]
                n = len(xb)
                if self.fixed_batch and n < self.batch_size:
                    xb = torch.cat([xb, xb.new_zeros((self.batch_size - n, *xb.shape[1:]))])
                outs.append(self.forward_batch(xb)[:n])
        return torch.cat(outs) if outs else torch.empty(0)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(N, classes)`` on the CPU."""
        return self.logits(x).softmax(1).cpu()


class RawInputClassifier(nn.Module):
    """A classifier with its input path built in, for export: raw input -> logits.

    Images: float ``(N, C, H, W)`` in 0..255 (normalised inside); tables: float ``(N, F)``
    in the training CSV's units (standardised inside). With ``tta_flip`` (images) the logits
    of each image and its mirror are averaged, exactly as :class:`Predictor` does.
    """

    def __init__(self, model: nn.Module, meta: dict, tta_flip: bool = False):
        super().__init__()
        self.model = model
        self.is_image = len(meta["input_shape"]) == 3
        self.tta_flip = bool(tta_flip) and self.is_image
        self.divisor = 255.0 if self.is_image else 1.0
        shape = (1, -1, 1, 1) if self.is_image else (1, -1)
        self.register_buffer("mean", torch.tensor(meta["mean"], dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(meta["std"], dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x / self.divisor - self.mean) / self.std
        logits = self.model(x)
        if self.tta_flip:
            logits = 0.5 * (logits + self.model(x.flip(-1)))
        return logits
