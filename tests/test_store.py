"""vgrad.store.Store and the Parquet contract (vgrad.schema), local and on a real S3 (moto server).

The layer_stats tables are real: one smoke cell probed by ``probe_trial``, read back with a
plain ``pandas.read_parquet`` of the folder, as a user would.
"""
import json
import math
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vgrad
from vgrad import TrialSpec, load_grid
from vgrad.probe import QUANTITIES, STATS
from vgrad.probe_run import probe_trial, write_sweep_manifest
from vgrad.schema import LAYER_STATS_SCHEMA, TRAIN_METRICS_SCHEMA, train_metrics_table, trial_spec_of
from vgrad.store import StorageOptions, Store, StoreError

from conftest import clear_fs_caches, free_port

SWEEP = "smoke-test-sweep"
STEPS = 1


@pytest.fixture(scope="module")
def grid():
    return load_grid("smoke")


@pytest.fixture(scope="module")
def trial(grid):
    return grid.trials()[1]  # plain sigmoid: a saturating activation, so frac_saturated is exercised


@pytest.fixture(scope="module")
def n_layers(trial):
    from vgrad.models import build_model

    return len(build_model(trial.model, seed=trial.seed).layers)


@pytest.fixture(scope="module")
def probed(tmp_path_factory, grid, trial):
    """One real smoke cell probed for STEPS steps into a local store, with its sweep manifest."""
    root = tmp_path_factory.mktemp("probed") / "results"
    store = Store(str(root))
    store.check()
    write_sweep_manifest(store, SWEEP, grid, [trial], kind="probe", steps=STEPS)
    summary = probe_trial(trial, steps=STEPS, store=store, sweep_id=SWEEP)
    return root, store, summary


def metrics_rows(n: int, first_step: int = 0, loss: float = 1.0) -> list[dict]:
    return [{"epoch": 0, "step": first_step + i, "split": "train", "loss": loss + i, "accuracy": 0.5,
             "lr": 0.1, "images_per_s": 100.0, "step_time_s": 0.01, "steps": 1} for i in range(n)]


def no_tmp_files(root) -> list:
    return [p for p in root.rglob("*") if ".tmp-" in p.name]


# -- local layout and whole-file writes -----------------------------------------------------------------
@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_local_layout_and_whole_files(tmp_path, trial, as_url):
    root = tmp_path / "results"
    store = Store(f"file://{root}" if as_url else str(root))
    store.check()
    assert not root.exists() or not any(p.name.startswith(".vgrad-check") for p in root.iterdir())

    table = train_metrics_table(sweep_id=SWEEP, trial=trial, attempt=0, rows=metrics_rows(3, first_step=40))
    part = Store.part_name("train_metrics", SWEEP, trial.trial_id, 40)
    assert part == f"{SWEEP}/train_metrics/trial_id={trial.trial_id}/part-000000040.parquet"
    store.write_table(part, table)
    store.write_json(f"{SWEEP}/trials/{trial.trial_id}/trial.json", {"trial_id": trial.trial_id, "x": [1, 2]})
    store.write_json(f"{SWEEP}/sweep.json", {"sweep_id": SWEEP})

    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == [f"{SWEEP}/sweep.json",
                     f"{SWEEP}/train_metrics/trial_id={trial.trial_id}/part-000000040.parquet",
                     f"{SWEEP}/trials/{trial.trial_id}/trial.json"]
    assert no_tmp_files(root) == []
    # part-<first_step>: the name carries the interval's first step
    name = (root / part).name
    assert int(name[len("part-"):-len(".parquet")]) == 40

    assert json.loads((root / SWEEP / "trials" / trial.trial_id / "trial.json").read_text()) == \
        {"trial_id": trial.trial_id, "x": [1, 2]}
    assert store.read_json(f"{SWEEP}/sweep.json") == {"sweep_id": SWEEP}
    assert store.exists(f"{SWEEP}/sweep.json") and not store.exists(f"{SWEEP}/nope.json")
    assert store.ls(f"{SWEEP}/trials") == [trial.trial_id]
    assert store.ls(f"{SWEEP}/missing") == []

    back = pq.read_table(root / part)
    assert back.num_rows == 3
    assert back.schema.remove_metadata().equals(TRAIN_METRICS_SCHEMA.remove_metadata())


