"""Plain ``nn.Module`` networks. Every model outputs raw logits / values (never log-softmax)."""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from nndl.data.fashion_mnist import CLASS_NAMES as _FASHION_CLASSES
from nndl.data.fashion_mnist import INPUT_SHAPE as _FASHION_SHAPE

# The image networks' defaults are the reference homework's data (Fashion-MNIST); a run passes
# its dataset's shape and class count (build_classifier), so nothing here depends on them.
_CLASSES = len(_FASHION_CLASSES)

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def init_linear(layer: nn.Linear, scheme: str, activation: str) -> None:
    """Initialise a linear layer's weight ("default" keeps PyTorch's); biases start at zero otherwise."""
    if scheme == "default":
        return
    if scheme == "xavier":
        gain = nn.init.calculate_gain(activation) if activation in ("sigmoid", "tanh", "relu") else 1.0
        nn.init.xavier_uniform_(layer.weight, gain=gain)
    elif scheme == "kaiming":
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu" if activation in ("relu", "gelu") else "linear")
    else:
        raise ValueError(f"unknown init '{scheme}'")
    nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """Fully connected net ``in -> hidden... -> out`` with one activation and optional dropout.

    Parameters
    ----------
    in_features, out_features : int
    hidden : list of int
        Hidden layer sizes (any depth, including none).
    activation : {"sigmoid", "tanh", "relu", "gelu"}
    dropout : float or list of float
        Dropout after each hidden layer (one value for all, or one per layer).
    init : {"default", "xavier", "kaiming"}
    """

    def __init__(self, in_features: int, hidden: list[int], out_features: int, activation: str = "relu",
                 dropout: float | list[float] = 0.0, init: str = "default"):
        super().__init__()
        sizes = [in_features, *hidden, out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer in self.layers:
            init_linear(layer, init, activation)
        self.act = ACTIVATIONS[activation]()
        rates = dropout if isinstance(dropout, (list, tuple)) else [dropout] * len(hidden)
        rates = list(rates) + [0.0] * (len(hidden) - len(rates))
        self.drops = nn.ModuleList(nn.Dropout(p) for p in rates[: len(hidden)])

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        x = x.flatten(1).float()
        hidden = []
        for layer, drop in zip(self.layers[:-1], self.drops):
            x = self.act(layer(x))
            hidden.append(x)
            x = drop(x)
        out = self.layers[-1](x)
        return (out, hidden) if return_hidden else out


class StackedMLP(nn.Module):
    """K independent MLPs of one shape evaluated as one batched model.

    Weights have a leading model dimension and the forward pass is a batched
    matmul, so one optimiser step updates all K models at the cost of one.
    Adam/SGD and L2/L1 penalties act element-wise, so training the stack on the
    *sum* of the per-model mean losses gives each model exactly the gradients it
    would get alone.
    """

    def __init__(self, models: list[MLP]):
        super().__init__()
        first = models[0]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.stack([m.layers[i].weight.detach().T for m in models]).contiguous())
            for i in range(len(first.layers)))
        self.biases = nn.ParameterList(
            nn.Parameter(torch.stack([m.layers[i].bias.detach() for m in models])[:, None, :].contiguous())
            for i in range(len(first.layers)))
        self.act = first.act
        self.drop_rates = [d.p for d in first.drops]

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        """``x``: (N, D) shared by all models, or (K, N, D). Returns (K, N, out)."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(len(self.weights[0]), -1, -1)
        hidden = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < len(self.weights) - 1:
                x = self.act(x)
                hidden.append(x)
                if self.drop_rates[i] > 0:  # p = 0 would still cost a kernel per layer and step
                    x = nn.functional.dropout(x, self.drop_rates[i], self.training)
        return (x, hidden) if return_hidden else x

    def unstack(self, template: MLP) -> list[MLP]:
        """Copy each model's weights back into an ordinary :class:`MLP` like ``template``."""
        out = []
        for k in range(len(self.weights[0])):
            m = copy.deepcopy(template)
            with torch.no_grad():
                for i, layer in enumerate(m.layers):
                    layer.weight.copy_(self.weights[i][k].T)
                    layer.bias.copy_(self.biases[i][k, 0])
            out.append(m)
        return out


