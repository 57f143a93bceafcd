"""Sweeps: axes x seeds over fixed settings, named grids, and grid files.

A grid file is YAML a user writes by hand (docs/grids.md)::

    name: depth-vs-activation
    axes:                 # a list of values per setting; the product is the grid
      depth: [20, 50]
      activation: [relu, sigmoid]
    fixed:                # one value for any other setting
      width: 32
      input: cifar
    seeds: 3              # a count (0, 1, 2) or a list ([0, 7, 42])

Every setting name is a flat field name of :mod:`vgrad.spec`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .spec import FIELDS, SpecError, TrialSpec, coerce

GRID_KEYS = ("name", "axes", "fixed", "seeds", "description")


@dataclass(frozen=True)
class SweepSpec:
    """A named grid: the product of ``axes`` x ``seeds`` over ``fixed`` settings."""

    name: str
    axes: tuple[tuple[str, tuple], ...]
    fixed: tuple[tuple[str, Any], ...] = ()
    seeds: tuple[int, ...] = (0,)
    description: str = ""

    def __post_init__(self):
        problems = []
        if not self.name or not isinstance(self.name, str):
            problems.append("name: a non-empty string is required")
        for key, values in self.axes:
            if key == "seed":
                problems.append("axes: seed is not an axis; use `seeds:` (a count or a list)")
            elif not values:
                problems.append(f"axes.{key}: needs at least one value")
        if "seed" in dict(self.fixed):
            problems.append("fixed: seed is set by `seeds:`")
        both = set(dict(self.axes)) & set(dict(self.fixed))
        problems += [f"{k}: set both in axes and fixed" for k in sorted(both)]
        if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            problems.append(f"seeds: a count >= 1 or a list of integers >= 0, got {self.seeds!r}")
        elif len(set(self.seeds)) != len(self.seeds):
            problems.append(f"seeds: repeated seed in {list(self.seeds)}")
        try:  # values and cross-field rules (e.g. imagefolder needs data_root), on whole trials
            self._expand(check_only=True)
        except SpecError as e:
            problems += e.problems
        if problems:
            raise SpecError(problems)

    def trials(self) -> list[TrialSpec]:
        """Every TrialSpec of the grid, axes in file order, seeds innermost."""
        return self._expand()

    def _expand(self, check_only: bool = False) -> list[TrialSpec]:
        # check_only: validate values even when the grid's structure is broken, so one
        # run lists every problem (bad seeds -> seed 0, seed axis and empty axes skipped).
        axes = [(k, v) for k, v in self.axes if k != "seed" and v] if check_only else list(self.axes)
        fixed = {k: v for k, v in self.fixed if k != "seed"}
        seeds = self.seeds
        if check_only and (not seeds or any(not isinstance(x, int) or isinstance(x, bool) or x < 0 for x in seeds)):
            seeds = (0,)
        keys = [k for k, _ in axes]
        out, problems = [], []
        for combo in itertools.product(*(vals for _, vals in axes)):
            for seed in seeds:
                flat = {**fixed, **dict(zip(keys, combo)), "seed": seed}
                try:
                    out.append(TrialSpec.from_flat(flat))
                except SpecError as e:
                    problems += e.problems
        seen: dict[str, dict] = {}
        for t in out:  # two cells with the same trial_id would write the same files at once
            if t.trial_id in seen:
                cell = {k: t.to_flat()[k] for k in keys} | {"seed": t.seed}
                problems.append(f"duplicate cell {t.trial_id} {cell}: the same settings appear twice "
                                f"(a repeated axis value, or one equal to its default)")
            seen[t.trial_id] = t
        if problems:
            raise SpecError(problems)
        return out

    def __len__(self) -> int:
        n = len(self.seeds)
        for _, values in self.axes:
            n *= len(values)
        return n

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description,
                "axes": {k: list(v) for k, v in self.axes},
                "fixed": dict(self.fixed), "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, d: Any, *, seeds: int | None = None, overrides: dict | None = None) -> "SweepSpec":
        """Build from parsed YAML; ``seeds`` and ``overrides`` (fixed settings) win over the file."""
        if not isinstance(d, dict):
            raise SpecError([f"a grid file is a mapping with keys {', '.join(GRID_KEYS)}; got {type(d).__name__}"])
        problems = [f"{k}: unknown grid key; valid keys: {', '.join(GRID_KEYS)}" for k in d if k not in GRID_KEYS]
        axes_in, fixed_in = d.get("axes") or {}, d.get("fixed") or {}
        if not isinstance(axes_in, dict):
            problems.append(f"axes: a mapping of setting -> list of values, got {axes_in!r}")
            axes_in = {}
        if not isinstance(fixed_in, dict):
            problems.append(f"fixed: a mapping of setting -> value, got {fixed_in!r}")
            fixed_in = {}
        fixed_in = dict(fixed_in)
        axes = []
        for key, values in axes_in.items():
            if not isinstance(values, list):
                problems.append(f"axes.{key}: a list of values, got {values!r}")
                continue
            f = FIELDS.get(key)
            axes.append((key, tuple(coerce(f[1], v) if f else v for v in values)))
        for key, value in (overrides or {}).items():
            axes = [(k, v) for k, v in axes if k != key]  # an override pins an axis
            fixed_in[key] = value
        fixed = tuple((k, coerce(FIELDS[k][1], v) if k in FIELDS else v) for k, v in fixed_in.items())
        raw_seeds = d.get("seeds", 1) if seeds is None else seeds
        if isinstance(raw_seeds, int) and not isinstance(raw_seeds, bool) and raw_seeds >= 1:
            seed_tuple = tuple(range(raw_seeds))
        elif isinstance(raw_seeds, list):
            seed_tuple = tuple(raw_seeds)
        else:
            problems.append(f"seeds: a count >= 1 or a list of integers >= 0, got {raw_seeds!r}")
            seed_tuple = (0,)
        try:
            grid = cls(name=d.get("name") or "", axes=tuple(axes), fixed=fixed,
                       seeds=seed_tuple, description=d.get("description") or "")
        except SpecError as e:
            problems += e.problems
        if problems:
            raise SpecError(problems)
        return grid


def named_grids() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("vgrad.grids").iterdir() if p.name.endswith(".yaml"))


def load_grid(name_or_path: str, *, seeds: int | None = None, overrides: dict | None = None) -> SweepSpec:
    """A packaged grid by name (``paper``, ``smoke``) or a YAML file by path."""
    if name_or_path in named_grids():
        text = resources.files("vgrad.grids").joinpath(f"{name_or_path}.yaml").read_text()
        where = f"grid {name_or_path!r}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise SpecError([f"{name_or_path}: no such grid file, and not a named grid; "
                             f"named grids: {', '.join(named_grids())}"])
        text, where = path.read_text(), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError([f"{where}: not valid YAML: {e}"]) from None
    try:
        return SweepSpec.from_dict(data, seeds=seeds, overrides=overrides)
    except SpecError as e:
        raise SpecError([f"{where}: {p}" for p in e.problems]) from None
