"""The Parquet contract, schema version 1 (docs/schema.md).

layer_stats: one row per (trial, attempt, step, layer).  Config axes are columns so a
plain ``pd.read_parquet`` can group by them; string columns are dictionary-encoded
(a few bytes per row whatever the string), numbers are plain ints (Parquet's RLE
already stores a repeated int in a few bytes, and pandas keeps them numeric).
Every float is float64: a float32 run's sigmoid gradients live near 1e-20 and the
float64 runs go below 1e-38.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .probe import MOMENTS, QUANTITIES, STATS, ProbeRecord, Q, derive

SCHEMA_VERSION = 1
DICT = pa.dictionary(pa.int32(), pa.string())
CONFIG_COLUMNS = [("arch", DICT), ("depth", pa.int32()), ("activation", DICT), ("norm", DICT),
                  ("init", DICT), ("input", DICT), ("width", pa.int32()), ("seed", pa.int32()),
                  ("dtype", DICT)]
STAT_TYPES = {s: (pa.int64() if s == "nonfinite" else pa.float64()) for s in STATS}

LAYER_STATS_SCHEMA = pa.schema(
    [("sweep_id", DICT), ("trial_id", DICT), ("attempt", pa.int32())] + CONFIG_COLUMNS
    + [("epoch", pa.int32()), ("step", pa.int64()), ("layer_index", pa.int32()), ("layer_name", DICT),
       ("layer_kind", DICT), ("fan_in", pa.int64()), ("fan_out", pa.int64()), ("numel", pa.int64())]
    + [(f"{q}_{s}", STAT_TYPES[s]) for q in QUANTITIES for s in STATS]
    + [("act_frac_saturated", pa.float64()), ("weight_norm", pa.float64()),
       ("lr", pa.float64()), ("loss", pa.float64())]
)

TRAIN_METRICS_SCHEMA = pa.schema(
    [("sweep_id", DICT), ("trial_id", DICT), ("attempt", pa.int32())] + CONFIG_COLUMNS
    + [("epoch", pa.int32()), ("step", pa.int64()), ("split", DICT), ("loss", pa.float64()),
       ("accuracy", pa.float64()), ("lr", pa.float64()), ("images_per_s", pa.float64()),
       ("step_time_s", pa.float64()), ("steps", pa.int32())]
)


def file_metadata(trial) -> dict[bytes, bytes]:
    from . import __version__

    return {b"vgrad.schema_version": str(SCHEMA_VERSION).encode(),
            b"vgrad.trial_spec": trial.to_json().encode(),
            b"vgrad.version": __version__.encode()}


def config_values(trial) -> dict:
    m = trial.model
    return {"arch": m.arch, "depth": m.depth, "activation": m.activation, "norm": m.norm,
            "init": m.init, "input": m.input, "width": m.width, "seed": trial.seed, "dtype": trial.dtype}


def _table(schema: pa.Schema, columns: dict, n: int, trial) -> pa.Table:
    arrays = []
    for f in schema:
        v = columns[f.name]
        if np.ndim(v) == 0:
            v = [v] * n
        arr = pa.array(v, type=f.type.value_type if pa.types.is_dictionary(f.type) else f.type)
        arrays.append(arr.dictionary_encode() if pa.types.is_dictionary(f.type) else arr)
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(file_metadata(trial)))


def layer_stats_table(*, sweep_id: str, trial, attempt: int, layers, records: list[ProbeRecord],
                      epochs: list[int], losses: list[float], lrs: list[float], record_act: bool = True) -> pa.Table:
    """Rows for ``records`` (one per recorded step) x ``layers`` (a Net's layer table)."""
    L, R = len(layers), len(records)
    rep = lambda values: np.repeat(np.asarray(values), L)  # noqa: E731  per step -> per row
    tile = lambda values: np.tile(np.asarray(values), R)  # noqa: E731  per layer -> per row
    cols = {"sweep_id": sweep_id, "trial_id": trial.trial_id, "attempt": attempt, **config_values(trial),
            "epoch": rep(epochs), "step": rep([r.step for r in records]),
            "layer_index": tile([i.index for i in layers]), "layer_name": tile([i.name for i in layers]),
            "layer_kind": tile([i.kind for i in layers]), "fan_in": tile([i.fan_in for i in layers]),
            "fan_out": tile([i.fan_out for i in layers]), "numel": tile([i.numel for i in layers]),
            "weight_norm": np.concatenate([r.weight_norm for r in records]) if R else np.zeros(0),
            "lr": rep(lrs), "loss": rep(losses)}
    moments = np.concatenate([r.moments for r in records]) if R else np.zeros((0, len(QUANTITIES), len(MOMENTS)))
    for q in QUANTITIES:
        d = derive(moments[:, Q[q]])
        for s in STATS:
            cols[f"{q}_{s}"] = d[s]
        if q == "act":
            cols["act_frac_saturated"] = d["frac_saturated"]
    if not record_act:
        for s in STATS:
            cols[f"act_{s}"] = np.full(L * R, np.nan) if s != "nonfinite" else np.zeros(L * R, np.int64)
        cols["act_frac_saturated"] = np.full(L * R, np.nan)
    no_act = np.array([i.act_module is None for i in layers] * R, dtype=bool)
    cols["act_frac_saturated"] = np.where(no_act, np.nan, cols["act_frac_saturated"])
    return _table(LAYER_STATS_SCHEMA, cols, L * R, trial)


def train_metrics_table(*, sweep_id: str, trial, attempt: int, rows: list[dict]) -> pa.Table:
    """``rows``: dicts with epoch, step, split, loss, accuracy, lr, images_per_s, step_time_s, steps."""
    cols = {"sweep_id": sweep_id, "trial_id": trial.trial_id, "attempt": attempt, **config_values(trial)}
    for name in ("epoch", "step", "split", "loss", "accuracy", "lr", "images_per_s", "step_time_s", "steps"):
        cols[name] = [r.get(name) for r in rows]
    return _table(TRAIN_METRICS_SCHEMA, cols, len(rows), trial)


def trial_spec_of(schema: pa.Schema) -> dict:
    return json.loads(schema.metadata[b"vgrad.trial_spec"])
