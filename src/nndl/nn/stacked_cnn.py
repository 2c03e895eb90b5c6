"""N convolutional classifiers of one shape as one network with grouped convolutions.

The N models' channels sit side by side: model ``k``'s images enter as channels ``k*C..(k+1)*C``
of one batch, each convolution runs with ``groups=N`` (model ``k``'s filters see only its own
channels), one batch norm covers the N x C channels (its per-channel batch statistics are
model ``k``'s own), and the head is a batched matmul. Every parameter and BN buffer is stored
with a leading model dimension (``(N, ...)``) and reshaped, without a copy, at each use, so an
optimiser and a best-weights snapshot can address one model as ``tensor[k]``.

Measured against ``torch.func``'s vmap over stacked modules (the other way to ensemble, which
lowers the batched convolutions to grouped ones itself, plus reshapes): see
bench/cnn_stack_speed.py and docs/benchmarks.md.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

# The layers a stackable network's ``features`` may hold besides Conv2d and BatchNorm2d: they act
# on each channel alone, so they apply to the side-by-side channels of N models unchanged.
_CHANNELWISE = (nn.ReLU, nn.GELU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d,
                nn.Identity)


def _layers(module: nn.Module) -> list[nn.Module]:
    """``features`` as a flat list of layers (nested Sequentials opened)."""
    out = []
    for m in module.children():
        out.extend(_layers(m) if isinstance(m, nn.Sequential) else [m])
    return out


def groupable(model: nn.Module) -> str | None:
    """Why ``model`` cannot join a :class:`GroupedCNN`, or None.

    Stackable: a ``features`` Sequential of Conv2d (no dilation tricks needed: any stride/padding,
    groups=1), BatchNorm2d (affine, with running stats) and channel-wise layers, then a Linear ``head``
    on the flattened maps, optionally times a fixed ``logit_scale`` (nndl's cnn, lite, lite4 and fast)."""
    features, head = getattr(model, "features", None), getattr(model, "head", None)
    if not isinstance(features, nn.Sequential) or not isinstance(head, nn.Linear):
        return f"{type(model).__name__} is not a features Sequential and a linear head"
    for layer in _layers(features):
        if isinstance(layer, nn.Conv2d):
            if layer.groups != 1 or layer.padding_mode != "zeros":
                return f"a {layer} is not a plain convolution"
        elif isinstance(layer, nn.BatchNorm2d):
            if not (layer.affine and layer.track_running_stats):
                return f"a {layer} without affine weights or running statistics"
        elif not isinstance(layer, _CHANNELWISE):
            return f"its {type(layer).__name__} layer does not stack (a residual block, dropout, ...)"
    return None


@torch.no_grad()
def models_per_pass(model: nn.Module, image_shape: tuple[int, ...], batch: int, limit_mb: float = 31.0) -> int:
    """How many models a CPU pass of :class:`GroupedCNN` should hold: as many as keep the largest float32
    activation of a ``batch`` under ``limit_mb`` (at least one).

    glibc serves allocations above 32 MB with fresh mmaps, so larger activations fault in new pages
    at every step; below it the allocator reuses its memory (bench/cnn_stack_speed.py: 9 models in
    one pass 1.35x the loop's time per step, 2 or 3 per pass 0.97-0.99x)."""
    h, largest = torch.zeros(1, *image_shape), 0
    for layer in _layers(model.features):
        if isinstance(layer, nn.BatchNorm2d):  # shape-preserving; run in training mode it would move the stats
            continue
        h = copy.deepcopy(layer).float().cpu()(h) if isinstance(layer, nn.Conv2d) else layer(h)
        largest = max(largest, h.numel())
    return max(1, int(limit_mb * 2 ** 20 // (4 * largest * batch)))


def _stacked(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors]).contiguous()


class GroupedCNN(nn.Module):
    """N classifiers like ``models[0]`` (see :func:`groupable`) as one grouped-convolution network.

    Parameters
    ----------
    models : list of nn.Module
        Of one shape, each with its own weights and BN statistics (copied in).
    channels_last : bool
        Run the convolutions on channels-last batches (oneDNN's and cuDNN's native layout).
    chunk : int
        Models per grouped pass (0: all at once). On CPU a few models per pass keep each activation
        tensor under glibc's 32 MB mmap limit (:func:`models_per_pass`).
    """

    def __init__(self, models: list[nn.Module], channels_last: bool = False, chunk: int = 0):
        super().__init__()
        self.n, self.channels_last, self.chunk = len(models), channels_last, chunk
        stacks = [_layers(m.features) for m in models]
        self.plan: list[tuple[str, object]] = []  # ("conv", index) / ("bn", index) / ("op", layer)
        self.conv_w, self.conv_b = nn.ParameterList(), nn.ParameterList()
        self.bn_w, self.bn_b = nn.ParameterList(), nn.ParameterList()
        self.conv_meta, self.bn_meta = [], []
        for j, layer in enumerate(stacks[0]):
            same = [s[j] for s in stacks]
            if isinstance(layer, nn.Conv2d):
                self.conv_w.append(nn.Parameter(_stacked([c.weight for c in same])))
                if layer.bias is not None:
                    self.conv_b.append(nn.Parameter(_stacked([c.bias for c in same])))
                self.conv_meta.append((layer.stride, layer.padding, layer.dilation,
                                       len(self.conv_b) - 1 if layer.bias is not None else None))
                self.plan.append(("conv", len(self.conv_w) - 1))
            elif isinstance(layer, nn.BatchNorm2d):
                i = len(self.bn_w)
                self.bn_w.append(nn.Parameter(_stacked([b.weight for b in same])))
                self.bn_b.append(nn.Parameter(_stacked([b.bias for b in same])))
                self.register_buffer(f"bn{i}_mean", _stacked([b.running_mean for b in same]))
                self.register_buffer(f"bn{i}_var", _stacked([b.running_var for b in same]))
                self.register_buffer(f"bn{i}_count", _stacked([b.num_batches_tracked for b in same]))
                self.bn_meta.append((layer.momentum, layer.eps))
                self.plan.append(("bn", i))
            else:
                self.plan.append(("op", layer))
        head = [m.head for m in models]
        self.head_w = nn.Parameter(_stacked([h.weight for h in head]).transpose(1, 2).contiguous())  # (N, F, O)
        self.head_b = nn.Parameter(_stacked([h.bias for h in head])[:, None, :].contiguous()) \
            if head[0].bias is not None else None
        self.logit_scale = getattr(models[0], "logit_scale", None)

    def bn_buffers(self) -> list[torch.Tensor]:
        """Every BN running mean, variance and batch count, each ``(N, C)`` / ``(N,)``."""
        return [getattr(self, f"bn{i}_{kind}") for i in range(len(self.bn_w)) for kind in ("mean", "var", "count")]

    def forward(self, x: torch.Tensor, models: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(M, B, classes)`` of images ``x`` ``(M, B, C, H, W)``: one batch per model.

        ``models`` (M indices) runs only those models (their parameters gathered, their BN running
        statistics written back in training mode); None: all N, in order (slices of the stacked
        tensors are views: no copies). Either way ``chunk`` models per pass. In training mode batch norm uses each
        model's batch statistics and updates its running statistics, as ``nn.BatchNorm2d`` does.
        """
        step = self.chunk or self.n
        if models is not None:
            return torch.cat([self._run(x[a:a + step], models[a:a + step]) for a in range(0, len(models), step)])
        return torch.cat([self._run(x[a:a + step], slice(a, a + step)) for a in range(0, self.n, step)])

    def _run(self, x: torch.Tensor, models) -> torch.Tensor:
        m, b = x.shape[:2]
        h = x.transpose(0, 1).reshape(b, m * x.shape[2], *x.shape[3:])
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last)
        for kind, what in self.plan:
            if kind == "conv":
                w = self.conv_w[what][models]
                stride, padding, dilation, bias_at = self.conv_meta[what]
                bias = self.conv_b[bias_at][models].reshape(-1) if bias_at is not None else None
                w = w.reshape(-1, *w.shape[2:])
                if self.channels_last:  # filters in the layout of the batches: no reorder per call in oneDNN
                    w = w.contiguous(memory_format=torch.channels_last)
                h = F.conv2d(h, w, bias, stride, padding, dilation, groups=m)
            elif kind == "bn":
                h = self._batch_norm(h, what, models)
            else:
                h = what(h)
        feats = h.reshape(b, m, -1).transpose(0, 1)  # (M, B, F): each model's flatten(1)
        w = self.head_w[models]
        out = torch.bmm(feats, w) if self.head_b is None else torch.baddbmm(self.head_b[models], feats, w)
        return out * self.logit_scale if self.logit_scale is not None else out

    def _batch_norm(self, h: torch.Tensor, i: int, models) -> torch.Tensor:
        momentum, eps = self.bn_meta[i]
        mean, var, count = (getattr(self, f"bn{i}_{k}") for k in ("mean", "var", "count"))
        w, bias = self.bn_w[i][models].reshape(-1), self.bn_b[i][models].reshape(-1)
        if isinstance(models, slice):  # views of the (N, C) buffers: batch_norm updates them in place
            out = F.batch_norm(h, mean[models].view(-1), var[models].view(-1), w, bias, self.training, momentum, eps)
            if self.training:
                count[models] += 1
            return out
        sub_mean, sub_var = mean[models], var[models]  # copies: written back below
        out = F.batch_norm(h, sub_mean.view(-1), sub_var.view(-1), w, bias, self.training, momentum, eps)
        if self.training:
            with torch.no_grad():
                mean[models], var[models] = sub_mean, sub_var
                count[models] += 1
        return out

    @torch.no_grad()
    def unstack(self, template: nn.Module) -> list[nn.Module]:
        """Each model's weights and BN statistics copied into a deep copy of ``template``."""
        out = []
        for k in range(self.n):
            model = copy.deepcopy(template)
            convs = [l for l in _layers(model.features) if isinstance(l, nn.Conv2d)]
            bns = [l for l in _layers(model.features) if isinstance(l, nn.BatchNorm2d)]
            for i, conv in enumerate(convs):
                conv.weight.copy_(self.conv_w[i][k])
                if self.conv_meta[i][3] is not None:
                    conv.bias.copy_(self.conv_b[self.conv_meta[i][3]][k])
            for i, bn in enumerate(bns):
                bn.weight.copy_(self.bn_w[i][k]), bn.bias.copy_(self.bn_b[i][k])
                bn.running_mean.copy_(getattr(self, f"bn{i}_mean")[k])
                bn.running_var.copy_(getattr(self, f"bn{i}_var")[k])
                bn.num_batches_tracked.copy_(getattr(self, f"bn{i}_count")[k])
            model.head.weight.copy_(self.head_w[k].T)
            if self.head_b is not None:
                model.head.bias.copy_(self.head_b[k, 0])
            out.append(model)
        return out
