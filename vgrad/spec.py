"""The one description of a trial: frozen, validated, hashable.

Every setting of a trial is a *field* with a unique flat name (``depth``, ``lr``,
``probe_every``...), grouped into four frozen dataclasses (model, data, training,
probe) plus ``seed`` and ``dtype`` on :class:`TrialSpec`.  The same flat names are
used by grid files, CLI flags, ``trial.json`` and the Parquet columns, so a
setting has one name everywhere.

Validation reports every problem at once (:class:`SpecError`), and unknown names
or values list the valid choices.  ``trial_id`` is a short hash of the canonical
JSON, so the same settings always give the same id, whatever their source.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

SPEC_VERSION = 1  # part of the hashed JSON: bumping it changes every trial_id

ARCHS = ("plain", "residual")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "selu")
NORMS = ("none", "batchnorm")
INITS = ("xavier", "he", "default", "orthogonal")
INPUTS = ("cifar", "imagenet")
DATASETS = ("synthetic", "cifar10", "imagefolder")
LR_SCHEDULES = ("constant", "step", "cosine")
DTYPES = ("float32", "float64")

# Per-input defaults, resolved when a spec is built (the hashed JSON holds the
# resolved value, so `width: 16` and "width left out" give the same trial_id).
INPUT_DEFAULTS = {
    "cifar": {"width": 16, "num_classes": 10, "resolution": 32},
    "imagenet": {"width": 64, "num_classes": 1000, "resolution": 224},
}


class SpecError(ValueError):
    """One or more problems with a spec; ``problems`` lists them all."""

    def __init__(self, problems: list[str]):
        self.problems = list(dict.fromkeys(problems))  # dedupe, keep order
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''}:\n" + "\n".join(f"  - {p}" for p in self.problems))


def _f(default, help: str, *, type=str, choices=None, min=None, optional=False):
    """A dataclass field that carries what validation and the CLI need."""
    meta = {"help": help, "type": type, "choices": choices, "min": min, "optional": optional}
    return field(default=default, metadata=meta)


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def check_value(f: dataclasses.Field, value: Any) -> list[str]:
    """Problems with one value of field ``f`` (empty list when it is valid)."""
    m = f.metadata
    if value is None:
        return [] if m["optional"] else [f"{f.name}: a value is required"]
    typ = m["type"]
    ok = isinstance(value, typ) and not (typ is not bool and isinstance(value, bool))
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        return [f"{f.name}: expected {typ.__name__}, got {value!r}"]
    if m["choices"] is not None and value not in m["choices"]:
        return [f"{f.name}: unknown value {value!r}; valid choices: {', '.join(m['choices'])}"]
    if m["min"] is not None and value < m["min"]:
        return [f"{f.name}: must be >= {m['min']}, got {value!r}"]
    return []


def coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn strings (CLI flags, YAML's `1e-4`) into the field's type when unambiguous."""
    if not isinstance(value, str):
        if f.metadata["type"] is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value
    typ = f.metadata["type"]
    if f.metadata["optional"] and value.lower() in ("none", "null", ""):
        return None
    try:
        if typ is int:
            return int(value)
        if typ is float:
            return float(value)
    except ValueError:
        return value  # left as a string: check_value names the problem
    if typ is bool and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    return value


