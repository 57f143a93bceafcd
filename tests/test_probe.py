"""Every probe statistic against a slow, obvious float64 reference (numpy, per tensor)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from vgrad import ModelSpec, build_model
from vgrad.probe import MOMENTS, QUANTITIES, SATURATION, STATS, TINY, Probe, derive, moments, record_steps

ACT_FN = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
          "gelu": nn.functional.gelu, "selu": torch.selu}


def reference_stats(x) -> dict:
    """The obvious definitions, in float64 numpy (docs/metrics.md)."""
    x = np.asarray(x.detach().cpu().double().numpy() if torch.is_tensor(x) else x, dtype=np.float64).ravel()
    finite = np.isfinite(x)
    with np.errstate(all="ignore"):
        return {"norm": math.sqrt(np.sum(x * x)), "rms": math.sqrt(np.mean(x * x)), "mean": np.mean(x),
                "std": np.std(x), "max_abs": np.max(np.abs(x)), "frac_zero": np.mean(x == 0),
                "frac_tiny": np.mean(np.abs(x) < TINY), "nonfinite": int(np.sum(~finite))}


def reference_saturated(z, activation) -> float:
    """Fraction of units with phi'(z) < 10% of sup phi', phi' by autograd (no thresholds)."""
    grid = torch.linspace(-20, 20, 400_001, dtype=torch.float64, requires_grad=True)
    ACT_FN[activation](grid).sum().backward()
    sup = grid.grad.max().item()
    z = z.detach().double().clone().requires_grad_(True)
    ACT_FN[activation](z).sum().backward()
    return (z.grad < 0.1 * sup).double().mean().item()


def assert_stats_close(got: dict, want: dict, rel: float, what: str):
    for s in STATS:
        if s == "nonfinite":
            assert got[s] == want[s], (what, s)
        else:
            # a mean can cancel to ~0 (the head's weight gradient sums to zero over classes):
            # judge it against the tensor's scale, not its own size
            tol = rel * want["rms"] if s == "mean" else 1e-300
            assert got[s] == pytest.approx(want[s], rel=rel, abs=tol), (what, s, got[s], want[s])


def run_with_reference(spec, dtype, batch=6, seed=0):
    net = build_model(spec, seed=seed).to(dtype).train()
    probe = Probe(net, spec.activation)
    outs, act_inputs = {}, {}
    by_name = dict(net.named_modules())
    for info, m in zip(net.layers, net.weighted_modules()):
        def keep(module, inputs, out, i=info.index):
            out.retain_grad()
            outs[i] = out
        m.register_forward_hook(keep)
        if info.act_module:
            by_name[info.act_module].register_forward_pre_hook(
                lambda module, inputs, i=info.index: act_inputs.__setitem__(i, inputs[0].detach().clone()))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(dtype)
    y = torch.randint(spec.num_classes, (batch,), generator=g)
    probe.start()
    nn.functional.cross_entropy(net(x), y).backward()
    rec = probe.finish(step=0)
    return net, rec, outs, act_inputs


@pytest.mark.parametrize("arch", ["plain", "residual"])
@pytest.mark.parametrize("activation, norm", [("sigmoid", "none"), ("relu", "batchnorm"), ("tanh", "batchnorm"),
                                              ("gelu", "none"), ("selu", "none")])
