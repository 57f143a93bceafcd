"""What `vgrad probe` and `vgrad sweep` share: sweep ids, manifests, Ray start, progress lines."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone

from .grid import SweepSpec
from .spec import TrialSpec
from .store import Store


def sweep_id(grid: SweepSpec, trials: list[TrialSpec], kind: str = "", extra: tuple = ()) -> str:
    """Deterministic `<grid>[-<kind>]-<hash of extra + trial ids>`: the same run again
    rewrites the same files."""
    h = hashlib.sha256(json.dumps([*extra, *(t.trial_id for t in trials)]).encode()).hexdigest()[:8]
    return f"{grid.name}-{kind + '-' if kind else ''}{h}"


def hardware(device) -> dict:
    import torch

    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "device": str(device), "cpus": os.cpu_count()}
    if str(device).startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def git_sha() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                           cwd=os.path.dirname(os.path.abspath(__file__)))
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_sweep_manifest(store: Store, sweep_id: str, grid: SweepSpec, trials: list[TrialSpec], **extra) -> None:
    from . import __version__

    store.write_json(f"{sweep_id}/sweep.json", {
        "sweep_id": sweep_id, "grid": grid.to_dict(), "trial_ids": [t.trial_id for t in trials],
        "vgrad_version": __version__, "git_sha": git_sha(), "python": sys.version.split()[0],
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra})


def start_ray(address: str | None) -> None:
    """Connect to ``address``, or start a local Ray (no dashboard) when it is None."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, **({"include_dashboard": False} if address is None else {}))


def trial_label(n: int, total: int, trial: TrialSpec) -> str:
    """The head of a progress line: `[  3/120] <trial_id> <axes>`."""
    m = trial.model
    return (f"[{n:>4d}/{total}] {trial.trial_id} {m.arch:8s} {m.input:8s} d={m.depth:<3d} {m.activation:7s} "
            f"{m.norm:9s} {m.init:10s} s={trial.seed}")
