"""`vgrad` command line.  Bad flags, files or values exit 2 with a message that names them.

    vgrad grid list | show NAME|FILE | validate FILE
    vgrad spec  [--depth 56 --activation sigmoid ...]   canonical JSON + trial_id
    vgrad model [--depth 56 --input imagenet ...]       layout, parameters, layer table
    vgrad probe --grid NAME|FILE --out URL [...]        gradient profiles at init, as Ray tasks
    vgrad sweep --grid NAME|FILE --storage URL [...]    train a grid: Tune over Ray Train DDP trials
    vgrad run   [--depth 20 ...]                        one trial in-process, for debugging
"""
from __future__ import annotations

import argparse
import json
import sys

from .grid import load_grid, named_grids
from .spec import FIELDS, SpecError, TrialSpec, field_help


def _add_spec_flags(parser: argparse.ArgumentParser, keys=None) -> None:
    """One --flag per flat spec field (dashes for underscores), validated later in one pass."""
    group = parser.add_argument_group("trial settings (see docs/spec.md)")
    for key in FIELDS:
        if keys is None or key in keys:
            group.add_argument("--" + key.replace("_", "-"), dest="spec_" + key, metavar="V",
                               help=field_help(key).replace("%", "%%"))


def _flags_to_flat(args: argparse.Namespace) -> dict:
    return {k[5:]: v for k, v in vars(args).items() if k.startswith("spec_") and v is not None}


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError([f"--set {item!r}: expected KEY=VALUE"])
        out[key.strip()] = value.strip()
    return out


def _table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def cmd_grid(args) -> int:
    if args.grid_cmd == "list":
        for name in named_grids():
            g = load_grid(name)
            print(f"{name:10s} {len(g):5d} trials  {g.description.split('. ')[0].strip()}")
        return 0
    grid = load_grid(args.grid, seeds=getattr(args, "seeds", None), overrides=_parse_sets(getattr(args, "set", None)))
    trials = grid.trials()
    if args.grid_cmd == "validate":
        print(f"{args.grid}: valid, {len(trials)} trials")
        return 0
    if args.format == "json":
        print(json.dumps({"grid": grid.to_dict(), "trials": [
            {"trial_id": t.trial_id, **t.to_flat()} for t in trials]}, indent=1))
        return 0
    axes = [k for k, _ in grid.axes] + ["seed"]
    print(f"grid {grid.name}: {len(trials)} trials = "
          + "".join(f"{len(v)} {k} x " for k, v in grid.axes) + f"{len(grid.seeds)} seeds")
    if grid.fixed:
        print("fixed: " + ", ".join(f"{k}={v}" for k, v in grid.fixed))
    shown = trials if args.limit is None else trials[: args.limit]
    flat = [t.to_flat() for t in shown]
    print(_table([[t.trial_id] + [f[a] for a in axes] for t, f in zip(shown, flat)], ["trial_id"] + axes))
    if len(shown) < len(trials):
        print(f"... {len(trials) - len(shown)} more (--limit)")
    return 0


def cmd_spec(args) -> int:
    trial = TrialSpec.from_flat(_flags_to_flat(args))
    print(json.dumps({"trial_id": trial.trial_id, **trial.to_dict()}, indent=1, sort_keys=True))
    return 0


def cmd_model(args) -> int:
    trial = TrialSpec.from_flat(_flags_to_flat(args))
    from .models import build_model, count_params  # torch import: only here

    net = build_model(trial.model, seed=trial.seed)
    lay = net.layout
    print(f"{trial.model.arch} {trial.model.input} depth {trial.model.depth}: {lay.block} blocks "
          f"{list(lay.stages)}, {lay.stem_extra} extra stem convs, {count_params(net):,} parameters")
    print(_table([[i.index, i.name, i.kind, i.fan_in, i.fan_out, i.numel] for i in net.layers],
                 ["layer_index", "layer_name", "layer_kind", "fan_in", "fan_out", "numel"]))
    return 0


