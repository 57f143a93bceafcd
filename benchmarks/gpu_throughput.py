"""Training throughput on one GPU: vgrad's loop against a plain PyTorch loop, side by side.

    python3 benchmarks/gpu_throughput.py [--steps 300] [--batch 128] [--json OUT]
    python3 benchmarks/gpu_throughput.py --allow-cpu --steps 4 --width 4      # smoke check, no GPU

Model: residual-56 CIFAR net (width 16, relu, batch norm, He init) from vgrad.build_model,
float32, batch 128, synthetic CIFAR-shaped data held on the GPU, random crop (4-pixel
padding) + horizontal flip on the GPU, SGD lr 0.1 momentum 0.9 weight decay 1e-4.

Variants, in this order, in one process (then Ray in a child process):
  (a) plain     a hand-written PyTorch loop: same model, same data tensor on the device,
                crop+flip drawn on the device, no probe, no host syncs inside the timed
                region; images/s = timed steps x batch / wall time between two
                torch.cuda.synchronize().  Run before and after (b), (c); the baseline is
                the mean of the two runs.
  (b) vgrad     vgrad.train.Trial(...).run() with probe_every=0 (step 0 is still probed,
                inside the skipped first group)
  (c) vgrad     the same with probe_every=10 (one probed step per 10-step group)
                (b), (c): images/s = median of the train_metrics rows (one per GROUP
                steps, as the trial wrote them to Parquet in a temp folder), first row
                skipped as warm-up
  (d) Ray       if Ray is importable and a GPU is present: the same trial (probe_every
                --ray-probe-every) through vgrad.sweep.run_sweep on a local Ray limited
                to one GPU: 1 trial x 1 worker x 1 GPU, then 4 trials (seeds 0-3) x 1 worker
                at gpus_per_worker=0.25 packed on that GPU; per-trial median images/s from
                train_metrics and their sum (the aggregate; the overlap of the 4 trials'
                training intervals is printed so a sum over non-overlapping runs shows).
Peak GPU memory: torch.cuda.max_memory_allocated, reset between in-process variants; it
includes the resident data set (train split; the trials also hold their test split).
Targets: (b)/(a) >= 0.95 and (c)/(a) >= 0.92; PASS/MISS printed per target.
Exit 2 without a CUDA device unless --allow-cpu (tiny defaults, no Ray: a smoke check).
"""
from __future__ import annotations

