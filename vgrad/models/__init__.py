"""The study's model family: ``build_model(spec, seed)`` -> a Net with a weighted-layer table."""
from __future__ import annotations

import torch

from ..spec import ModelSpec
from .init import init_model
from .layout import Layout, layout_for
from .net import LayerInfo, Net, build_net

__all__ = ["build_model", "LayerInfo", "Net", "Layout", "layout_for", "count_params"]


def build_model(spec: ModelSpec, seed: int = 0) -> Net:
    """Build and initialize the network of ``spec``; pure: same inputs, same weights.

    Module constructors draw PyTorch's default init from the global RNG; forking it
    keeps the caller's random state untouched (costs one throwaway init), and our init
    then redraws every weighted layer from a generator seeded by ``seed``.
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build_model needs a ModelSpec, got {type(spec).__name__}")
    with torch.random.fork_rng(devices=[]):
        net = build_net(spec)
    init_model(net, spec.init, seed)
    return net


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
