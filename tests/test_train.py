"""The per-worker loop in-process (world size 1): divergence, schedules, `vgrad run`."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vgrad.spec import TrialSpec
from vgrad.store import Store
from vgrad.train import Trial, lr_factor

SMALL = {"depth": 8, "width": 4, "batch_size": 16, "num_train": 64, "num_test": 32, "steps_per_epoch": 4,
         "epochs": 2, "probe_every": 2}


def test_divergence_is_recorded_not_a_crash(tmp_path):
    spec = TrialSpec.from_flat({**SMALL, "lr": 1e12, "norm": "none", "lr_schedule": "constant", "probe_every": 1})
    summary = Trial(spec, store=Store(str(tmp_path)), sweep_id="d", device="cpu").run()
    assert summary["status"] == "diverged" and summary["diverged"]
    manifest = json.loads((tmp_path / "d" / "trials" / spec.trial_id / "trial.json").read_text())
    assert manifest["status"] == "diverged"
    ls = pd.read_parquet(tmp_path / "d" / "layer_stats")
    assert ls.step.min() == 0 and (ls.wgrad_nonfinite + ls.signal_nonfinite).max() > 0  # rows kept, NaN counted
    assert ls.epoch.max() == 0  # it stopped within the first epoch: no second epoch ran
    tm = pd.read_parquet(tmp_path / "d" / "train_metrics")
    assert not np.isfinite(tm[tm.split == "train"].loss).all()


def test_records_follow_the_schedule_and_files_per_epoch(tmp_path):
    spec = TrialSpec.from_flat(SMALL)
    summary = Trial(spec, store=Store(str(tmp_path)), sweep_id="s", device="cpu").run()
    assert summary["status"] == "completed"
    parts = sorted(p.name for p in (tmp_path / "s" / "layer_stats" / f"trial_id={spec.trial_id}").iterdir())
    assert parts == ["part-000000000.parquet", "part-000000004.parquet"]  # one per epoch, by first step
    ls = pd.read_parquet(tmp_path / "s" / "layer_stats")
    assert sorted(ls.step.unique()) == [0, 2, 4, 6]
    tm = pd.read_parquet(tmp_path / "s" / "train_metrics")
    assert list(tm.split) == ["train", "test", "train", "test"] and tm.steps.tolist() == [4, 0, 4, 0]
    assert (tm.images_per_s > 0).all()


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [1, 1, 1, 1]), ("step", [1, 1, 0.1, 0.01]), ("cosine", [1, 0.8535533905932737, 0.5, 0.1464466094067262])])
def test_lr_schedules(schedule, expected):
    f = lr_factor(schedule, 8)
    assert [f(s) for s in (0, 2, 4, 6)] == pytest.approx(expected)


def test_vgrad_run_cli(tmp_path):
    vgrad = str(Path(sys.executable).parent / "vgrad")
    r = subprocess.run([vgrad, "run", "--depth", "8", "--width", "4", "--batch-size", "16", "--num-train", "32",
                        "--num-test", "16", "--steps-per-epoch", "2", "--storage", str(tmp_path), "--device", "cpu"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "epoch 0: test loss" in r.stdout and json.loads(r.stdout.splitlines()[-1])["status"] == "completed"
    r = subprocess.run([vgrad, "run", "--depth", "8", "--dataset", "cifar10", "--storage", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "data_root: dataset cifar10 needs a data_root" in r.stderr