@pytest.mark.parametrize("dtype, rel", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_every_statistic_matches_reference(arch, activation, norm, dtype, rel):
    spec = ModelSpec(arch=arch, depth=8, activation=activation, norm=norm, width=4, input="cifar")
    net, rec, outs, act_inputs = run_with_reference(spec, dtype)
    assert rec.moments.shape == (len(net.layers), len(QUANTITIES), len(MOMENTS))
    for info, m in zip(net.layers, net.weighted_modules()):
        got = {q: {k: v[info.index] for k, v in derive(rec.moments[:, i]).items()} for i, q in enumerate(QUANTITIES)}
        assert_stats_close(got["wgrad"], reference_stats(m.weight.grad), rel, f"wgrad {info.name}")
        assert_stats_close(got["signal"], reference_stats(outs[info.index].grad), rel, f"signal {info.name}")
        assert_stats_close(got["act"], reference_stats(outs[info.index]), rel, f"act {info.name}")
        assert rec.weight_norm[info.index] == pytest.approx(m.weight.detach().double().norm().item(), rel=1e-6)
        if info.act_module:
            sat = reference_saturated(act_inputs[info.index], activation)
            assert got["act"]["frac_saturated"] == pytest.approx(sat, abs=1e-12), info.name
        else:
            assert info.kind == "linear"


def test_imagenet_family_with_shortcuts():
    spec = ModelSpec(arch="residual", depth=10, activation="relu", norm="batchnorm", width=4, input="imagenet",
                     num_classes=5)
    net, rec, outs, _ = run_with_reference(spec, torch.float64, batch=2)
    assert any(i.kind == "shortcut" for i in net.layers)
    for info in net.layers:
        got = {k: v[info.index] for k, v in derive(rec.moments[:, 1]).items()}
        assert_stats_close(got, reference_stats(outs[info.index].grad), 1e-9, info.name)


def test_zeros_tiny_and_nonfinite_are_counted_exactly():
    x = torch.tensor([0.0, -0.0, 1e-40, -1e-39, 3.0, -4.0, 0.0, 2e-38], dtype=torch.float64)
    got = {k: v.item() for k, v in derive(moments(x).cpu().numpy()[None]).items()}
    assert got["frac_zero"] == 3 / 8 and got["frac_tiny"] == 5 / 8 and got["nonfinite"] == 0
    assert got["norm"] == pytest.approx(5.0) and got["max_abs"] == 4.0
    y = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 0.0, 2.0], dtype=torch.float32)
    m = moments(y).cpu().numpy()
    d = derive(m[None])
    assert d["nonfinite"][0] == 3 and d["frac_zero"][0] == 1 / 6
    assert not np.isfinite(d["norm"][0])  # moments of a diverged tensor are not finite: the count says why


def test_float32_squares_do_not_underflow():
    x = torch.full((1000,), 1e-25, dtype=torch.float32)  # x*x = 1e-50 is 0 in float32
    d = derive(moments(x).cpu().numpy()[None])
    assert d["rms"][0] == pytest.approx(1e-25, rel=1e-6) and d["frac_tiny"][0] == 0


def test_scale_applies_to_moments_and_threshold():
    x = torch.tensor([4.0, -2.0, 3e-38, 0.0], dtype=torch.float64)
    np.testing.assert_allclose(moments(x, 0.5).cpu().numpy(), moments(x * 0.5).cpu().numpy(), rtol=1e-15)


def test_sigmoid_underflow_float32_vs_float64():
    """The design's warning, measured: deep plain sigmoid nets lose float32 gradients entirely."""
    spec = ModelSpec(arch="plain", depth=100, activation="sigmoid", norm="none", init="xavier", width=4)
    _, rec32, _, _ = run_with_reference(spec, torch.float32)
    _, rec64, _, _ = run_with_reference(spec, torch.float64)
    sig32, sig64 = derive(rec32.moments[:, 1]), derive(rec64.moments[:, 1])
    assert sig64["rms"][0] < TINY and sig64["frac_zero"][0] == 0 and sig64["frac_tiny"][0] == 1
    assert sig64["rms"][0] < 1e-60  # measured 7.7e-68 at layer 0
    assert sig32["frac_zero"][0] == 1 and sig32["rms"][0] == 0  # float32 lost every value


@pytest.mark.parametrize("activation", list(SATURATION))
def test_saturation_rule_equals_derivative_definition(activation):
    z = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    from vgrad.probe import count_saturated
    assert count_saturated(z, activation).item() / z.numel() == pytest.approx(
        reference_saturated(z, activation), abs=2e-5)


def test_no_cost_when_not_recording():
    spec = ModelSpec(depth=8, width=4)
    net = build_model(spec)
    probe = Probe(net, spec.activation)
    out = net(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert probe.buf is None  # hooks ran, did nothing
    probe.remove()
    assert not any(m._forward_hooks for m in net.weighted_modules())


def test_record_steps():
    assert record_steps(100, 10, 0) == list(range(0, 100, 10))
    assert record_steps(5, 0, 0) == [0]
    steps = record_steps(10_000, 0, 10)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 9999 and len(steps) == 11
    ratios = np.diff(np.log(steps[1:]))
    assert np.allclose(ratios, np.log(9999) / 9, rtol=0.1)  # log-spaced (integer rounding)
    assert record_steps(10, 3, 4) == [0, 1, 2, 3, 4, 6, 9]