def cmd_probe(args) -> int:
    from .probe_run import run_probe_grid
    from .store import StorageOptions, StoreError

    if args.steps < 0 or (args.batch is not None and args.batch < 1) or args.gpus_per_cell < 0:
        print("vgrad probe: error: --steps must be >= 0, --batch >= 1, --gpus-per-cell >= 0", file=sys.stderr)
        return 2
    overrides = _parse_sets(args.set)
    if args.dtype:
        overrides["dtype"] = args.dtype
    if args.batch:
        overrides["batch_size"] = args.batch
    grid = load_grid(args.grid, seeds=args.seeds, overrides=overrides)
    options = StorageOptions(endpoint_url=args.endpoint_url, region=args.region)
    try:
        summary = run_probe_grid(grid, out=args.out, options=options, steps=args.steps, address=args.address,
                                 sweep_id=args.sweep_id, gpus_per_cell=args.gpus_per_cell)
    except StoreError as e:
        print(f"vgrad probe: error: {e}", file=sys.stderr)
        return 2
    return 1 if summary["failed"] else 0


def cmd_sweep(args) -> int:
    from .store import StorageOptions, StoreError
    from .sweep import Resources, run_sweep

    grid = load_grid(args.grid, seeds=args.seeds, overrides=_parse_sets(args.set))
    try:
        resources = Resources(args.workers_per_trial, args.cpus_per_worker, args.gpus_per_worker, args.max_failures)
    except ValueError as e:
        print(f"vgrad sweep: error: {e}", file=sys.stderr)
        return 2
    try:
        summary = run_sweep(grid, storage=args.storage, resources=resources, max_concurrent=args.max_concurrent,
                            options=StorageOptions(endpoint_url=args.endpoint_url, region=args.region),
                            resume=args.resume, address=args.address, sweep_id=args.sweep_id)
    except StoreError as e:
        print(f"vgrad sweep: error: {e}", file=sys.stderr)
        return 2
    return 1 if summary["failed"] else 0


def cmd_run(args) -> int:
    import torch

    from .store import StorageOptions, StoreError, Store
    from .train import Trial

    trial = TrialSpec.from_flat(_flags_to_flat(args))
    try:
        store = Store(args.storage, StorageOptions(endpoint_url=args.endpoint_url, region=args.region))
        store.check()
    except StoreError as e:
        print(f"vgrad run: error: {e}", file=sys.stderr)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    print(f"run {trial.trial_id} on {device} -> {store.url_of(args.sweep_id)}")
    summary = Trial(trial, store=store, sweep_id=args.sweep_id, device=device).run(
        lambda m, state: m and print(f"epoch {m['epoch']}: test loss {m['test_loss']:.4g} "
                                     f"acc {m['test_accuracy']:.3f}{' DIVERGED' if m['diverged'] else ''}"))
    print(json.dumps(summary))
    return 0


