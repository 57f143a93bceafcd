"""Building blocks shared by both families: activations, norms, convs, blocks.

No in-place ops anywhere (``inplace=False``, ``out = out + shortcut``): the probe's
tensor hooks need every layer's output intact after the forward pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATION_MODULES = {
    "sigmoid": lambda: nn.Sigmoid(),
    "tanh": lambda: nn.Tanh(),
    "relu": lambda: nn.ReLU(inplace=False),
    "gelu": lambda: nn.GELU(),
    "selu": lambda: nn.SELU(inplace=False),
}

ACTIVATION_TYPES = (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.GELU, nn.SELU)


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATION_MODULES[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid choices: {', '.join(ACTIVATION_MODULES)}") from None


def make_norm(name: str, channels: int) -> nn.Module:
    if name == "batchnorm":
        return nn.BatchNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {name!r}; valid choices: none, batchnorm")


def conv(cin: int, cout: int, kernel: int, stride: int, norm: str) -> nn.Conv2d:
    # A bias is redundant before batch norm (He et al. use none); without a norm it is
    # the only per-channel offset, so plain conv stacks keep it.
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=(norm == "none"))


class PadShortcut(nn.Module):
    """He et al. 2016's option A: subsample, zero-pad the new channels; no parameters."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x


def make_shortcut(kind: str, cin: int, cout: int, stride: int, norm: str) -> nn.Module:
    """Identity when shapes match; else option A ("pad") or option B ("project", 1x1 conv + norm)."""
    if cin == cout and stride == 1:
        return nn.Identity()
    if kind == "pad":
        return PadShortcut(cin, cout, stride)
    return nn.Sequential(conv(cin, cout, 1, stride, norm), make_norm(norm, cout))


class BasicBlock(nn.Module):
    """Two 3x3 convs: conv-norm-act, conv-norm, (+ shortcut), act."""

    convs = 2

    def __init__(self, cin, width, stride, *, activation, norm, residual, shortcut):
        super().__init__()
        self.out_channels = width
        self.conv1, self.norm1, self.act1 = conv(cin, width, 3, stride, norm), make_norm(norm, width), make_activation(activation)
        self.conv2, self.norm2 = conv(width, width, 3, 1, norm), make_norm(norm, width)
        self.shortcut = make_shortcut(shortcut, cin, width, stride, norm) if residual else None
        self.act2 = make_activation(activation)

    def forward(self, x):
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act2(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision's v1.5), 1x1 expand x4, (+ shortcut), act."""

    convs = 3
    expansion = 4

    def __init__(self, cin, width, stride, *, activation, norm, residual, shortcut):
        super().__init__()
        cout = width * self.expansion
        self.out_channels = cout
        self.conv1, self.norm1, self.act1 = conv(cin, width, 1, 1, norm), make_norm(norm, width), make_activation(activation)
        self.conv2, self.norm2, self.act2 = conv(width, width, 3, stride, norm), make_norm(norm, width), make_activation(activation)
        self.conv3, self.norm3 = conv(width, cout, 1, 1, norm), make_norm(norm, cout)
        self.shortcut = make_shortcut(shortcut, cin, cout, stride, norm) if residual else None
        self.act3 = make_activation(activation)

    def forward(self, x):
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act3(out)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def conv_norm_act(cin, cout, kernel, stride, *, activation, norm) -> list[nn.Module]:
    return [conv(cin, cout, kernel, stride, norm), make_norm(norm, cout), make_activation(activation)]
