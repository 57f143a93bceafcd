"""Weight initializations of the study, applied to every weighted layer (docs/models.md).

fan_in = in_channels * kh * kw and fan_out = out_channels * kh * kw (PyTorch's
convention; a linear layer has kh = kw = 1).  The same formula is used for every
activation, so "xavier vs he" is one variable of the grid:

  xavier      W ~ N(0, 2 / (fan_in + fan_out))        Glorot & Bengio 2010, gain 1
  he          W ~ N(0, 2 / fan_in)                     He et al. 2015, fan_in mode, gain sqrt(2)
  default     W ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))   PyTorch's layer default (kaiming_uniform, a=sqrt(5))
  orthogonal  W reshaped to (out_channels, fan_in) has orthonormal rows or columns,
              gain 1 (Saxe et al. 2014); per-entry std 1/sqrt(max(out_channels, fan_in))
Biases are zero, except ``default``: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as PyTorch.
Batch-norm scales are 1 and shifts 0.
"""
from __future__ import annotations

import math

import torch
from torch import nn

INIT_NAMES = ("xavier", "he", "default", "orthogonal")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) = (in, out) channels x kernel area."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def expected_std(init: str, shape: torch.Size | tuple[int, ...]) -> float:
    """Per-entry standard deviation each init gives a weight of ``shape`` (tests check it)."""
    receptive = math.prod(shape[2:]) if len(shape) > 2 else 1
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    if init == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if init == "he":
        return math.sqrt(2.0 / fan_in)
    if init == "default":
        return 1.0 / math.sqrt(3.0 * fan_in)  # U(-b, b) has std b / sqrt(3)
    if init == "orthogonal":
        return 1.0 / math.sqrt(max(shape[0], fan_in))
    raise ValueError(f"unknown init {init!r}; valid choices: {', '.join(INIT_NAMES)}")


@torch.no_grad()
def init_weighted(module: nn.Module, init: str, generator: torch.Generator) -> None:
    """Initialize one conv or linear layer in place."""
    w = module.weight
    fan_in, fan_out = fans(w)
    if init in ("xavier", "he"):
        nn.init.normal_(w, 0.0, expected_std(init, w.shape), generator=generator)
    elif init == "default":
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(w, -bound, bound, generator=generator)
    elif init == "orthogonal":
        nn.init.orthogonal_(w, gain=1.0, generator=generator)
    else:
        expected_std(init, w.shape)  # raises with the valid choices
    if module.bias is not None:
        if init == "default":
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        else:
            module.bias.zero_()


@torch.no_grad()
def init_model(model: nn.Module, init: str, seed: int) -> None:
    """Every conv/linear by ``init`` from a private generator; norms to (1, 0)."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            init_weighted(m, init, generator)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
