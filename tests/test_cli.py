"""The `vgrad` console script, run as a user runs it (a subprocess of the installed entry point)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VGRAD = str(Path(sys.executable).parent / "vgrad")


def vgrad(*args, check=True):
    r = subprocess.run([VGRAD, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("args", [[], ["grid"], ["grid", "show"], ["spec"], ["model"]])
def test_help_is_useful(args):
    out = vgrad(*args, "--help").stdout
    assert "usage: vgrad" in out
    if args == ["spec"]:
        assert "--depth" in out and "--activation" in out and "sigmoid|tanh|relu" in out


def test_grid_show_and_list():
    out = vgrad("grid", "show", "smoke").stdout
    assert "grid smoke: 4 trials = 2 arch x 2 activation x 1 seeds" in out
    assert len([line for line in out.splitlines() if line[:12].isalnum() and len(line.split()[0]) == 12]) == 4
    out = vgrad("grid", "show", "paper", "--limit", "2").stdout
    assert "720 trials" in out and "... 718 more" in out
    assert "paper" in vgrad("grid", "list").stdout


def test_grid_show_json_matches_python_api():
    from vgrad import load_grid

    data = json.loads(vgrad("grid", "show", "paper", "--seeds", "1", "--set", "depth=20", "--format", "json").stdout)
    ids = [t["trial_id"] for t in data["trials"]]
    assert ids == [t.trial_id for t in load_grid("paper", seeds=1, overrides={"depth": 20}).trials()]
    assert len(ids) == 48


def test_grid_validate(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("name: g\naxes:\n  depth: [8, 14]\nfixed:\n  width: 4\nseeds: 2\n")
    assert "valid, 4 trials" in vgrad("grid", "validate", str(good)).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: g\naxes:\n  depth: [8]\n  norm: [layernorm]\nfixed:\n  widht: 4\n")
    r = vgrad("grid", "validate", str(bad), check=False)
    assert r.returncode == 2 and r.stdout == ""
    assert "norm: unknown value 'layernorm'; valid choices: none, batchnorm" in r.stderr
    assert "widht: unknown setting (did you mean 'width'?)" in r.stderr


def test_spec_from_flags_matches_python_api():
    from vgrad import TrialSpec

    out = json.loads(vgrad("spec", "--depth", "56", "--activation", "sigmoid", "--lr", "0.05").stdout)
    expected = TrialSpec.from_flat({"depth": 56, "activation": "sigmoid", "lr": 0.05})
    assert out["trial_id"] == expected.trial_id and out["model"]["depth"] == 56


def test_bad_flags_and_values_exit_2():
    r = vgrad("spec", "--depht", "56", check=False)
    assert r.returncode == 2 and "unrecognized arguments: --depht" in r.stderr
    r = vgrad("spec", "--depth", "3", "--init", "lecun", check=False)
    assert r.returncode == 2
    assert "depth: must be >= 4, got 3" in r.stderr and "init: unknown value 'lecun'; valid choices" in r.stderr
    r = vgrad("grid", "show", "nosuchgrid", check=False)
    assert r.returncode == 2 and "named grids: paper, smoke" in r.stderr


def test_model_table():
    out = vgrad("model", "--depth", "20", "--input", "cifar").stdout
    assert "269,722 parameters" in out and "basic blocks [3, 3, 3]" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == list(range(20)) and rows[-1][1:3] == ["head", "linear"]


def test_spec_and_grid_commands_do_not_import_torch():
    code = "import sys; from vgrad.cli import main; main(['grid', 'show', 'smoke']); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=60)
    assert r.stdout.strip().endswith("False")