def test_footer_metadata(probed, trial):
    root, _, _ = probed
    path = root / Store.part_name("layer_stats", SWEEP, trial.trial_id, 0)
    meta = pq.read_schema(path).metadata
    assert meta[b"vgrad.schema_version"] == b"1"
    assert meta[b"vgrad.version"] == vgrad.__version__.encode()
    back = TrialSpec.from_json(meta[b"vgrad.trial_spec"].decode())
    assert back == trial and back.trial_id == trial.trial_id
    assert trial_spec_of(pq.read_schema(path)) == trial.to_dict()
    # the file's Arrow schema is the contract's (dictionary-encoded strings survive the round trip)
    assert pq.read_schema(path).remove_metadata().equals(LAYER_STATS_SCHEMA.remove_metadata())


def test_rewrite_same_part_overwrites(tmp_path, trial):
    store = Store(str(tmp_path))
    part = Store.part_name("train_metrics", SWEEP, trial.trial_id, 0)
    store.write_table(part, train_metrics_table(sweep_id=SWEEP, trial=trial, attempt=0, rows=metrics_rows(4)))
    store.write_table(part, train_metrics_table(sweep_id=SWEEP, trial=trial, attempt=1,
                                                rows=metrics_rows(4, loss=10.0)))
    df = pd.read_parquet(tmp_path / SWEEP / "train_metrics")
    assert len(df) == 4
    assert (df["attempt"] == 1).all() and df["loss"].tolist() == [10.0, 11.0, 12.0, 13.0]
    assert no_tmp_files(tmp_path) == []


def test_probe_retry_rewrites_layer_stats(tmp_path, trial, n_layers):
    """A retried cell (attempt 1) rewrites the same file: read_parquet sees no duplicates."""
    store = Store(str(tmp_path))
    probe_trial(trial, steps=0, store=store, sweep_id=SWEEP, attempt=0)
    probe_trial(trial, steps=0, store=store, sweep_id=SWEEP, attempt=1)
    df = pd.read_parquet(tmp_path / SWEEP / "layer_stats")
    assert len(df) == n_layers
    assert not df.duplicated(["trial_id", "step", "layer_index"]).any()
    assert (df["attempt"] == 1).all()
    assert len(list((tmp_path / SWEEP / "layer_stats").rglob("*.parquet"))) == 1
    assert no_tmp_files(tmp_path) == []
    assert json.loads((tmp_path / SWEEP / "trials" / trial.trial_id / "trial.json").read_text())["attempts"] == 2


# -- a real layer_stats table, read as a user reads it ---------------------------------------------------
def expected_pandas_dtype(t: pa.DataType):
    return "category" if pa.types.is_dictionary(t) else np.dtype(t.to_pandas_dtype())


def test_layer_stats_columns_and_dtypes(probed):
    root, _, _ = probed
    df = pd.read_parquet(root / SWEEP / "layer_stats")
    missing = [f.name for f in LAYER_STATS_SCHEMA if f.name not in df.columns]
    assert missing == []
    wrong = {f.name: (str(df[f.name].dtype), str(expected_pandas_dtype(f.type))) for f in LAYER_STATS_SCHEMA
             if str(df[f.name].dtype) != str(expected_pandas_dtype(f.type))}
    assert wrong == {}
    # the DESIGN contract's minimum, by name
    documented = (["sweep_id", "trial_id", "attempt", "arch", "depth", "activation", "norm", "init", "input",
                   "width", "seed", "epoch", "step", "layer_index", "layer_name", "layer_kind", "fan_in",
                   "fan_out", "numel", "weight_norm", "lr", "loss"]
                  + [f"{q}_{s}" for q in ("wgrad", "signal") for s in
                     ("norm", "rms", "mean", "std", "max_abs", "frac_zero", "frac_tiny", "nonfinite")])
    assert [c for c in documented if c not in df.columns] == []
    for axis in ("sweep_id", "trial_id", "arch", "activation", "norm", "init", "input", "dtype",
                 "layer_name", "layer_kind"):
        assert isinstance(df[axis].dtype, pd.CategoricalDtype), axis
    for col in [f"{q}_{s}" for q in QUANTITIES for s in STATS if s != "nonfinite"]:
        assert df[col].dtype == np.float64, col


