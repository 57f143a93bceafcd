"""The sweep service on a real local Ray: DDP equality, restart from checkpoint, --resume.

One Ray instance for the module (2 CPUs).  Trials are tiny (width 4, 2-4 steps) but
real: Ray Tune fans them out, each is a Ray Train TorchTrainer with gloo DDP ranks.
"""
import json
import os

import numpy as np
import pandas as pd
import pytest

from vgrad.grid import SweepSpec
from vgrad.spec import TrialSpec
from vgrad.store import StoreError
from vgrad.sweep import Resources, run_sweep
from vgrad.train import CRASH_ENV

# float64 and no batch norm: DDP normalizes each rank's half batch by its own statistics,
# so only without BN is a 2-rank step the same computation as a 1-rank step.
TINY = {"depth": 8, "width": 4, "input": "cifar", "norm": "none", "activation": "tanh", "dtype": "float64",
        "batch_size": 16, "num_train": 64, "num_test": 32, "steps_per_epoch": 4, "epochs": 1, "probe_every": 1,
        "lr": 0.05, "lr_schedule": "constant"}
RESTART = {**TINY, "epochs": 3, "steps_per_epoch": 2, "dtype": "float32", "norm": "batchnorm"}
RESUME = {**RESTART, "epochs": 2}


def grid(name, fixed, seeds=(0,)):
    return SweepSpec(name=name, axes=(), fixed=tuple(fixed.items()), seeds=tuple(seeds))


RESTART_ID = TrialSpec.from_flat({**RESTART, "seed": 0}).trial_id
RESUME_FAILING_ID = TrialSpec.from_flat({**RESUME, "seed": 1}).trial_id


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {CRASH_ENV: f"{RESTART_ID}:0,{RESUME_FAILING_ID}:0"}})
    yield
    ray.shutdown()


def read(root, sweep_id, table):
    return pd.read_parquet(os.path.join(root, sweep_id, table))


def manifest(root, sweep_id, trial_id):
    with open(os.path.join(root, sweep_id, "trials", trial_id, "trial.json")) as f:
        return json.load(f)


def test_two_ddp_workers_match_one(ray_session, tmp_path):
    root = str(tmp_path)
    g = grid("ddp", TINY)
    tid = g.trials()[0].trial_id
    for w in (1, 2):
        s = run_sweep(g, storage=root, resources=Resources(workers_per_trial=w), sweep_id=f"w{w}", echo=lambda *_: None)
        assert s["completed"] == 1 and s["failed"] == 0
    ranks = manifest(root, "w2", tid)["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and len({r["pid"] for r in ranks}) == 2  # two real processes
    assert len(manifest(root, "w1", tid)["ranks"]) == 1

    m1, m2 = (read(root, f"w{w}", "train_metrics").sort_values(["split", "step"]) for w in (1, 2))
    # Stated tolerance: 1e-9 relative in float64 (the ranks' gradient all-reduce sums in another order).
    np.testing.assert_allclose(m2.loss.to_numpy(), m1.loss.to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(m2.accuracy.to_numpy(), m1.accuracy.to_numpy(), rtol=0)
    l1, l2 = (read(root, f"w{w}", "layer_stats").sort_values(["step", "layer_index"]) for w in (1, 2))
    assert len(l1) == len(l2) == 4 * 8 and sorted(l1.step.unique()) == [0, 1, 2, 3]
    for col in ("loss", "wgrad_norm", "signal_rms", "act_rms", "weight_norm", "act_frac_saturated"):
        np.testing.assert_allclose(l2[col].to_numpy(), l1[col].to_numpy(), rtol=1e-9, err_msg=col)


def test_restart_resumes_from_last_checkpoint(ray_session, tmp_path):
    root = str(tmp_path)
    s = run_sweep(grid("restart", RESTART), storage=root, resources=Resources(max_failures=2), sweep_id="r",
                  echo=lambda *_: None)
    assert s["completed"] == 1 and s["failed"] == 0
    m = manifest(root, "r", RESTART_ID)
    assert m["status"] == "completed" and m["attempts"] == 2
    tm = read(root, "r", "train_metrics")
    # epoch 0 ran in attempt 0 (then the injected crash); epochs 1-2 resumed from its checkpoint
    assert tm.groupby("epoch").attempt.unique().map(list).to_dict() == {0: [0], 1: [1], 2: [1]}
    assert len(tm) == 3 * 2 and not tm.duplicated(["epoch", "split"]).any()
    ls = read(root, "r", "layer_stats")
    assert sorted(ls.step.unique()) == list(range(6))
    assert (ls[ls.step >= 2].attempt == 1).all() and (ls[ls.step < 2].attempt == 0).all()

    # The same sweep again: refused without --resume (it would mix old results with a new
    # sweep.json); with --resume nothing retrains and no file changes.
    with pytest.raises(StoreError, match="already exists .* pass --resume"):
        run_sweep(grid("restart", RESTART), storage=root, resources=Resources(), sweep_id="r", echo=lambda *_: None)
    parts = sorted((tmp_path / "r").glob("*/trial_id=*/part-*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in parts]
    again = run_sweep(grid("restart", RESTART), storage=root, resources=Resources(), sweep_id="r", resume=True,
                      echo=lambda *_: None)
    assert again["completed"] == 1
    assert [p.stat().st_mtime_ns for p in parts] == stamps and len(parts) == 6
    m = manifest(root, "r", RESTART_ID)
    assert m["status"] == "completed" and m["last"]["epoch"] == 2


def test_resume_runs_only_unfinished_trials(ray_session, tmp_path):
    root = str(tmp_path)
    g = grid("resume", RESUME, seeds=(0, 1))
    ok_id = g.trials()[0].trial_id
    first = run_sweep(g, storage=root, resources=Resources(max_failures=0), sweep_id="s", max_concurrent=1,
                      echo=lambda *_: None)
    assert first["completed"] == 1 and first["failed"] == 1  # the injected crash, no retries allowed
    ok_json = os.path.join(root, "s", "trials", ok_id, "trial.json")
    before = os.stat(ok_json).st_mtime_ns
    failed = manifest(root, "s", RESUME_FAILING_ID)
    assert failed["status"] == "failed" and "injected failure" in failed["error"]

    lines = []
    second = run_sweep(g, storage=root, resources=Resources(max_failures=0), sweep_id="s", max_concurrent=1,
                       resume=True, echo=lines.append)
    assert any("resuming" in line for line in lines)
    assert second["completed"] == 2 and second["failed"] == 0
    assert os.stat(ok_json).st_mtime_ns == before  # the finished trial did not run again
    m = manifest(root, "s", RESUME_FAILING_ID)
    assert m["status"] == "completed" and m["attempts"] == 2
    tm = read(root, "s", "train_metrics")
    assert set(tm[tm.trial_id == RESUME_FAILING_ID].epoch) == {0, 1}