class _Spec:
    """Shared behaviour of the frozen spec groups."""

    def __post_init__(self):
        problems = [p for f in dataclasses.fields(self) for p in check_value(f, getattr(self, f.name))]
        if problems:
            raise SpecError(problems)
        for f in dataclasses.fields(self):  # lr=1 and lr=1.0 must hash alike
            object.__setattr__(self, f.name, coerce(f, getattr(self, f.name)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelSpec(_Spec):
    """What network to build: one cell of the study's model axes."""

    arch: str = _f("residual", "plain or residual (same network without/with shortcuts)", choices=ARCHS)
    depth: int = _f(20, "weighted layers: convs + final linear (He et al. 2016)", type=int, min=4)
    activation: str = _f("relu", "nonlinearity after every norm", choices=ACTIVATIONS)
    norm: str = _f("batchnorm", "normalization after every conv", choices=NORMS)
    init: str = _f("he", "weight initialization of every weighted layer", choices=INITS)
    input: str = _f("cifar", "network family: cifar (32x32, 10 classes) or imagenet", choices=INPUTS)
    width: int | None = _f(None, "base channels (default 16 cifar, 64 imagenet)", type=int, min=1, optional=True)
    num_classes: int | None = _f(None, "classes (default 10 cifar, 1000 imagenet)", type=int, min=2, optional=True)

    def __post_init__(self):
        super().__post_init__()
        defaults = INPUT_DEFAULTS[self.input]
        for name in ("width", "num_classes"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[name])


@dataclass(frozen=True)
class DataSpec(_Spec):
    """Where the images come from and how they are batched."""

    dataset: str = _f("synthetic", "synthetic (offline, deterministic), cifar10 or imagefolder", choices=DATASETS)
    data_root: str | None = _f(None, "directory or URL of the dataset files", optional=True)
    resolution: int | None = _f(None, "image side in pixels (default 32 cifar, 224 imagenet)", type=int, min=8, optional=True)
    batch_size: int = _f(128, "global batch size (split over DDP workers)", type=int, min=1)
    num_train: int = _f(50_000, "training images of the synthetic dataset", type=int, min=1)
    num_test: int = _f(10_000, "held-out images of the synthetic dataset", type=int, min=1)
    augment: bool = _f(True, "random crop + flip on training images", type=bool)


@dataclass(frozen=True)
class TrainingSpec(_Spec):
    """Optimizer and schedule (He et al. 2016's SGD recipe by default)."""

    lr: float = _f(0.1, "initial learning rate (SGD)", type=float, min=0.0)
    momentum: float = _f(0.9, "SGD momentum", type=float, min=0.0)
    weight_decay: float = _f(1e-4, "L2 weight decay", type=float, min=0.0)
    lr_schedule: str = _f("step", "constant, step (x0.1 at 50% and 75%) or cosine", choices=LR_SCHEDULES)
    epochs: int = _f(1, "training epochs", type=int, min=0)
    steps_per_epoch: int | None = _f(None, "cap on steps per epoch (default: one pass over the data)", type=int, min=1, optional=True)


@dataclass(frozen=True)
class ProbeSpec(_Spec):
    """When per-layer statistics are recorded (step 0 always)."""

    probe_every: int = _f(10, "record every k steps (0: off)", type=int, min=0)
    probe_log_points: int = _f(0, "extra log-spaced recording steps over the run (0: off)", type=int, min=0)
    probe_act: bool = _f(True, "also record forward activations", type=bool)


GROUPS = {"model": ModelSpec, "data": DataSpec, "training": TrainingSpec, "probe": ProbeSpec}


@dataclass(frozen=True)
class TrialSpec:
    """Everything that decides one trial's numbers; ``trial_id`` hashes it."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    probe: ProbeSpec = field(default_factory=ProbeSpec)
    seed: int = _f(0, "random seed of init, data order and synthetic data", type=int, min=0)
    dtype: str = _f("float32", "compute dtype of model and probe (float64 sees below 1e-38)", choices=DTYPES)

    def __post_init__(self):
        problems = [p for name in ("seed", "dtype") for p in check_value(_fields(TrialSpec)[name], getattr(self, name))]
        if self.data.resolution is None:
            object.__setattr__(self, "data", dataclasses.replace(
                self.data, resolution=INPUT_DEFAULTS[self.model.input]["resolution"]))
        problems += cross_field_problems(self.to_flat())
        if problems:
            raise SpecError(problems)

    # -- flat view: one name per setting -------------------------------------------------
    @classmethod
    def from_flat(cls, values: Mapping[str, Any]) -> "TrialSpec":
        """Build from ``{flat_name: value}``; reports every problem at once."""
        problems, parts = [], {g: {} for g in GROUPS}
        top = {}
        for key, value in values.items():
            if key not in FIELDS:
                problems.append(unknown_key_message(key))
                continue
            group, f = FIELDS[key]
            value = coerce(f, value)
            problems += check_value(f, value)
            (parts[group] if group else top)[key] = value
        if problems:
            # Cross-field rules too, on the values that passed, so one run lists everything.
            valid = {k: FIELDS[k][1].default for k in FIELDS}
            valid.update({k: coerce(FIELDS[k][1], v) for k, v in values.items()
                          if k in FIELDS and not check_value(FIELDS[k][1], coerce(FIELDS[k][1], v))})
            raise SpecError(problems + cross_field_problems(valid))
        return cls(**{g: GROUPS[g](**parts[g]) for g in GROUPS}, **top)

    def to_flat(self) -> dict[str, Any]:
        out = {}
        for g in GROUPS:
            out.update(getattr(self, g).to_dict())
        out.update(seed=self.seed, dtype=self.dtype)
        return out

    # -- identity --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"spec_version": SPEC_VERSION, **{g: getattr(self, g).to_dict() for g in GROUPS},
                "seed": self.seed, "dtype": self.dtype}

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces; the input of ``trial_id``."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "TrialSpec":
        d = json.loads(text)
        if d.get("spec_version") != SPEC_VERSION:
            raise SpecError([f"spec_version: expected {SPEC_VERSION}, got {d.get('spec_version')!r}"])
        flat = {k: v for g in GROUPS for k, v in d.get(g, {}).items()}
        flat.update(seed=d["seed"], dtype=d["dtype"])
        return cls.from_flat(flat)

    @property
    def trial_id(self) -> str:
        """12 hex digits of SHA-256 of the canonical JSON (48 bits: no collisions in any real sweep)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


# flat name -> (group or None for TrialSpec's own fields, dataclass field)
FIELDS: dict[str, tuple[str | None, dataclasses.Field]] = {}
for _group, _cls in GROUPS.items():
    for _name, _field in _fields(_cls).items():
        assert _name not in FIELDS, f"duplicate flat field name {_name}"
        FIELDS[_name] = (_group, _field)
for _name in ("seed", "dtype"):
    FIELDS[_name] = (None, _fields(TrialSpec)[_name])


def cross_field_problems(flat: Mapping[str, Any]) -> list[str]:
    """Rules that tie settings together, on a flat dict (unset optional values are None)."""
    problems = []
    resolution = flat.get("resolution") or INPUT_DEFAULTS[flat["input"]]["resolution"]
    if flat["input"] == "imagenet" and resolution < 32:
        problems.append(f"resolution: imagenet networks need >= 32 pixels, got {resolution}")
    if flat["dataset"] == "cifar10" and flat["input"] != "cifar":
        problems.append("dataset: cifar10 needs input=cifar")
    if flat["dataset"] in ("cifar10", "imagefolder") and not flat.get("data_root"):
        problems.append(f"data_root: dataset {flat['dataset']} needs a data_root")
    return problems


def unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, list(FIELDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{key}: unknown setting{hint}; valid settings: {', '.join(FIELDS)}"


def field_help(key: str) -> str:
    f = FIELDS[key][1]
    choices = f.metadata["choices"]
    return f.metadata["help"] + (f" [{'|'.join(choices)}]" if choices else "")