def test_layer_stats_rows_and_values(probed, trial, n_layers):
    root, _, summary = probed
    df = pd.read_parquet(root / SWEEP / "layer_stats")
    assert summary["status"] == "completed"
    assert summary["steps_recorded"] == STEPS + 1
    assert len(df) == n_layers * (STEPS + 1) == summary["rows"]
    assert set(df["trial_id"].astype(str)) == {trial.trial_id}
    assert set(df["sweep_id"].astype(str)) == {SWEEP}
    assert sorted(df["step"].unique().tolist()) == list(range(STEPS + 1))
    assert not df.duplicated(["trial_id", "step", "layer_index"]).any()
    assert sorted(df["layer_index"].unique().tolist()) == list(range(n_layers))
    # config axes as the trial says
    m = trial.model
    for col, want in {"arch": m.arch, "activation": m.activation, "norm": m.norm, "init": m.init,
                      "input": m.input, "dtype": trial.dtype}.items():
        assert set(df[col].astype(str)) == {want}, col
    assert set(df["depth"]) == {m.depth} and set(df["width"]) == {m.width} and set(df["seed"]) == {trial.seed}
    assert (df["attempt"] == 0).all() and (df["epoch"] == 0).all()
    assert np.allclose(df["lr"], trial.training.lr)
    assert np.isclose(df.loc[df["step"] == 0, "loss"].iloc[0], summary["loss0"])

    # derived columns agree with each other
    w = df
    assert np.allclose(w["wgrad_norm"], np.sqrt(w["numel"].astype(float)) * w["wgrad_rms"], rtol=1e-12, atol=0)
    for q in QUANTITIES:
        std, rms = df[f"{q}_std"], df[f"{q}_rms"]
        assert (std <= rms * (1 + 1e-12)).all(), q
        assert (df[f"{q}_max_abs"] >= rms * (1 - 1e-12)).all(), q
        assert (df[f"{q}_mean"].abs() <= rms * (1 + 1e-12)).all(), q
        for s in ("frac_zero", "frac_tiny"):
            assert df[f"{q}_{s}"].between(0, 1).all(), f"{q}_{s}"
        assert (df[f"{q}_nonfinite"] == 0).all(), q
        assert np.isfinite(df[f"{q}_rms"]).all() and (df[f"{q}_rms"] > 0).all(), q
    sat = df["act_frac_saturated"]
    is_final_linear = (df["layer_kind"].astype(str) == "linear") & (df["layer_index"] == n_layers - 1)
    assert (sat.isna() == is_final_linear).all()
    assert is_final_linear.sum() == STEPS + 1
    assert sat[~is_final_linear].between(0, 1).all()
    assert (df["weight_norm"] > 0).all()


def test_trial_and_sweep_json(probed, grid, trial):
    root, store, summary = probed
    tj = json.loads((root / SWEEP / "trials" / trial.trial_id / "trial.json").read_text())
    assert tj["trial_id"] == trial.trial_id and tj["sweep_id"] == SWEEP and tj["kind"] == "probe"
    assert tj["status"] == "completed" and tj["attempts"] == 1 and tj["steps"] == STEPS
    assert TrialSpec.from_json(json.dumps(tj["spec"])) == trial
    assert tj["files"] == [store.url_of(Store.part_name("layer_stats", SWEEP, trial.trial_id, 0))]
    assert (root / Store.part_name("layer_stats", SWEEP, trial.trial_id, 0)).is_file()
    assert set(tj["hardware"]) >= {"host", "python", "torch", "device"}
    assert tj["summary"]["rows"] == summary["rows"] and tj["summary"]["trial_id"] == trial.trial_id

    sj = json.loads((root / SWEEP / "sweep.json").read_text())
    assert sj["sweep_id"] == SWEEP and sj["trial_ids"] == [trial.trial_id]
    assert sj["grid"] == grid.to_dict() and sj["vgrad_version"] == vgrad.__version__
    assert sj["kind"] == "probe" and sj["steps"] == STEPS
    assert {"git_sha", "python", "started_at"} <= set(sj)
    assert no_tmp_files(root) == []