def _add_storage_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, "
                   "else AWS). Credentials come from the AWS chain (env, ~/.aws, instance profile), never flags")
    p.add_argument("--region", help="S3 region")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vgrad", description=(
        "Reproduce the study of vanishing gradients in deep CNNs: grids of trials, "
        "per-layer gradient statistics, figures and a claims table."))
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    g = sub.add_parser("grid", help="list, show or validate grids (named or YAML files)")
    gsub = g.add_subparsers(dest="grid_cmd", required=True, metavar="ACTION")
    gsub.add_parser("list", help="the named grids packaged with vgrad")
    show = gsub.add_parser("show", help="count and table of a grid's trials")
    show.add_argument("grid", help=f"a named grid ({', '.join(named_grids())}) or a YAML file")
    show.add_argument("--seeds", type=int, help="use seeds 0..N-1 instead of the grid's seeds")
    show.add_argument("--set", action="append", metavar="KEY=VALUE", help="pin a setting (repeatable)")
    show.add_argument("--limit", type=int, help="show only the first N trials")
    show.add_argument("--format", choices=("table", "json"), default="table")
    val = gsub.add_parser("validate", help="check a grid file; every problem is listed")
    val.add_argument("grid", help="a YAML grid file (or a named grid)")

    pr = sub.add_parser("probe", help="gradient profiles at init (+ K steps) for every cell of a grid, as Ray tasks",
                        description="Probe every cell of a grid at initialization (and optionally its first K "
                        "SGD steps) on synthetic data, one Ray task per cell, each writing its own Parquet.")
    pr.add_argument("--grid", required=True, help=f"a named grid ({', '.join(named_grids())}) or a YAML file")
    pr.add_argument("--out", default="./results", help="root URL: a local folder or s3://bucket/prefix (default ./results)")
    pr.add_argument("--seeds", type=int, help="use seeds 0..N-1 instead of the grid's seeds")
    pr.add_argument("--dtype", choices=("float32", "float64"), help="compute dtype (float64 sees below 1e-38)")
    pr.add_argument("--batch", type=int, help="batch size of the probe (sets batch_size)")
    pr.add_argument("--steps", type=int, default=0, help="also probe the first K SGD steps (default 0: init only)")
    pr.add_argument("--set", action="append", metavar="KEY=VALUE", help="pin any setting (repeatable)")
    pr.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    pr.add_argument("--sweep-id", help="name of the output folder (default: grid name + hash of its trials)")
    pr.add_argument("--gpus-per-cell", type=float, default=0.0, help="GPUs per cell task (fractions pack cells)")
    _add_storage_flags(pr)

    sw = sub.add_parser("sweep", help="train every trial of a grid: Ray Tune over Ray Train DDP trials",
                        description="One Ray Tune trial per grid cell, each a Ray Train TorchTrainer with "
                        "N DDP workers recording the probe into Parquet.")
    sw.add_argument("--grid", required=True, help=f"a named grid ({', '.join(named_grids())}) or a YAML file")
    sw.add_argument("--storage", default="./results", help="root URL for our Parquet and Ray's files (default ./results)")
    sw.add_argument("--workers-per-trial", type=int, default=1, help="DDP ranks per trial (default 1)")
    sw.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per rank (default 1)")
    sw.add_argument("--gpus-per-worker", type=float, default=0.0,
                    help="GPUs per rank; 0 trains on CPU with gloo, >0 on GPU with nccl; a fraction packs 1-worker trials")
    sw.add_argument("--max-concurrent", type=int, help="trials at a time (default: as many as the cluster fits)")
    sw.add_argument("--max-failures", type=int, default=2, help="restarts per trial from its last checkpoint")
    sw.add_argument("--resume", action="store_true", help="restore an interrupted sweep; run only unfinished trials")
    sw.add_argument("--seeds", type=int, help="use seeds 0..N-1 instead of the grid's seeds")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help="pin any setting (repeatable)")
    sw.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    sw.add_argument("--sweep-id", help="name of the output folder (default: grid name + hash of its trials)")
    _add_storage_flags(sw)

    rn = sub.add_parser("run", help="train one trial in-process (no Ray), for debugging")
    rn.add_argument("--storage", default="./results", help="root URL (default ./results)")
    rn.add_argument("--sweep-id", default="run", help="output folder name (default run)")
    rn.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    _add_storage_flags(rn)
    _add_spec_flags(rn)

    s = sub.add_parser("spec", help="print the canonical TrialSpec JSON and trial_id for flags")
    _add_spec_flags(s)
    m = sub.add_parser("model", help="build a model from flags: layout, parameters, layer table")
    _add_spec_flags(m, keys=[k for k, (g, _) in FIELDS.items() if g == "model"] + ["seed"])
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"grid": cmd_grid, "spec": cmd_spec, "model": cmd_model, "probe": cmd_probe,
                "sweep": cmd_sweep, "run": cmd_run}
    try:
        return handlers[args.cmd](args)
    except SpecError as e:
        print(f"vgrad {args.cmd}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vgrad grid show paper | head`
        sys.stderr.close()
        return 0


def job_main(command: str) -> int:
    """Entry for jobs/*.py under `ray job submit`: connect to the job's own cluster."""
    args = sys.argv[1:]
    if "--address" not in args:
        args += ["--address", "auto"]
    return main([command, *args])


if __name__ == "__main__":
    sys.exit(main())