def conv_bn(c_in: int, c_out: int, kernel: int = 3, padding: int | None = None) -> nn.Sequential:
    pad = kernel // 2 if padding is None else padding
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=pad, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class SmallCNN(nn.Module):
    """The reference CNN: conv5x5(16)+BN+ReLU, pool, conv3x3(32)+BN+ReLU, conv3x3(64)+BN+ReLU, pool, linear.

    For an H x W image the head sees ``c3 * ((H/2 - 4) // 2) * ((W/2 - 4) // 2)`` features.
    """

    def __init__(self, channels: list[int] = (16, 32, 64), num_classes: int = _CLASSES, in_channels: int = 1,
                 image_size: tuple[int, int] = _FASHION_SHAPE[1:]):
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(conv_bn(in_channels, c1, 5, padding=2), nn.MaxPool2d(2),  # H -> H/2
                                      conv_bn(c1, c2, 3, padding=0),  # -> H/2 - 2
                                      conv_bn(c2, c3, 3, padding=0), nn.MaxPool2d(2))  # -> H/2 - 4 -> (H/2 - 4)/2
        h, w = ((s // 2 - 4) // 2 for s in image_size)  # the unpadded convs need images of at least 12x12
        if h < 1 or w < 1:
            raise ValueError(f"the cnn model needs images of at least 12x12 pixels, got {tuple(image_size)}")
        self.head = nn.Linear(c3 * h * w, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """A small pre-pooling ResNet for small images: stem, three stages (full, 1/2, 1/4 resolution), global pooling."""

    def __init__(self, channels: list[int] = (32, 64, 128), num_classes: int = _CLASSES, in_channels: int = 1):
        super().__init__()
        c1, c2, c3 = channels
        self.features = nn.Sequential(conv_bn(in_channels, c1), ResidualBlock(c1, c1, 1), ResidualBlock(c1, c2, 2),
                                      ResidualBlock(c2, c3, 2), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(c3, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


class FastNet(nn.Module):
    """A speed-run style net (after airbench): conv-pool-BN-GELU blocks, max-pooled head, scaled logits.

    Pooling right after the first conv of each block keeps most FLOPs at low
    resolution, which is what makes it fast; the fixed logit scale stands in for
    a temperature so the net trains well with a large learning rate.
    """

    def __init__(self, channels: list[int] = (32, 64, 128), num_classes: int = _CLASSES, logit_scale: float = 1 / 9,
                 in_channels: int = 1):
        super().__init__()

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
                                 nn.BatchNorm2d(c_out), nn.GELU(),
                                 nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.GELU())

        c1, c2, c3 = channels
        self.features = nn.Sequential(nn.Conv2d(in_channels, c1 // 2, 3, padding=1, bias=False), nn.BatchNorm2d(c1 // 2), nn.GELU(),
                                      block(c1 // 2, c1), block(c1, c2), block(c2, c3),  # each block halves H, W
                                      nn.AdaptiveMaxPool2d(1))
        self.head = nn.Linear(c3, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x):
        return self.head(self.features(x).flatten(1)) * self.logit_scale


class LiteCNN(nn.Module):
    """A cheap CNN for time-to-accuracy on CPU: stride-2 3x3 stem, conv at 1/2, pool, conv at 1/4, pool, linear.

    conv3x3/2(c1)+BN+ReLU, conv3x3(c2)+BN+ReLU, pool, conv3x3(c3)+BN+ReLU, pool, linear. The
    stride-2 stem means no layer works at full resolution: at 16/32/64 channels it needs 1.8M
    multiply-adds per Fashion-MNIST image against the reference CNN's 2.8M, and on 2 CPU cores, where
    those convolutions bound the step, an epoch takes ~0.62 of the reference's; the padded
    convs keep the border pixels the reference net drops.
    For an H x W image the head sees ``c3 * (ceil(H/2) // 4) * (ceil(W/2) // 4)`` features.
    """

    def __init__(self, channels: list[int] = (24, 48, 96), num_classes: int = _CLASSES, in_channels: int = 1,
                 image_size: tuple[int, int] = _FASHION_SHAPE[1:], second_conv: bool = False):
        super().__init__()
        c1, c2, c3 = channels
        # second_conv: one more conv3x3(c3) at H/4 (the ``lite4`` model): depth where the maps are small and
        # cheap, which bought more accuracy per CPU second than width (93.41% vs 48/96/192's 93.27% in 20 epochs)
        deeper = [conv_bn(c3, c3)] if second_conv else []
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(),  # -> H/2
            conv_bn(c1, c2), nn.MaxPool2d(2),  # -> H/4
            conv_bn(c2, c3), *deeper, nn.MaxPool2d(2))  # -> H/8
        h, w = ((s + 1) // 2 // 4 for s in image_size)
        if h < 1 or w < 1:
            raise ValueError(f"the lite model needs images of at least 7x7 pixels, got {tuple(image_size)}")
        self.head = nn.Linear(c3 * h * w, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


# The builders of the classifiers in nndl.base.model_kinds.MODEL_KINDS: name -> builder(cfg, (C, H, W), classes).
BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def builds(name: str):
    """Register a classifier builder under the ``model`` name of its :class:`~nndl.base.model_kinds.ModelKind`."""
    def register(fn):
        BUILDERS[name] = fn
        return fn

    return register


@builds("mlp")
def _mlp(cfg, shape, classes):
    c, h, w = shape
    return MLP(c * h * w, cfg.hidden, classes, cfg.activation, cfg.dropout, cfg.init)


@builds("cnn")
def _cnn(cfg, shape, classes):
    return SmallCNN(cfg.channels, classes, in_channels=shape[0], image_size=shape[1:])


@builds("resnet")
def _resnet(cfg, shape, classes):
    return ResNet(cfg.channels, classes, in_channels=shape[0])


@builds("fast")
def _fast(cfg, shape, classes):
    return FastNet(cfg.channels, classes, in_channels=shape[0])


@builds("lite")
def _lite(cfg, shape, classes):
    return LiteCNN(cfg.channels, classes, in_channels=shape[0], image_size=shape[1:])


@builds("lite4")
def _lite4(cfg, shape, classes):
    return LiteCNN(cfg.channels, classes, in_channels=shape[0], image_size=shape[1:], second_conv=True)


def build_classifier(cfg, input_shape: tuple[int, int, int] = _FASHION_SHAPE, num_classes: int = _CLASSES) -> nn.Module:
    """The classifier named by ``cfg.model`` (a :class:`~nndl.tasks.classify.config.ClassifyConfig`), from :data:`BUILDERS`.

    ``input_shape`` is (channels, height, width) of one image (the MLP sees it flattened; a table
    of F features is ``(1, 1, F)``) and ``num_classes`` the number of logits; the defaults are
    Fashion-MNIST's (see :mod:`nndl.data.fashion_mnist`).
    """
    if cfg.model not in BUILDERS:
        raise ValueError(f"unknown model '{cfg.model}'")
    return BUILDERS[cfg.model](cfg, tuple(input_shape), num_classes)


def build_regressor(cfg, in_features: int) -> MLP:
    """The regression MLP described by a :class:`~nndl.tasks.regress.config.RegressConfig`."""
    return MLP(in_features, cfg.hidden, 1, cfg.activation, cfg.dropout, cfg.init)


class Standardized(nn.Module):
    """Wraps a regressor so it sees standardised inputs/targets but speaks original units.

    The statistics are fixed buffers from the training data; the loss is still
    computed in original units, so reported MSEs stay comparable across presets.
    """

    def __init__(self, net: nn.Module, x_mean, x_std, y_mean, y_std):
        super().__init__()
        self.net = net
        for name, value in (("x_mean", x_mean), ("x_std", x_std), ("y_mean", y_mean), ("y_std", y_std)):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32).clone())

    def forward(self, x, return_hidden: bool = False):
        out = self.net((x - self.x_mean) / self.x_std, return_hidden=return_hidden)
        if return_hidden:
            return out[0] * self.y_std + self.y_mean, out[1]
        return out * self.y_std + self.y_mean

    def apply_to(self, stack: nn.Module, x):
        """Run a stacked copy of ``net`` (see :class:`StackedMLP`) with this wrapper's scaling."""
        return stack((x - self.x_mean) / self.x_std) * self.y_std + self.y_mean


class Ensemble(nn.Module):
    """Mean prediction of several models (the fold models of a cross-validation)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(models)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(0)