# -- S3 (a real moto server) -------------------------------------------------------------------------------
def test_s3_probe_roundtrip(s3_server, s3_env, grid, trial, n_layers):
    bucket = s3_server.create_bucket()
    store = Store(f"s3://{bucket}/x", StorageOptions(endpoint_url=s3_server.endpoint))
    store.check()
    write_sweep_manifest(store, SWEEP, grid, [trial], kind="probe", steps=STEPS)
    summary = probe_trial(trial, steps=STEPS, store=store, sweep_id=SWEEP)

    keys = s3_server.keys(bucket)
    assert keys == sorted([f"x/{SWEEP}/sweep.json", f"x/{SWEEP}/trials/{trial.trial_id}/trial.json",
                           f"x/{Store.part_name('layer_stats', SWEEP, trial.trial_id, 0)}"])  # no check marker left

    clear_fs_caches()
    url = f"s3://{bucket}/x/{SWEEP}/layer_stats"
    df = pd.read_parquet(url, storage_options={"endpoint_url": s3_server.endpoint})
    assert len(df) == n_layers * (STEPS + 1) == summary["rows"]
    assert set(df["trial_id"].astype(str)) == {trial.trial_id}
    assert [f.name for f in LAYER_STATS_SCHEMA if f.name not in df.columns] == []
    df2 = pd.read_parquet(url, storage_options={"client_kwargs": {"endpoint_url": s3_server.endpoint}})
    assert len(df2) == len(df)

    body = s3_server.client().get_object(Bucket=bucket, Key=f"x/{Store.part_name('layer_stats', SWEEP, trial.trial_id, 0)}")
    meta = pq.read_schema(pa.BufferReader(body["Body"].read())).metadata
    assert TrialSpec.from_json(meta[b"vgrad.trial_spec"].decode()) == trial
    assert store.read_json(f"{SWEEP}/sweep.json")["trial_ids"] == [trial.trial_id]
    tj = store.read_json(f"{SWEEP}/trials/{trial.trial_id}/trial.json")
    assert tj["files"] == [f"s3://{bucket}/x/{Store.part_name('layer_stats', SWEEP, trial.trial_id, 0)}"]
    assert store.ls(f"{SWEEP}/trials") == [trial.trial_id]
    assert s3_server.endpoint in store.describe()


def test_s3_endpoint_from_env(s3_server, s3_env):
    """With AWS_ENDPOINT_URL set (and no option), the store goes to that endpoint."""
    bucket = s3_server.create_bucket()
    store = Store(f"s3://{bucket}/y/")
    assert store.url == f"s3://{bucket}/y"
    store.check()
    store.write_json("a/b.json", {"k": 1})
    assert s3_server.keys(bucket) == ["y/a/b.json"]
    assert store.read_json("a/b.json") == {"k": 1}


# -- fail fast, with messages that say what would work -------------------------------------------------------
@pytest.mark.parametrize("url", ["gs://x", "foo://x", "http://example.com/x"])
def test_unsupported_scheme(url):
    with pytest.raises(StoreError) as e:
        Store(url)
    msg = str(e.value)
    assert url in msg and "s3://" in msg and "file://" in msg and "local path" in msg


@pytest.mark.parametrize("url", ["s3://", "s3:///", "s3:////"])
def test_s3_without_bucket(url, tmp_path, monkeypatch):
    """Refused when the Store is made, with the form that would work; never a local folder "s3:"."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match=r"names no bucket: use s3://BUCKET\[/PREFIX\]"):
        Store(url)
    assert list(tmp_path.iterdir()) == []


def test_missing_bucket(s3_server, s3_env):
    store = Store("s3://missing-bucket-vgrad/x", StorageOptions(endpoint_url=s3_server.endpoint))
    with pytest.raises(StoreError, match="bucket does not exist") as e:
        store.check()
    assert "s3://missing-bucket-vgrad/x" in str(e.value)


def test_closed_port_fails_quickly(s3_env, record_property):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = Store("s3://some-bucket/x", StorageOptions(endpoint_url=endpoint))
    t0 = time.monotonic()
    with pytest.raises(StoreError) as e:
        store.check()
    elapsed = time.monotonic() - t0
    record_property("closed_port_seconds", round(elapsed, 2))
    print(f"closed port: StoreError after {elapsed:.1f}s")
    assert elapsed < 60
    msg = str(e.value)
    assert endpoint in msg and "cannot reach the endpoint" in msg


def test_no_credentials(s3_server, s3_env, monkeypatch, tmp_path):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    clear_fs_caches()
    bucket = s3_server.create_bucket()
    store = Store(f"s3://{bucket}/x", StorageOptions(endpoint_url=s3_server.endpoint))
    with pytest.raises(StoreError, match="credentials") as e:
        store.check()
    assert f"s3://{bucket}/x" in str(e.value)
    assert s3_server.keys(bucket) == []


def test_secrets_never_printed(s3_server, s3_env):
    key, secret = "AKIAVGRADTESTKEY0001", "vgrad-Secret/Value+123456789"
    options = StorageOptions(endpoint_url=s3_server.endpoint, key=key, secret=secret, region="us-east-1")
    good = Store(f"s3://{s3_server.create_bucket()}/x", options)
    good.check()  # the explicit credentials are used (moto accepts any)
    bad = Store("s3://missing-bucket-vgrad/x", options)
    with pytest.raises(StoreError) as e:
        bad.check()
    texts = [str(options), repr(options), good.describe(), bad.describe(), str(e.value), repr(e.value)]
    for text in texts:
        assert secret not in text
        assert key not in text
    assert s3_server.endpoint in good.describe()
