"""`vgrad probe` end to end, as a user runs it: the installed console script in a fresh
folder, a local Ray started by the command itself, results read back with pandas.

Two runs start Ray (local folder, S3 on a moto server); the error cases exit before Ray.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vgrad import load_grid
from vgrad.probe_run import probe_sweep_id
from vgrad.schema import LAYER_STATS_SCHEMA

VGRAD = str(Path(sys.executable).parent / "vgrad")
RAY_TIMEOUT = 300  # a local Ray start is ~5-10 s; generous for a loaded CI machine
FAST_TIMEOUT = 120  # the error paths exit before Ray starts
PROGRESS = re.compile(r"^\[\s*(\d+)/(\d+)\] ([0-9a-f]{12}) (.*)$")


def probe(*args, cwd, env_extra=None, timeout=RAY_TIMEOUT):
    env = dict(os.environ) | {"RAY_AUTH_MODE": "token"} | (env_extra or {})
    return subprocess.run([VGRAD, "probe", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def expected(steps: int, **overrides):
    grid = load_grid("smoke", overrides=overrides or None)
    trials = grid.trials()
    return grid, trials, probe_sweep_id(grid, trials, steps)


def check_output(r, trials, url_prefix: str, sweep_id: str):
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"probe smoke: {len(trials)} cells -> {url_prefix}/{sweep_id}"
    progress = [PROGRESS.match(line) for line in lines if line.startswith("[")]
    assert all(progress), lines
    assert sorted(int(m.group(1)) for m in progress) == list(range(1, len(trials) + 1))
    assert {m.group(2) for m in progress} == {str(len(trials))}
    assert sorted(m.group(3) for m in progress) == sorted(t.trial_id for t in trials)
    assert all(" completed " in m.group(4) and "FAILED" not in m.group(4) for m in progress)
    done = [line for line in lines if line.startswith("done:")]
    assert len(done) == 1, lines
    assert done[0].startswith(f"done: {len(trials)} completed, 0 diverged, 0 failed; ")
    assert done[0].endswith(f"-> {url_prefix}/{sweep_id}/layer_stats")
    return int(re.search(r"; (\d+) rows in ", done[0]).group(1))


def check_table(df, trials, steps: int, sweep_id: str, rows: int):
    assert [f.name for f in LAYER_STATS_SCHEMA if f.name not in df.columns] == []
    assert sorted(df["trial_id"].astype(str).unique()) == sorted(t.trial_id for t in trials)
    assert set(df["sweep_id"].astype(str)) == {sweep_id}
    assert len(df) == rows
    assert not df.duplicated(["trial_id", "step", "layer_index"]).any()
    per_trial = df.groupby("trial_id", observed=True).agg(n=("layer_index", "size"), steps=("step", "nunique"),
                                                          layers=("layer_index", "nunique"))
    assert (per_trial["steps"] == steps + 1).all()
    assert (per_trial["n"] == per_trial["layers"] * (steps + 1)).all()
    for t in trials:  # every cell's axes as its TrialSpec says
        sub = df[df["trial_id"].astype(str) == t.trial_id]
        assert set(sub["arch"].astype(str)) == {t.model.arch}
        assert set(sub["activation"].astype(str)) == {t.model.activation}
        assert set(sub["depth"]) == {t.model.depth}
        assert set(sub["layer_index"]) == set(range(t.model.depth))  # smoke: cifar, no projection shortcuts
    for col in ("arch", "activation", "norm", "init", "input", "layer_kind"):
        assert isinstance(df[col].dtype, pd.CategoricalDtype), col


def test_probe_local(tmp_path):
    steps = 1
    _, trials, sweep_id = expected(steps)
    r = probe("--grid", "smoke", "--out", "./results", "--steps", str(steps), cwd=tmp_path)
    rows = check_output(r, trials, "./results", sweep_id)

    root = tmp_path / "results" / sweep_id
    df = pd.read_parquet(root / "layer_stats")
    check_table(df, trials, steps, sweep_id, rows)
    assert (root / "sweep.json").is_file()
    assert sorted(p.name for p in (root / "trials").iterdir()) == sorted(t.trial_id for t in trials)
    assert sorted(p.name for p in (root / "layer_stats").iterdir()) == sorted(f"trial_id={t.trial_id}" for t in trials)
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name or p.name.startswith(".vgrad-check")]
    assert leftovers == []
    assert [p.name for p in tmp_path.iterdir()] == ["results"]  # nothing else in the user's folder


def test_probe_s3(s3_server, s3_env, tmp_path):
    steps = 0
    bucket = s3_server.create_bucket()
    _, trials, sweep_id = expected(steps)
    url = f"s3://{bucket}/x"
    r = probe("--grid", "smoke", "--out", url, "--steps", str(steps), cwd=tmp_path, env_extra=s3_env)
    rows = check_output(r, trials, url, sweep_id)

    df = pd.read_parquet(f"{url}/{sweep_id}/layer_stats", storage_options={"endpoint_url": s3_server.endpoint})
    check_table(df, trials, steps, sweep_id, rows)
    keys = s3_server.keys(bucket)
    assert f"x/{sweep_id}/sweep.json" in keys
    assert sorted(k for k in keys if k.endswith("/trial.json")) == \
        sorted(f"x/{sweep_id}/trials/{t.trial_id}/trial.json" for t in trials)
    assert not any(".vgrad-check" in k for k in keys)
    assert list(tmp_path.iterdir()) == []  # nothing written locally


def assert_refused(r, *fragments):
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.startswith("vgrad probe: error: "), r.stderr
    for fragment in fragments:
        assert fragment in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert "Started a local Ray instance" not in r.stderr  # refused before any work is scheduled
    assert r.stdout == ""


def test_probe_bad_url(tmp_path):
    r = probe("--grid", "smoke", "--out", "gs://x", cwd=tmp_path, timeout=FAST_TIMEOUT)
    assert_refused(r, "unsupported storage URL 'gs://x'", "s3://", "file://", "local path")
    assert list(tmp_path.iterdir()) == []


def test_probe_missing_bucket(s3_server, s3_env, tmp_path):
    r = probe("--grid", "smoke", "--out", "s3://no-such-bucket-vgrad/x", cwd=tmp_path, env_extra=s3_env,
              timeout=FAST_TIMEOUT)
    assert_refused(r, "s3://no-such-bucket-vgrad/x", "bucket does not exist", s3_server.endpoint)
    assert list(tmp_path.iterdir()) == []


def test_probe_bad_grid(tmp_path):
    r = probe("--grid", "nope", "--out", "./results", cwd=tmp_path, timeout=FAST_TIMEOUT)
    assert_refused(r, "nope: no such grid file, and not a named grid", "named grids: paper, smoke")
    assert list(tmp_path.iterdir()) == []


def test_probe_s3_without_bucket(tmp_path):
    r = probe("--grid", "smoke", "--out", "s3://", cwd=tmp_path, timeout=FAST_TIMEOUT)
    assert_refused(r, "names no bucket: use s3://BUCKET[/PREFIX]")
    assert list(tmp_path.iterdir()) == []
