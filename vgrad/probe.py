"""The instrument: per-layer gradient statistics at recorded steps (docs/metrics.md).

For every weighted layer (``Net.layers``) three quantities are summarised:
  wgrad   dL/dW, read after backward (so after DDP's all-reduce: identical on all ranks)
  signal  dL/dh at the layer's output h, by a tensor hook during backward
  act     the layer's output h itself (forward hook); plus the saturated fraction of the
          activation function's input z (after norm and shortcut add), see SATURATION
Each is reduced on the device to sufficient statistics (MOMENTS) of float64, written into
one (layers, 3, moments) buffer; per-rank quantities (signal, act) are combined over DDP
ranks with one all_gather; then one host transfer per recorded step.  Derived columns
(norm, rms, mean, std, fractions) are computed on the host from the moments.

Cost, only on recorded steps: about ten elementwise passes over every layer output and
its gradient, and over every weight gradient; nothing at all on other steps but one
Python boolean test per hooked module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

QUANTITIES = ("wgrad", "signal", "act")
STATS = ("norm", "rms", "mean", "std", "max_abs", "frac_zero", "frac_tiny", "nonfinite")
MOMENTS = ("count", "sum", "sumsq", "max_abs", "n_zero", "n_tiny", "n_nonfinite", "n_saturated")
M = {name: i for i, name in enumerate(MOMENTS)}
Q = {name: i for i, name in enumerate(QUANTITIES)}
# |x| below float32's smallest normal number: a float32 value there has lost precision
# (subnormal) or is zero; float64 runs count what float32 would have lost.
TINY = float(torch.finfo(torch.float32).tiny)
SATURATION_FRACTION = 0.1  # saturated: phi'(z) < 10% of sup phi'


def _solve(f, lo, hi, target):
    """Bisection for increasing f on [lo, hi] (thresholds below are computed, not typed in)."""
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return (lo + hi) / 2


def _gelu_prime(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2))) + z * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


_SELU_LAMBDA, _SELU_ALPHA = 1.0507009873554805, 1.6732632423543772
# activation -> (rule, threshold): the set {phi'(z) < 10% sup phi'} is {|z| > c} or {z < c}
SATURATION = {
    # sigmoid' = s(1-s) <= 1/4; s(1-s) = 0.025 at s = (1 - sqrt(0.9)) / 2
    "sigmoid": ("abs_gt", -math.log((1 - math.sqrt(0.9)) / 2 / (1 - (1 - math.sqrt(0.9)) / 2))),
    # tanh' = 1 - t^2 <= 1; 1 - t^2 = 0.1 at t = sqrt(0.9)
    "tanh": ("abs_gt", math.atanh(math.sqrt(0.9))),
    # relu' = 0 for z <= 0 (PyTorch's subgradient at 0): the dead units
    "relu": ("le", 0.0),
    # gelu' rises from its minimum at -sqrt(2) to its maximum at sqrt(2)
    "gelu": ("lt", _solve(_gelu_prime, -math.sqrt(2), math.sqrt(2), SATURATION_FRACTION * _gelu_prime(math.sqrt(2)))),
    # selu' = lambda*alpha*e^z for z <= 0, sup lambda*alpha at 0-
    "selu": ("lt", math.log(SATURATION_FRACTION)),
}


def _count(mask: torch.Tensor) -> torch.Tensor:
    """Number of 1.0s in a 0/1 float tensor, exactly, as float64.

    A float sum of 0/1 values is exact while every partial sum is an integer the dtype
    represents: always in float64, in float32 up to 2**24 elements (known on the host, so
    no sync).  torch.count_nonzero is avoided: on the CPU it is data-dependent and ten
    times slower on half-zero tensors (ReLU signals).
    """
    if mask.dtype == torch.float64 or mask.numel() <= 2**24:
        return mask.sum().to(torch.float64)
    return mask.sum(dtype=torch.float64)


class Scratch:
    """Reusable temporaries for the probe on the CPU.  A fresh multi-MiB tensor there is
    a fresh mmap whose pages fault in on first touch, which cost as much as the
    reductions; kept buffers (the largest layer output's size, in float64 and in the
    compute dtype) avoid it.  On a GPU the caching allocator already reuses blocks, so
    the probe passes no Scratch there and holds no memory between steps."""

    def __init__(self):
        self.bufs: dict[tuple[str, torch.dtype], torch.Tensor] = {}

    def get(self, role: str, dtype: torch.dtype, n: int, device) -> torch.Tensor:
        b = self.bufs.get((role, dtype))
        if b is None or b.numel() < n or b.device != torch.device(device):
            b = self.bufs[role, dtype] = torch.empty(n, dtype=dtype, device=device)
        return b[:n]


def _temp(scratch: Scratch | None, role: str, like: torch.Tensor, dtype=None) -> torch.Tensor | None:
    """A scratch view (distinct per role, so a float64 input's copy and temp never alias)."""
    return None if scratch is None else scratch.get(role, dtype or like.dtype, like.numel(), like.device)


def moments(x: torch.Tensor, scale: float = 1.0, scratch: Scratch | None = None) -> torch.Tensor:
    """MOMENTS of ``scale * x`` as a float64 vector on x's device; no host sync.

    Cost: one float64 copy of x (reused in place for the tiny count), two float32
    temporaries and seven reductions, each a pass over memory: about 2 ms per 2M float32
    values on 2 CPU cores, against about 25 ms for the forward + backward of the
    16-channel 3x3 conv that made them.  Sums run in float64, so float32 gradients near
    1e-20 do not underflow when squared.  ``scale`` is applied to the results (and
    inversely to the tiny threshold), not to x.  Comparisons are in-place on float
    temporaries (1.0/0.0), about four times cheaper on the CPU than bool-valued ones.
    """
    x = x.detach().reshape(-1)
    n = x.numel()
    f64 = torch.float64
    d, t = _temp(scratch, "copy", x, f64), _temp(scratch, "temp", x)
    xd = x.to(f64, copy=True) if d is None else d.copy_(x)  # a copy even for float64 input: overwritten below
    lo, hi = torch.aminmax(x)
    total, sumsq = xd.sum() * scale, torch.dot(xd, xd) * scale**2
    n_zero = _count(torch.abs(x, out=t).eq_(0.0))
    n_nonfinite = _count(torch.sub(x, x, out=t).ne_(0.0))                # x - x is NaN exactly where x is inf/nan
    return torch.stack([
        torch.full((), n, dtype=f64, device=x.device),                # count: a fill, no host->device copy
        total,
        sumsq,
        torch.maximum(-lo, hi).to(f64) * scale,                      # NaN propagates: nonfinite says why
        n_zero,
        _count(xd.abs_().lt_(TINY / scale)),                          # NaN compares false: not tiny
        n_nonfinite,
        torch.zeros((), dtype=f64, device=x.device),                   # n_saturated: filled by the act hook
    ])


def count_saturated(z: torch.Tensor, activation: str, scratch: Scratch | None = None) -> torch.Tensor:
    # In-place comparisons on a float temporary (1.0 / 0.0): on the CPU about four times
    # cheaper than comparisons that allocate a bool tensor.  NaN compares false.
    rule, c = SATURATION[activation]
    z = z.detach().reshape(-1)
    t = _temp(scratch, "temp", z)
    if rule == "abs_gt":
        mask = torch.abs(z, out=t).gt_(c)
    elif rule == "le":
        mask = torch.neg(z, out=t).ge_(-c)
    else:
        mask = torch.sub(z, c, out=t).lt_(0.0)  # z - c < 0 exactly when z < c (IEEE, gradual underflow)
    return _count(mask)


def record_steps(total_steps: int, every: int, log_points: int) -> list[int]:
    """Step 0, every ``every`` steps, and ``log_points`` log-spaced steps in [1, total)."""
    steps = {0}
    if every > 0:
        steps.update(range(0, total_steps, every))
    if log_points > 0 and total_steps > 1:
        steps.update(int(round(s)) for s in np.geomspace(1, total_steps - 1, log_points))
    return sorted(s for s in steps if s < max(total_steps, 1))


@dataclass
class ProbeRecord:
    """What one recorded step gives the store: moments (layers, 3, moments) and weight norms."""

    step: int
    moments: np.ndarray
    weight_norm: np.ndarray


class Probe:
    """Hooks a Net's weighted layers; ``start()`` before forward, ``finish()`` after backward.

    ``world_size`` > 1: each rank's loss is a mean over its local batch, so the signal of
    the global (all-rank mean) loss is local signal / world_size; that scale is applied
    before ranks are combined, which makes the statistics equal a single process's.
    """

    def __init__(self, net, activation: str, *, record_act: bool = True, world_size: int = 1):
        self.layers, self.modules = net.layers, net.weighted_modules()
        self.activation, self.record_act, self.world_size = activation, record_act, world_size
        self.recording, self.buf, self._handles = False, None, []
        cpu = self.modules[0].weight.device.type == "cpu"
        self.scratch = Scratch() if cpu else None
        by_name = dict(net.named_modules())
        for info, module in zip(self.layers, self.modules):
            self._handles.append(module.register_forward_hook(self._on_output(info.index)))
            if record_act and info.act_module is not None:
                act = by_name[info.act_module]
                self._handles.append(act.register_forward_pre_hook(self._on_act_input(info.index)))

    def _on_output(self, i: int):
        def hook(module, inputs, out):
            if not self.recording:
                return
            if self.record_act:
                self.buf[i, Q["act"], : M["n_saturated"]] = moments(out, 1.0, self.scratch)[: M["n_saturated"]]
            if out.requires_grad:
                out.register_hook(self._on_signal(i))
        return hook

    def _on_signal(self, i: int):
        def hook(grad):
            self.buf[i, Q["signal"]] = moments(grad, 1.0 / self.world_size, self.scratch)
            # returns None: the gradient flows on unchanged
        return hook

    def _on_act_input(self, i: int):
        def hook(module, inputs):
            if self.recording:
                self.buf[i, Q["act"], M["n_saturated"]] = count_saturated(inputs[0], self.activation, self.scratch)
        return hook

    def start(self) -> None:
        device = self.modules[0].weight.device
        if self.buf is None or self.buf.device != device:
            self.buf = torch.zeros(len(self.layers), len(QUANTITIES), len(MOMENTS), dtype=torch.float64, device=device)
        else:
            self.buf.zero_()
        self.recording = True

    @torch.no_grad()
    def finish(self, step: int) -> ProbeRecord:
        """Weight-gradient moments, rank combination, one host transfer."""
        self.recording = False
        for i, m in enumerate(self.modules):
            if m.weight.grad is not None:
                self.buf[i, Q["wgrad"]] = moments(m.weight.grad, 1.0, self.scratch)
        buf = self.buf
        if self.world_size > 1:  # signal and act are per-rank: one all_gather, combined here
            parts = [torch.empty_like(buf) for _ in range(self.world_size)]
            dist.all_gather(parts, buf)
            stacked = torch.stack(parts)
            buf = stacked.sum(0)
            buf[..., M["max_abs"]] = stacked[..., M["max_abs"]].amax(0)
            buf[:, Q["wgrad"]] = self.buf[:, Q["wgrad"]]  # already identical on every rank
        wnorm = torch.stack(torch._foreach_norm([m.weight.detach() for m in self.modules])).to(torch.float64)
        host = torch.cat([buf.reshape(-1), wnorm]).cpu().numpy()  # the one host sync
        n = buf.numel()
        return ProbeRecord(step, host[:n].reshape(buf.shape), host[n:])

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def derive(mom: np.ndarray) -> dict[str, np.ndarray]:
    """``<stat>`` columns from MOMENTS along the last axis (float64, numpy)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = mom[..., M["count"]]
        mean = mom[..., M["sum"]] / n
        ms = mom[..., M["sumsq"]] / n
        return {
            "norm": np.sqrt(mom[..., M["sumsq"]]),
            "rms": np.sqrt(ms),
            "mean": mean,
            "std": np.sqrt(np.maximum(ms - mean * mean, 0.0)),
            "max_abs": mom[..., M["max_abs"]],
            "frac_zero": mom[..., M["n_zero"]] / n,
            "frac_tiny": mom[..., M["n_tiny"]] / n,
            "nonfinite": mom[..., M["n_nonfinite"]].astype(np.int64),
            "frac_saturated": mom[..., M["n_saturated"]] / n,
        }
