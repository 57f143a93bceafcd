"""`vgrad probe`: gradient profiles at initialization (+ the first K SGD steps) for a grid.

One Ray task per cell: build the model, probe step 0 on a batch of the synthetic data,
optionally take K SGD steps probing each, write one layer_stats Parquet file and the
cell's trial.json.  Seconds per cell; no Ray Train, no DDP.
"""
from __future__ import annotations

import math
import time

from .grid import SweepSpec
from .runs import hardware, start_ray, sweep_id, trial_label, write_sweep_manifest
from .spec import TrialSpec
from .store import Store, StorageOptions

PROBE_DATASETS = ("synthetic",)


def probe_trial(trial: TrialSpec, *, steps: int, store: Store, sweep_id: str, attempt: int = 0,
                device: str | None = None) -> dict:
    """Probe one cell; write its Parquet and trial.json; return a summary dict."""
    import numpy as np
    import torch

    from .data import synthetic_for
    from .models import build_model
    from .probe import M, Probe
    from .schema import layer_stats_table

    t0 = time.perf_counter()
    if trial.data.dataset not in PROBE_DATASETS:
        raise ValueError(f"vgrad probe reads only {', '.join(PROBE_DATASETS)} data; got dataset={trial.data.dataset}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, trial.dtype)
    net = build_model(trial.model, seed=trial.seed).to(device=device, dtype=dtype).train()
    probe = Probe(net, trial.model.activation, record_act=trial.probe.probe_act)
    data = synthetic_for(trial)
    tr = trial.training
    opt = torch.optim.SGD(net.parameters(), lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay)
    B = trial.data.batch_size
    records, losses, status = [], [], "completed"
    for step in range(steps + 1):
        idx = [(step * B + i) % len(data) for i in range(B)]
        x, y = data.batch(idx, dtype=dtype)
        probe.start()
        loss = torch.nn.functional.cross_entropy(net(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        records.append(probe.finish(step))
        losses.append(float(loss.detach()))  # a host sync per step: fine for a few probe steps
        if not math.isfinite(losses[-1]) or records[-1].moments[..., M['n_nonfinite']].sum() > 0:
            status = "diverged"  # divergence is data: keep the rows, stop stepping
            break
        if step < steps:
            opt.step()
    probe.remove()
    table = layer_stats_table(sweep_id=sweep_id, trial=trial, attempt=attempt, layers=net.layers,
                              records=records, epochs=[0] * len(records), losses=losses,
                              lrs=[tr.lr] * len(records), record_act=trial.probe.probe_act)
    part = Store.part_name("layer_stats", sweep_id, trial.trial_id, 0)
    store.write_table(part, table)
    sig = table.column("signal_rms").to_numpy()[: len(net.layers)]
    main = np.array([i.kind != "shortcut" for i in net.layers])
    summary = {"trial_id": trial.trial_id, "status": status, "rows": table.num_rows,
               "steps_recorded": len(records), "loss0": losses[0],
               "signal_rms_first": float(sig[main][0]), "signal_rms_last": float(sig[main][-1]),
               "wall_s": time.perf_counter() - t0}
    store.write_json(Store.trial_json(sweep_id, trial.trial_id), {
        "trial_id": trial.trial_id, "sweep_id": sweep_id, "kind": "probe", "spec": trial.to_dict(),
        "status": status, "attempts": attempt + 1, "steps": steps, "hardware": hardware(device),
        "files": [store.url_of(part)], "summary": summary})
    return summary


def probe_sweep_id(grid: SweepSpec, trials: list[TrialSpec], steps: int) -> str:
    return sweep_id(grid, trials, "probe", (steps,))


def run_probe_grid(grid: SweepSpec, *, out: str, options: StorageOptions | None = None, steps: int = 0,
                   address: str | None = None, sweep_id: str | None = None, gpus_per_cell: float = 0.0,
                   echo=print) -> dict:
    """Fan a grid out as Ray tasks; print a line per finished cell and a summary."""
    import ray

    trials = grid.trials()
    store = Store(out, options)
    store.check()  # fail fast on a bad bucket or credentials, before Ray starts
    sweep_id = sweep_id or probe_sweep_id(grid, trials, steps)
    write_sweep_manifest(store, sweep_id, grid, trials, kind="probe", steps=steps)
    t0 = time.perf_counter()
    start_ray(address)
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_cell, max_retries=1)(probe_trial)
    # Ray no longer hides GPUs from tasks that asked for none: pick the device explicitly.
    device = "cuda" if gpus_per_cell > 0 else "cpu"
    pending = {task.remote(t, steps=steps, store=store, sweep_id=sweep_id, device=device): t for t in trials}
    results, failures = [], []
    echo(f"probe {grid.name}: {len(trials)} cells -> {store.url_of(sweep_id)}")
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        trial = pending.pop(done[0])
        label = trial_label(len(results) + len(failures) + 1, len(trials), trial)
        try:
            r = ray.get(done[0])
        except Exception as e:  # a failed cell is reported, the others go on
            failures.append({"trial_id": trial.trial_id, "error": f"{type(e).__name__}: {e}".splitlines()[0]})
            echo(f"{label} FAILED {failures[-1]['error']}")
            continue
        results.append(r)
        echo(f"{label} {r['status']:9s} loss {r['loss0']:.3g}  signal rms "
             f"first {r['signal_rms_first']:.2e} last {r['signal_rms_last']:.2e}  {r['wall_s']:.1f}s")
    wall = time.perf_counter() - t0
    summary = {"sweep_id": sweep_id, "url": store.url_of(sweep_id), "cells": len(trials),
               "completed": sum(r["status"] == "completed" for r in results),
               "diverged": sum(r["status"] == "diverged" for r in results), "failed": len(failures),
               "rows": sum(r["rows"] for r in results), "wall_s": wall, "failures": failures}
    echo(f"done: {summary['completed']} completed, {summary['diverged']} diverged, {summary['failed']} failed; "
         f"{summary['rows']} rows in {wall:.1f}s -> {summary['url']}/layer_stats")
    return summary
