"""What Ray costs per trial on this machine: the same trials in-process and as a sweep.

    .venv/bin/python benchmarks/ray_overhead.py [--trials 4] [--steps 4]

The trials: the smoke grid's cells (width 4, 32x32 synthetic, 16-image batches) with
--trials seeds, run three ways in one process, one after the other:
  in-process   vgrad.train.Trial(...).run() in a loop (what `vgrad run` does), no Ray
  sweep x1     vgrad.sweep.run_sweep, 1 worker per trial, one trial at a time
  sweep auto   the same with concurrency from the cluster (2 CPUs: 2 trials at a time)
Per-trial fixed cost of Ray = (sweep x1 - in-process) / trials: Tune trial actor,
Train controller, worker actors, process group, checkpoint and result files.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vgrad import load_grid  # noqa: E402
from vgrad.store import Store  # noqa: E402
from vgrad.sweep import Resources, run_sweep  # noqa: E402
from vgrad.train import Trial  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=2, help="seeds per smoke cell (4 cells each)")
    p.add_argument("--steps", type=int, default=4, help="steps per trial")
    args = p.parse_args()
    grid = load_grid("smoke", seeds=args.trials, overrides={"steps_per_epoch": args.steps})
    trials = grid.trials()
    root = tempfile.mkdtemp(prefix="vgrad-bench-")
    quiet = lambda *a: None  # noqa: E731

    import ray
    import torch

    torch.set_num_threads(1)  # as a 1-CPU Ray worker runs
    t0 = time.perf_counter()
    for t in trials:
        Trial(t, store=Store(root), sweep_id="inproc", device="cpu").run()
    inproc = time.perf_counter() - t0

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t0 = time.perf_counter()
    run_sweep(grid, storage=root, resources=Resources(), max_concurrent=1, sweep_id="x1", echo=quiet)
    serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_sweep(grid, storage=root, resources=Resources(), sweep_id="auto", echo=quiet)
    auto = time.perf_counter() - t0
    ray.shutdown()

    n = len(trials)
    print(f"{n} trials x {args.steps} steps (smoke cells), 2-core machine")
    print("| way | wall s | s per trial |")
    print("|---|---:|---:|")
    for name, wall in (("in-process", inproc), ("sweep, 1 at a time", serial), ("sweep, concurrency auto (2)", auto)):
        print(f"| {name} | {wall:.1f} | {wall / n:.2f} |")
    print(f"\nRay's fixed cost per trial: {(serial - inproc) / n:.2f} s")


if __name__ == "__main__":
    main()
