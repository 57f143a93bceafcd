import itertools

import pytest

from vgrad.grid import SweepSpec, load_grid, named_grids
from vgrad.spec import SpecError

PAPER_AXES = {
    "depth": (10, 20, 50, 100, 152),
    "activation": ("sigmoid", "tanh", "relu"),
    "norm": ("none", "batchnorm"),
    "init": ("xavier", "he"),
    "arch": ("plain", "residual"),
    "input": ("cifar", "imagenet"),
}


def test_named_grids_are_packaged():
    assert {"paper", "smoke"} <= set(named_grids())


def test_paper_grid_is_the_full_study():
    grid = load_grid("paper")
    trials = grid.trials()
    assert len(grid) == len(trials) == 5 * 3 * 2 * 2 * 2 * 2 * 3 == 720
    assert dict(grid.axes) == PAPER_AXES and grid.seeds == (0, 1, 2)
    seen = {(t.model.depth, t.model.activation, t.model.norm, t.model.init, t.model.arch,
             t.model.input, t.seed) for t in trials}
    assert seen == set(itertools.product(*PAPER_AXES.values(), (0, 1, 2)))
    assert len({t.trial_id for t in trials}) == 720


def test_smoke_grid_is_small_and_cheap():
    trials = load_grid("smoke").trials()
    assert 2 <= len(trials) <= 8
    assert all(t.model.width <= 8 and t.training.steps_per_epoch <= 8 for t in trials)


def write(tmp_path, text):
    p = tmp_path / "g.yaml"
    p.write_text(text)
    return str(p)


def test_grid_file_with_axes_fixed_and_seed_list(tmp_path):
    path = write(tmp_path, """
name: mine
axes:
  depth: [20, 50]
  activation: [relu, sigmoid]
fixed:
  width: 8
  lr: 1e-3
seeds: [3, 7]
""")
    grid = load_grid(path)
    trials = grid.trials()
    assert len(trials) == 8 and grid.seeds == (3, 7)
    assert [(t.model.depth, t.model.activation, t.seed) for t in trials[:3]] == [
        (20, "relu", 3), (20, "relu", 7), (20, "sigmoid", 3)]
    assert all(t.model.width == 8 and t.training.lr == 1e-3 for t in trials)


def test_overrides_pin_axes_and_seed_count():
    grid = load_grid("paper", seeds=1, overrides={"depth": "20", "width": "4"})
    assert len(grid) == 3 * 2 * 2 * 2 * 2
    assert {t.model.depth for t in grid.trials()} == {20}
    assert {t.model.width for t in grid.trials()} == {4}


def test_bad_grid_file_lists_every_problem_in_one_run(tmp_path):
    path = write(tmp_path, """
name: bad
axes:
  depht: [20]
  activation: [relu, swish]
  seed: [1]
fixed:
  dataset: imagefolder
  width: 8
colour: blue
seeds: 0
""")
    with pytest.raises(SpecError) as e:
        load_grid(path)
    text = "\n".join(e.value.problems)
    assert "colour: unknown grid key; valid keys: name, axes, fixed, seeds, description" in text
    assert "axes: seed is not an axis" in text
    assert "seeds: a count >= 1 or a list of integers >= 0, got 0" in text
    assert "depht: unknown setting (did you mean 'depth'?)" in text
    assert "activation: unknown value 'swish'; valid choices: sigmoid, tanh, relu, gelu, selu" in text
    assert "data_root: dataset imagefolder needs a data_root" in text
    assert len(e.value.problems) == 6
    assert all(p.startswith(path) for p in e.value.problems)


@pytest.mark.parametrize("text, message", [
    ("- a\n- b\n", "a grid file is a mapping"),
    ("name: x\naxes: {depth: [20]}\nseeds: 0\n", "seeds: a count >= 1 or a list"),
    ("name: x\naxes: {depth: [20]}\nseeds: [1, 1]\n", "seeds: repeated seed"),
    ("name: x\naxes: {depth: 20}\n", "axes.depth: a list of values"),
    ("name: x\naxes: {depth: [20]}\nfixed: {depth: 50}\n", "depth: set both in axes and fixed"),
    ("name: x\naxes: {depth: [20, 50\n", "not valid YAML"),
    ("axes: {depth: [20]}\n", "name: a non-empty string is required"),
    ("name: x\nfixed: [depth, 20]\n", "fixed: a mapping of setting -> value"),
    ("name: x\naxes: 5\n", "axes: a mapping of setting -> list of values"),
])
def test_bad_grid_messages(tmp_path, text, message):
    with pytest.raises(SpecError, match=message):
        load_grid(write(tmp_path, text))


def test_missing_file_names_the_named_grids():
    with pytest.raises(SpecError, match="no such grid file, and not a named grid; named grids: paper, smoke"):
        load_grid("/nonexistent/grid.yaml")


def test_sweepspec_direct():
    g = SweepSpec(name="d", axes=(("depth", (20, 56)),), fixed=(("width", 4),), seeds=(0, 1))
    assert len(g) == 4 and len(g.trials()) == 4
    assert g.to_dict()["axes"] == {"depth": [20, 56]}


@pytest.mark.parametrize("axes", [{"depth": (20, 20)}, {"width": (16, None)}, {"lr": (1, 1.0)}])
def test_duplicate_cells_are_refused(axes):
    # two cells with one trial_id would write the same files at once
    with pytest.raises(SpecError, match=r"duplicate cell [0-9a-f]{12} .*: the same settings appear twice"):
        SweepSpec(name="dup", axes=tuple(axes.items()))
