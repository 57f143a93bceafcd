"""Every init formula (docs/models.md) checked by the empirical statistics of large tensors."""
import math

import pytest
import torch
from torch import nn

from vgrad import ModelSpec, build_model
from vgrad.models.init import INIT_NAMES, expected_std, fans, init_weighted

# (layer, fan_in, fan_out): a conv with fan_in != fan_out and a wide linear
LAYERS = [
    (lambda: nn.Conv2d(128, 256, 3), 128 * 9, 256 * 9),
    (lambda: nn.Conv2d(256, 64, 3, bias=False), 256 * 9, 64 * 9),
    (lambda: nn.Linear(2048, 1000), 2048, 1000),
]


def formula_std(init, fan_in, fan_out, out_channels):
    """The documented formulas, written out again independently of the code under test."""
    return {"xavier": math.sqrt(2 / (fan_in + fan_out)), "he": math.sqrt(2 / fan_in),
            "default": math.sqrt(1 / fan_in) / math.sqrt(3),
            "orthogonal": 1 / math.sqrt(max(fan_in, out_channels))}[init]


@pytest.mark.parametrize("init", INIT_NAMES)
@pytest.mark.parametrize("make, fan_in, fan_out", LAYERS)
def test_init_std_matches_formula(init, make, fan_in, fan_out):
    layer = make()
    assert fans(layer.weight) == (fan_in, fan_out)
    init_weighted(layer, init, torch.Generator().manual_seed(0))
    w = layer.weight.detach().double().flatten()
    n = w.numel()
    std = formula_std(init, fan_in, fan_out, layer.weight.shape[0])
    assert expected_std(init, layer.weight.shape) == pytest.approx(std, rel=1e-12)
    # sampling error of a std estimate is ~ std / sqrt(2n); allow 5 of those
    assert w.std().item() == pytest.approx(std, rel=5 / math.sqrt(2 * n))
    assert abs(w.mean().item()) < 5 * std / math.sqrt(n)
    if layer.bias is not None:
        b = layer.bias.detach()
        if init == "default":
            bound = 1 / math.sqrt(fan_in)
            assert b.abs().max() <= bound and b.abs().max() > 0.5 * bound
        else:
            assert torch.count_nonzero(b) == 0


@pytest.mark.parametrize("make, fan_in, fan_out", LAYERS)
def test_distribution_shapes(make, fan_in, fan_out):
    g = torch.Generator().manual_seed(1)
    for init in ("xavier", "he"):
        layer = make()
        init_weighted(layer, init, g)
        w = layer.weight.detach().double().flatten()
        kurtosis = (((w - w.mean()) / w.std()) ** 4).mean().item()
        assert kurtosis == pytest.approx(3.0, abs=0.1)  # Gaussian
    layer = make()
    init_weighted(layer, "default", g)
    bound = 1 / math.sqrt(fan_in)
    w = layer.weight.detach()
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound  # uniform on [-b, b]


@pytest.mark.parametrize("make, fan_in, fan_out", LAYERS)
def test_orthogonal_is_orthogonal(make, fan_in, fan_out):
    layer = make()
    init_weighted(layer, "orthogonal", torch.Generator().manual_seed(0))
    w = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=gram.dtype), atol=1e-5)


@pytest.mark.parametrize("init", INIT_NAMES)
def test_init_applies_to_every_weighted_layer_of_a_model(init):
    net = build_model(ModelSpec(depth=50, input="imagenet", init=init, norm="none", width=16), seed=3)
    for info, m in zip(net.layers, net.weighted_modules()):
        w = m.weight.detach().double()
        std = formula_std(init, info.fan_in, info.fan_out, w.shape[0])
        assert w.std().item() == pytest.approx(std, rel=6 / math.sqrt(2 * info.numel) + 0.01), info.name


def test_batchnorm_starts_at_identity():
    net = build_model(ModelSpec(depth=20, width=4, norm="batchnorm"), seed=5)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
