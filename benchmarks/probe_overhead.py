"""Training-step cost of the probe against no instrumentation and TensorBoard histograms.

    .venv/bin/python benchmarks/probe_overhead.py [--rounds 3] [--block 10] [--batch 128]

Models: plain-50 and residual-56 CIFAR nets (relu, batch norm, He init), width 16,
batch 128, SGD, on the CPU.  Variants, interleaved round by round so the machine's
noise hits all of them alike:
  none        plain training step
  probe@1     vgrad probe every step (wgrad, signal, act for every layer)
  probe@10    vgrad probe every 10th step
  tb_hist     torch.utils.tensorboard SummaryWriter.add_histogram of every parameter's
              gradient, every step (a real peer's per-step instrumentation)
Time: per block of --block steps, divided by --block; median over rounds; ratio to none.
Peak memory: a fresh process per (model, variant) takes 2 warm-up steps, resets the
kernel's peak-RSS counter (/proc/self/clear_refs), takes 3 steps and reads VmHWM; the
table gives that peak and its increase over `none` (CPU torch has no allocator counter).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vgrad import ModelSpec, build_model  # noqa: E402
from vgrad.probe import Probe  # noqa: E402

MODELS = {"plain-50": dict(arch="plain", depth=50), "residual-56": dict(arch="residual", depth=56)}
VARIANTS = ("none", "probe@1", "probe@10", "tb_hist")


class Runner:
    def __init__(self, model: str, variant: str, batch: int, width: int):
        spec = ModelSpec(**MODELS[model], activation="relu", norm="batchnorm", init="he", width=width)
        self.net = build_model(spec, seed=0).train()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(batch, 3, 32, 32, generator=g), torch.randint(10, (batch,), generator=g)
        self.variant, self.step_i = variant, 0
        self.every = {"probe@1": 1, "probe@10": 10}.get(variant)
        self.probe = Probe(self.net, "relu") if self.every else None
        self.writer = None
        if variant == "tb_hist":
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(tempfile.mkdtemp(prefix="vgrad-tb-"))
        self.records = []

    def step(self) -> None:
        record = self.every is not None and self.step_i % self.every == 0
        if record:
            self.probe.start()
        self.opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(self.net(self.x), self.y).backward()
        if record:
            self.records.append(self.probe.finish(self.step_i))  # kept, as a trial keeps them until its flush
        if self.writer is not None:
            for name, p in self.net.named_parameters():
                self.writer.add_histogram(name, p.grad, self.step_i)
        self.opt.step()
        self.step_i += 1


def time_all(args) -> dict:
    results = {}
    for model in MODELS:
        runners = {v: Runner(model, v, args.batch, args.width) for v in VARIANTS}
        for r in runners.values():  # warm-up: allocator, first-touch, TB writer thread
            r.step()
            r.step_i = 0
        times = {v: [] for v in VARIANTS}
        for rnd in range(args.rounds):
            order = VARIANTS if rnd % 2 == 0 else tuple(reversed(VARIANTS))
            for v in order:
                t0 = time.perf_counter()
                for _ in range(args.block):
                    runners[v].step()
                times[v].append((time.perf_counter() - t0) / args.block)
            print(f"  {model} round {rnd + 1}/{args.rounds}: " + ", ".join(
                f"{v} {times[v][-1] * 1e3:.0f} ms" for v in VARIANTS), file=sys.stderr)
        results[model] = {v: statistics.median(t) for v, t in times.items()}
    return results


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def peak_rss_mib(model: str, variant: str, args) -> float:
    cmd = [sys.executable, __file__, "--child", model, variant, "--batch", str(args.batch), "--width", str(args.width)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--block", type=int, default=10, help="steps per timed block (probe@10 records one)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        r = Runner(*args.child, args.batch, args.width)
        for _ in range(2):
            r.step()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size to the current one
        for _ in range(3):
            r.step()
        print(vm_hwm_mib())
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, width {args.width}, "
          f"{args.rounds} rounds x {args.block} steps", file=sys.stderr)
    timing = time_all(args)
    memory = {m: {v: peak_rss_mib(m, v, args) for v in VARIANTS} for m in MODELS}
    print("| model | variant | step ms (median) | ratio to none | peak RSS MiB | +MiB vs none |")
    print("|---|---|---:|---:|---:|---:|")
    for m in MODELS:
        for v in VARIANTS:
            t, base = timing[m][v], timing[m]["none"]
            print(f"| {m} | {v} | {t * 1e3:.1f} | {t / base:.3f} | {memory[m][v]:.0f} | {memory[m][v] - memory[m]['none']:+.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"timing_s": timing, "peak_rss_mib": memory, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
