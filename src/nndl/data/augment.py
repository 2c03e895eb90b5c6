"""Image batches: uint8 -> normalised model input, and augmentation as batched tensor ops.

Augmentation runs on the whole batch on its device (no per-image Python) on
[0, 1] images, so padding and erasing use the true background value 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Mean and std of Fashion-MNIST's 60,000 training pixels (scaled to [0, 1]).
MEAN, STD = 0.2860, 0.3530


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2. ``x``: (B, C, H, W)."""
    mask = torch.rand(len(x), device=x.device, generator=gen) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def random_translate(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels in x and y (zero padding, then a per-image crop)."""
    if max_shift <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # gather all crops at once


def random_erase(x: torch.Tensor, p: float, gen: torch.Generator, area=(0.02, 0.2), aspect=(0.3, 3.3)) -> torch.Tensor:
    """With probability ``p`` per image, set a random rectangle (2-20% of the area) to background."""
    if p <= 0:
        return x
    b, _, h, w = x.shape
    dev = x.device
    frac = torch.empty(b, device=dev).uniform_(*area, generator=gen)
    log_ratio = torch.empty(b, device=dev).uniform_(torch.log(torch.tensor(aspect[0])).item(),
                                                    torch.log(torch.tensor(aspect[1])).item(), generator=gen)
    ratio = log_ratio.exp()
    eh = (frac * h * w * ratio).sqrt().clamp(1, h)
    ew = (frac * h * w / ratio).sqrt().clamp(1, w)
    y0 = torch.rand(b, device=dev, generator=gen) * (h - eh)
    x0 = torch.rand(b, device=dev, generator=gen) * (w - ew)
    apply = torch.rand(b, device=dev, generator=gen) < p
    rows = torch.arange(h, device=dev)[None, :, None]
    cols = torch.arange(w, device=dev)[None, None, :]
    inside = ((rows >= y0[:, None, None]) & (rows < (y0 + eh)[:, None, None]) &
              (cols >= x0[:, None, None]) & (cols < (x0 + ew)[:, None, None]) & apply[:, None, None])
    return x.masked_fill(inside[:, None], 0.0)


def make_transform(flip: bool = False, translate: int = 0, erase: float = 0.0, channels_last: bool = False):
    """``transform(uint8 batch (B, 28, 28), generator or None) -> normalised float (B, 1, 28, 28)``.

    With a generator (training) the configured augmentations are applied;
    without one (evaluation) the batch is only normalised.
    """

    def transform(xb: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        x = xb.unsqueeze(1).float().div_(255)
        if gen is not None:
            if flip:
                x = random_flip(x, gen)
            if translate:
                x = random_translate(x, translate, gen)
            if erase:
                x = random_erase(x, erase, gen)
        x = (x - MEAN) / STD
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    return transform
