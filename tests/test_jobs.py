"""The service as a user runs it: `ray start --head` with token authentication on loopback,
`ray job submit` of jobs/sweep.py, results in S3 (a moto server on loopback).

Also `vgrad sweep --grid smoke --storage ./results` from the CLI against the same head
(the CLI connects to the running cluster with --address).
"""
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import AWS_VARS, CREDS, free_port
from vgrad import load_grid
from vgrad.sweep import sweep_id_for

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TIMEOUT = 900


@pytest.fixture(scope="module")
def ray_head(s3_server, tmp_path_factory):
    """A head node as a careful user starts it: token auth, dashboard on loopback only,
    from the project's virtual environment (so a job's `python` is the venv's)."""
    token = tmp_path_factory.mktemp("ray") / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in AWS_VARS and not k.startswith("RAY_")}
    env |= CREDS | {"AWS_ENDPOINT_URL": s3_server.endpoint, "PATH": f"{BIN}:{env.get('PATH', '')}",
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0"}
    dash = free_port()
    start = [str(BIN / "ray"), "start", "--head", f"--port={free_port()}", "--node-ip-address=127.0.0.1",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--include-dashboard=true", "--num-cpus=2",
             "--disable-usage-stats"]
    r = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}", "token": token}
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_job_without_token_is_refused(ray_head):
    env = {k: v for k, v in ray_head["env"].items() if not k.startswith("RAY_AUTH")}
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = "0" * 64  # a wrong token
    r = subprocess.run([str(BIN / "ray"), "job", "list", "--address", ray_head["dashboard"]], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0


def test_job_submit_sweep_to_s3(ray_head, s3_server):
    bucket = s3_server.create_bucket()
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"],
           "--runtime-env", "jobs/runtime_env.yaml", "--",
           "python", "jobs/sweep.py", "--grid", "smoke", "--storage", f"s3://{bucket}/x", "--workers-per-trial", "2"]
    r = subprocess.run(cmd, cwd=REPO, env=ray_head["env"], capture_output=True, text=True, timeout=TIMEOUT)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:]
    assert "succeeded" in out and "done: 4 completed, 0 diverged, 0 failed" in out

    grid = load_grid("smoke")
    trials = grid.trials()
    sweep_id = sweep_id_for(grid, trials)
    keys = s3_server.keys(bucket, f"x/{sweep_id}/")
    opts = {"endpoint_url": s3_server.endpoint, "key": "testing", "secret": "testing"}
    for table in ("layer_stats", "train_metrics"):
        df = pd.read_parquet(f"s3://{bucket}/x/{sweep_id}/{table}", storage_options=opts)
        assert sorted(df.trial_id.astype(str).unique()) == sorted(t.trial_id for t in trials), table
    for t in trials:
        assert f"x/{sweep_id}/trials/{t.trial_id}/trial.json" in keys
        body = s3_server.client().get_object(Bucket=bucket, Key=f"x/{sweep_id}/trials/{t.trial_id}/trial.json")
        m = json.loads(body["Body"].read())
        assert m["status"] == "completed" and m["world_size"] == 2
        assert [x["rank"] for x in m["ranks"]] == [0, 1] and len({x["pid"] for x in m["ranks"]}) == 2
    assert any(k.startswith(f"x/{sweep_id}/ray/") for k in keys)  # Ray's files beside ours
    assert not any("testing" in k for k in keys)


def test_cli_sweep_local_folder(ray_head, tmp_path):
    env = ray_head["env"]
    r = subprocess.run([str(BIN / "vgrad"), "sweep", "--grid", "smoke", "--storage", "./results",
                        "--address", "auto"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 4 and all(" completed " in line for line in lines)
    grid = load_grid("smoke")
    sweep_id = sweep_id_for(grid, grid.trials())
    root = tmp_path / "results" / sweep_id
    assert (root / "sweep.json").exists()
    tm = pd.read_parquet(root / "train_metrics")
    assert set(tm.split) == {"train", "test"} and tm.loss.notna().all()
    shutil.rmtree(tmp_path / "results")