import argparse
import gc
import glob
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGETS = (("b", "vgrad/plain without probe", 0.95), ("c", "vgrad/plain with probe (every 10 steps)", 0.92))
PAD = 4  # as vgrad.batches: 4-pixel zero padding, random 32x32 crop, horizontal flip
LABELS = {
    "a": "(a) plain PyTorch loop",
    "b": "(b) vgrad Trial.run, no probe",
    "c": "(c) vgrad Trial.run, probe every 10",
    "d1": "(d) Ray run_sweep, 1 trial x 1 worker x 1 GPU",
    "d4": "(d) Ray run_sweep, 4 trials at 0.25 GPU",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- settings --------------------------------------------------------------------------------
def trial_flat(args, probe_every: int) -> dict:
    """The TrialSpec settings of every vgrad variant (seed is set per trial)."""
    return {"arch": "residual", "depth": args.depth, "width": args.width, "activation": "relu",
            "norm": "batchnorm", "init": "he", "input": "cifar", "dataset": "synthetic", "dtype": "float32",
            "batch_size": args.batch, "num_train": args.num_train, "num_test": args.num_test,
            "epochs": 1, "steps_per_epoch": args.trial_steps, "lr": 0.1, "momentum": 0.9,
            "weight_decay": 1e-4, "lr_schedule": "step", "probe_every": probe_every}


def env_info(device: str) -> dict:
    import torch

    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "device": device, "cpus": os.cpu_count(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "ray": None}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cudnn"] = torch.backends.cudnn.version()
    if importlib.util.find_spec("ray") is not None:
        try:
            from importlib.metadata import version

            info["ray"] = version("ray")
        except Exception:  # noqa: BLE001  (installed without metadata)
            info["ray"] = "importable"
    return info


# -- measurement helpers ---------------------------------------------------------------------
def fresh_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def read_train_metrics(root: str, sweep_id: str) -> dict[str, list[dict]]:
    """trial_id -> its train_metrics rows (highest attempt per (step, split)), by step."""
    import pyarrow.parquet as pq

    out: dict[str, list[dict]] = {}
    for path in sorted(glob.glob(os.path.join(root, sweep_id, "train_metrics", "trial_id=*", "*.parquet"))):
        for row in pq.read_table(path).to_pylist():  # one file at a time: no partition inference
            out.setdefault(str(row["trial_id"]), []).append({**row, "_file": path})
    for tid, rows in out.items():
        best = {}
        for r in rows:
            key = (r["step"], r["split"])
            if key not in best or r["attempt"] > best[key]["attempt"]:
                best[key] = r
        out[tid] = sorted(best.values(), key=lambda r: (r["split"] != "train", r["step"]))
    return out


def steady_state(rows: list[dict], batch: int) -> dict:
    """Median images/s of the train groups after the first (warm-up) group."""
    train = [r for r in rows if r["split"] == "train"]
    timed = train[1:]
    if not timed:
        return {"images_per_s": None, "groups": len(train), "note": "no group after the warm-up group"}
    ips = [r["images_per_s"] for r in timed]
    steps = sum(r["steps"] for r in timed)
    secs = sum(r["steps"] * r["step_time_s"] for r in timed)
    test = [r for r in rows if r["split"] == "test"]
    return {"images_per_s": statistics.median(ips), "images_per_s_mean_over_time": steps * batch / secs,
            "groups_timed": len(timed), "steps_timed": steps, "group_images_per_s": ips,
            "first_group_images_per_s": train[0]["images_per_s"], "train_seconds": sum(
                r["steps"] * r["step_time_s"] for r in train),
            "eval_seconds": test[0]["step_time_s"] if test else 0.0,
            "final_train_loss": train[-1]["loss"]}


# -- (a) the plain PyTorch loop --------------------------------------------------------------
def run_plain(args, device) -> dict:
    import torch
    from torch import nn

    from vgrad import TrialSpec, build_model
    from vgrad.data import synthetic_for

    trial = TrialSpec.from_flat({**trial_flat(args, 0), "seed": 0})
    t_setup = time.perf_counter()
    xs, ys = synthetic_for(trial, "train").batch(range(trial.data.num_train))
    x_all, y_all = xs.to(device, torch.float32), ys.to(device)
    del xs, ys
    net = build_model(trial.model, seed=0).to(device=device, dtype=torch.float32).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    B, n = args.batch, x_all.shape[0]
    per_epoch = n // B
    h = w = x_all.shape[-1]
    ar_b = torch.arange(B, device=device)[:, None, None, None]
    ar_c = torch.arange(3, device=device)[None, :, None, None]
    ar_h, ar_w = torch.arange(h, device=device), torch.arange(w, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    state = {"perm": None, "k": per_epoch}

    def batch():
        if state["k"] >= per_epoch:  # a new epoch: a permutation drawn on the device
            state["perm"], state["k"] = torch.randperm(n, device=device, generator=gen), 0
        idx = state["perm"][state["k"] * B:(state["k"] + 1) * B]
        state["k"] += 1
        x, y = x_all[idx], y_all[idx]
        off = torch.randint(0, 2 * PAD + 1, (B, 2), device=device, generator=gen)
        flip = torch.rand(B, device=device, generator=gen) < 0.5
        xp = nn.functional.pad(x, (PAD, PAD, PAD, PAD))
        rows = (off[:, 0, None] + ar_h)[:, None, :, None]
        cols = (off[:, 1, None] + ar_w)[:, None, None, :]
        out = xp[ar_b, ar_c, rows, cols]
        return torch.where(flip[:, None, None, None], out.flip(3), out), y

    def step():
        x, y = batch()
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    setup_s = time.perf_counter() - t_setup
    for _ in range(args.warmup):
        step()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    dt = time.perf_counter() - t0
    return {"images_per_s": args.steps * B / dt, "steps_timed": args.steps, "seconds_timed": dt,
            "warmup_steps": args.warmup, "setup_s": setup_s, "final_train_loss": float(loss.detach())}


# -- (b), (c) vgrad's Trial in-process -------------------------------------------------------
def run_trial(args, device, probe_every: int, root: str, sweep_id: str) -> dict:
    from vgrad import TrialSpec
    from vgrad.store import Store
    from vgrad.train import Trial

    spec = TrialSpec.from_flat({**trial_flat(args, probe_every), "seed": 0})
    t0 = time.perf_counter()
    trial = Trial(spec, store=Store(root), sweep_id=sweep_id, device=str(device))
    setup_s = time.perf_counter() - t0
    summary = trial.run()
    del trial
    rows = read_train_metrics(root, sweep_id).get(spec.trial_id, [])
    return {"trial_id": spec.trial_id, "status": summary["status"], "setup_s": setup_s,
            "probe_every": probe_every, **steady_state(rows, args.batch)}


# -- (d) Ray, in a child process -------------------------------------------------------------
def ray_child(params_path: str) -> int:
    """Runs in a subprocess: a local Ray limited to one GPU, then the two sweeps."""
    with open(params_path) as f:
        p = json.load(f)
    result: dict = {"sweeps": {}}

    def save():
        with open(p["result_path"], "w") as f:
            json.dump(result, f, indent=1)

    rc = 0
    try:
        import ray

        from vgrad.grid import SweepSpec
        from vgrad.sweep import Resources, run_sweep

        ray.init(address="local", num_gpus=1, include_dashboard=False, log_to_driver=False)  # a new local Ray
        result["cluster_resources"] = ray.cluster_resources()
        save()
        for sweep_id, seeds, gpus in (("ray-1gpu", [0], 1.0), ("ray-packed", [0, 1, 2, 3], 0.25)):
            grid = SweepSpec(name=sweep_id, axes=(), fixed=tuple(p["flat"].items()), seeds=tuple(seeds))
            cpus = min(1.0, (os.cpu_count() or 1) / len(seeds))
            t0 = time.perf_counter()
            summary = run_sweep(grid, storage=p["root"], sweep_id=sweep_id, max_concurrent=len(seeds),
                                resources=Resources(workers_per_trial=1, cpus_per_worker=cpus,
                                                    gpus_per_worker=gpus, max_failures=0),
                                echo=lambda m: log(f"  [ray] {m}"))
            result["sweeps"][sweep_id] = {**summary, "wall_s": time.perf_counter() - t0, "cpus_per_worker": cpus,
                                          "gpus_per_worker": gpus, "trial_ids": [t.trial_id for t in grid.trials()]}
            save()
    except BaseException as e:  # noqa: BLE001  (KeyboardInterrupt from the parent's timeout too)
        result["error"] = f"{type(e).__name__}: {e}"
        rc = 1
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001
            pass
        save()
    return rc


def ray_unavailable() -> str | None:
    for mod in ("ray", "ray.tune", "ray.train"):
        try:
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is not installed"
        except (ImportError, ValueError) as e:
            return f"{mod} cannot be imported ({type(e).__name__}: {e})"
    return None


def error_tails(root: str, sweep_id: str, limit: int = 2000) -> list[str]:
    tails = []
    for path in sorted(glob.glob(os.path.join(root, sweep_id, "ray", "**", "error.txt"), recursive=True))[:2]:
        with open(path, errors="replace") as f:
            tails.append(f"{path}:\n{f.read()[-limit:]}")
    return tails


def training_interval(rows: list[dict]) -> tuple[float, float]:
    """(start, end) wall-clock of a trial's training steps, from its file's mtime: the
    train_metrics file is written right after the end-of-epoch evaluation."""
    end = os.path.getmtime(rows[0]["_file"])
    test = [r for r in rows if r["split"] == "test"]
    end -= test[0]["step_time_s"] if test else 0.0
    dur = sum(r["steps"] * r["step_time_s"] for r in rows if r["split"] == "train")
    return end - dur, end


def stop_group(proc: subprocess.Popen) -> int:
    """SIGINT to the child's process group (its finally: ray.shutdown(), a partial result),
    SIGKILL after 15 s.  The group is the one this script started (start_new_session)."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()
    except ProcessLookupError:
        return proc.wait()


def run_ray(args, device, root: str) -> dict:
    import torch

    params = {"flat": trial_flat(args, args.ray_probe_every), "root": root,
              "result_path": os.path.join(root, "ray-result.json")}
    params_path = os.path.join(root, "ray-params.json")
    with open(params_path, "w") as f:
        json.dump(params, f)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network on the GPU machine
    env.pop("RAY_ADDRESS", None)  # always a fresh local Ray on this GPU, never a cluster this runs inside
    idx = device.index or 0
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible:
        parts = [v for v in visible.split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = parts[idx] if idx < len(parts) else parts[0]
    else:
        env["CUDA_VISIBLE_DEVICES"] = str(idx)
    torch.cuda.empty_cache()  # give the GPU back to the Ray workers (this process keeps its context)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--ray-child", params_path],
                            env=env, start_new_session=True)
    timed_out = False
    try:
        rc = proc.wait(timeout=args.ray_timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as e:
        timed_out = isinstance(e, subprocess.TimeoutExpired)
        log(f"Ray variants: {'over --ray-timeout %ss' % args.ray_timeout if timed_out else 'interrupted'}, "
            "stopping the Ray child")
        rc = stop_group(proc)
        if not timed_out:
            raise
    out = {"rc": rc, "timed_out": timed_out, "wall_s": time.perf_counter() - t0}
    try:
        with open(params["result_path"]) as f:
            out.update(json.load(f))
    except (OSError, ValueError) as e:
        out["error"] = out.get("error") or f"no result from the Ray child ({type(e).__name__})"
    return summarize_ray(out, root, args.batch)


def summarize_ray(out: dict, root: str, batch: int) -> dict:
    """Per-trial steady state of each Ray sweep from its train_metrics; the packed sweep's sum."""
    for sweep_id, s in out.get("sweeps", {}).items():
        rows = read_train_metrics(root, sweep_id)
        s["per_trial"] = {tid: {"seed": i, **steady_state(rows.get(tid, []), batch)}
                          if rows.get(tid) else {"seed": i, "images_per_s": None, "note": "no train_metrics"}
                          for i, tid in enumerate(s["trial_ids"])}
        if s.get("failed"):
            s["errors"] = error_tails(root, sweep_id)
        done = [tid for tid in s["trial_ids"] if rows.get(tid) and s["per_trial"][tid]["images_per_s"]]
        if sweep_id == "ray-packed" and done:
            s["aggregate_images_per_s"] = sum(s["per_trial"][t]["images_per_s"] for t in done)
            spans = [training_interval(rows[t]) for t in done]
            durations = [e - b for b, e in spans]
            overlap = max(0.0, min(e for _, e in spans) - max(b for b, _ in spans))
            s["overlap_fraction"] = overlap / max(statistics.median(durations), 1e-9)
            images = sum(r["steps"] * batch for t in done for r in rows[t] if r["split"] == "train")
            s["aggregate_images_per_s_wall"] = images / max(max(e for _, e in spans) - min(b for b, _ in spans), 1e-9)
            s["trials_measured"] = len(done)
    return out


# -- report ----------------------------------------------------------------------------------
def fmt(v, spec=".0f") -> str:
    return "n/a" if v is None else format(v, spec)


def table(results: dict, base: float | None) -> tuple[list[str], list[dict]]:
    def ratio(v):
        return None if v is None or not base else v / base

    lines = ["| variant | images/s | ratio to (a) | peak GPU MiB |", "|---|---:|---:|---:|"]
    for key in ("a", "b", "c"):
        r = results.get(key)
        if r is None:
            continue
        v = r.get("images_per_s")
        lines.append(f"| {LABELS[key]} | {fmt(v)} | {fmt(ratio(v), '.3f')} | {fmt(r.get('peak_mib'))} |")
    ray = results.get("d")
    if ray and ray.get("sweeps"):
        s1 = ray["sweeps"].get("ray-1gpu")
        if s1:
            for t in s1["per_trial"].values():
                v = t.get("images_per_s")
                lines.append(f"| {LABELS['d1']} | {fmt(v)} | {fmt(ratio(v), '.3f')} | n/a |")
        s4 = ray["sweeps"].get("ray-packed")
        if s4:
            for t in s4["per_trial"].values():
                v = t.get("images_per_s")
                lines.append(f"| {LABELS['d4']}: seed {t['seed']} | {fmt(v)} | {fmt(ratio(v), '.3f')} | n/a |")
            v, ov = s4.get("aggregate_images_per_s"), s4.get("overlap_fraction")
            lines.append(f"| {LABELS['d4']}: aggregate (sum; overlap {fmt(ov and 100 * ov)}%) | {fmt(v)} | "
                         f"{fmt(ratio(v), '.3f')} | n/a |")
    checks = []
    for key, what, target in TARGETS:
        v = (results.get(key) or {}).get("images_per_s")
        r = ratio(v)
        checks.append({"variant": key, "what": what, "target": target, "ratio": r,
                       "result": "n/a" if r is None else ("PASS" if r >= target else "MISS")})
    return lines, checks


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, help="timed steps per variant (default 300; 4 with --allow-cpu)")
    p.add_argument("--batch", type=int, help="batch size (default 128; 16 with --allow-cpu)")
    p.add_argument("--width", type=int, default=16, help="base channels (default 16)")
    p.add_argument("--depth", type=int, default=56, help="depth of the residual CIFAR net (default 56)")
    p.add_argument("--warmup", type=int, help="untimed steps before (a) (default 30; 2 with --allow-cpu)")
    p.add_argument("--num-train", type=int, help="synthetic training images on the device "
                   "(default 50000, CIFAR-10's size, or more if the steps need it; just enough with --allow-cpu)")
    p.add_argument("--num-test", type=int, help="held-out images the trials evaluate once (default 2048; 64 on CPU)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:1 ... (default cuda)")
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU when no CUDA device is present "
                   "(tiny defaults, Ray variants skipped): a smoke check of this script")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray variants (d)")
    p.add_argument("--ray-probe-every", type=int, default=10, help="probe_every of the Ray trials (default 10, as (c))")
    p.add_argument("--ray-timeout", type=float, default=300, help="seconds for both Ray sweeps (default 300)")
    p.add_argument("--keep", metavar="DIR", help="write the trials' Parquet under DIR and keep it (default: a temp "
                   "folder, removed)")
    p.add_argument("--json", metavar="OUT", help="also write every number (per-group rows too) here")
    p.add_argument("--ray-child", metavar="PARAMS", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ray_child:
        return ray_child(args.ray_child)
    # `timeout` (gpu_check.sh) sends SIGTERM: unwind like Ctrl-C, so the Ray child is stopped too
    signal.signal(signal.SIGTERM, _interrupt)

    try:
        import torch
    except ImportError as e:
        print(f"gpu_throughput: error: torch cannot be imported ({e})", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    if not cuda and not args.allow_cpu:
        print("gpu_throughput: error: no CUDA device is present (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda}). This benchmark needs a GPU; "
              "--allow-cpu runs it on the CPU as a smoke check only.", file=sys.stderr)
        return 2
    on_cpu = not cuda
    device = torch.device("cpu" if on_cpu else args.device)
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        print(f"gpu_throughput: error: {args.device} does not exist ({torch.cuda.device_count()} CUDA devices)",
              file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)

    try:
        from vgrad.train import GROUP
        import_problem = None
    except Exception as e:  # noqa: BLE001  (a vgrad dependency missing here: every variant will say so)
        GROUP, import_problem = 10, f"vgrad.train cannot be imported ({type(e).__name__}: {e})"

    args.device = str(device)
    args.steps = args.steps if args.steps is not None else (4 if on_cpu else 300)
    args.batch = args.batch if args.batch is not None else (16 if on_cpu else 128)
    args.warmup = args.warmup if args.warmup is not None else (2 if on_cpu else 30)
    problems = [f"--{k} must be >= 1" for k in ("steps", "batch", "width") if getattr(args, k) < 1]
    problems += ["--warmup must be >= 0"] if args.warmup < 0 else []
    if problems:
        print("gpu_throughput: error: " + "; ".join(problems), file=sys.stderr)
        return 2
    # The trials: one warm-up group (skipped) + the timed steps, rounded up to whole groups.
    args.trial_steps = GROUP * (1 + math.ceil(args.steps / GROUP))
    need = max(args.trial_steps, args.warmup + args.steps) * args.batch
    args.num_train = args.num_train or (need if on_cpu else max(50_000, need))
    args.num_test = args.num_test or (64 if on_cpu else 2048)

    info = env_info(str(device))
    results: dict = {}
    notes: list[str] = [import_problem] if import_problem else []
    report = {"env": info, "args": {k: v for k, v in vars(args).items() if k != "ray_child"},
              "targets": [], "variants": results, "notes": notes}

    def save():
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1, default=str)

    root = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="vgrad-gpubench-")
    os.makedirs(root, exist_ok=True)
    log(f"device {device} ({info.get('gpu', 'CPU')}), torch {info['torch']}, CUDA {info['cuda']}, "
        f"ray {info['ray'] or 'not installed'}; residual-{args.depth} width {args.width} batch {args.batch}, "
        f"{args.steps} timed steps ({args.trial_steps} per trial), {args.num_train} resident images; results {root}")
    t_all = time.perf_counter()
    try:
        runs = [("a", "plain (before)", lambda: run_plain(args, device)),
                ("b", "vgrad no probe", lambda: run_trial(args, device, 0, root, "inproc-noprobe")),
                ("c", "vgrad probe every 10", lambda: run_trial(args, device, 10, root, "inproc-probe")),
                ("a2", "plain (after)", lambda: run_plain(args, device))]
        for key, name, fn in runs:
            fresh_memory(device)
            t0 = time.perf_counter()
            try:
                r = fn()
            except Exception as e:  # noqa: BLE001  (a missing vgrad dependency: report, go on)
                r = {"images_per_s": None, "error": f"{type(e).__name__}: {e}"}
                notes.append(f"{name}: failed: {r['error']}")
            r["peak_mib"] = peak_mib(device) if r.get("images_per_s") is not None else None
            r["wall_s"] = time.perf_counter() - t0
            results[key] = r
            log(f"{name}: {fmt(r.get('images_per_s'))} images/s, peak {fmt(r.get('peak_mib'))} MiB, "
                f"{r['wall_s']:.1f}s")
            save()
        a1, a2 = results["a"].get("images_per_s"), results.pop("a2").get("images_per_s")
        if a1 and a2:
            results["a"] = {**results["a"], "images_per_s_before": a1, "images_per_s_after": a2,
                            "images_per_s": (a1 + a2) / 2}
            if abs(a1 - a2) / max(a1, a2) > 0.03:
                notes.append(f"plain loop drifted {a1:.0f} -> {a2:.0f} images/s between its two runs (>3%): "
                             "clocks or a neighbour; rerun before trusting ratios")
        for key in ("b", "c"):
            if results[key].get("status") not in (None, "completed"):
                notes.append(f"{LABELS[key]}: trial {results[key]['status']}")

        why_not = "no GPU (--allow-cpu)" if on_cpu else ("--no-ray" if args.no_ray else ray_unavailable())
        if why_not:
            notes.append(f"(d) Ray variants skipped: {why_not}")
        else:
            fresh_memory(device)
            log("Ray variants: local Ray on one GPU (this takes a while to start)")
            results["d"] = d = run_ray(args, device, root)
            if d.get("error"):
                notes.append(f"(d) Ray: {d['error']}")
            if d.get("timed_out"):
                notes.append(f"(d) Ray: stopped at --ray-timeout {args.ray_timeout}s; rows missing where no trial finished")
            for sid, s in d.get("sweeps", {}).items():
                if s.get("failed"):
                    notes.append(f"(d) {sid}: {s['failed']} trial(s) failed; see the JSON's errors (--keep DIR keeps {sid}/ray)")
            s4 = d.get("sweeps", {}).get("ray-packed", {})
            if "overlap_fraction" in s4:
                notes.append(f"(d) packed trials: training intervals overlapped for {s4['overlap_fraction']:.0%} of a "
                             f"trial's training time; wall-clock aggregate {s4['aggregate_images_per_s_wall']:.0f} "
                             "images/s (all 4 trials' images / first start to last end)")
            notes.append(f"(d) trials use probe_every={args.ray_probe_every}; cpus_per_worker as in the JSON; "
                         "Ray rows report no peak memory (other processes)")
            save()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    base = results["a"].get("images_per_s")
    lines, checks = table(results, base)
    report["targets"] = checks
    report["wall_s"] = time.perf_counter() - t_all
    save()
    head = (f"GPU throughput: {info.get('gpu', 'CPU (smoke check, not a measurement)')}, torch {info['torch']}, "
            f"CUDA {info['cuda']}, Ray {info['ray'] or 'not installed'}\n"
            f"residual-{args.depth} CIFAR, width {args.width}, batch {args.batch}, relu, batch norm, He init, "
            f"float32, synthetic data resident on the device; {args.steps} timed steps per variant "
            f"(trials: {args.trial_steps} steps, first group of 10 skipped)\n")
    print(head)
    print("\n".join(lines))
    print("\nTargets (ratio to the plain loop (a)):")
    for c in checks:
        print(f"- {c['what']}: ({c['variant']})/(a) >= {c['target']:.2f}: "
              f"{fmt(c['ratio'], '.3f')} {c['result']}")
    if notes:
        print("\nNotes:")
        for n in notes:
            print(f"- {n}")
    print(f"\ntotal {report['wall_s']:.0f}s" + (f"; numbers in {args.json}" if args.json else ""))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f"gpu_throughput: interrupted ({e or 'Ctrl-C'}); numbers so far are in --json, if given",
              file=sys.stderr)
        sys.exit(130)
