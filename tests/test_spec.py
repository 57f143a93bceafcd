import dataclasses
import json

import pytest

from vgrad.spec import FIELDS, ModelSpec, SpecError, TrainingSpec, TrialSpec


def test_defaults_resolve_by_input():
    cifar, imagenet = TrialSpec(), TrialSpec.from_flat({"input": "imagenet"})
    assert (cifar.model.width, cifar.model.num_classes, cifar.data.resolution) == (16, 10, 32)
    assert (imagenet.model.width, imagenet.model.num_classes, imagenet.data.resolution) == (64, 1000, 224)


def test_trial_id_ignores_source_and_order_but_not_values():
    a = TrialSpec.from_flat({"depth": 56, "activation": "tanh", "width": 16})
    b = TrialSpec.from_flat({"width": "16", "activation": "tanh", "depth": "56"})  # CLI strings
    c = TrialSpec.from_flat({"depth": 56, "activation": "tanh"})  # width left to its default
    assert a == b == c and a.trial_id == b.trial_id == c.trial_id
    assert len(a.trial_id) == 12 and int(a.trial_id, 16) >= 0
    assert TrialSpec.from_flat({"depth": 56, "activation": "tanh", "seed": 1}).trial_id != a.trial_id


def test_trial_id_golden():
    # Changing any default or the hashed JSON layout changes every trial_id, which
    # orphans stored results: such a change must bump SPEC_VERSION and update this.
    assert TrialSpec().trial_id == "1076dda6208d"


def test_json_round_trip_is_canonical():
    t = TrialSpec.from_flat({"depth": 110, "norm": "none", "lr": "1e-3", "dtype": "float64", "seed": 4})
    text = t.to_json()
    assert " " not in text and json.loads(text)["spec_version"] == 1
    assert list(json.loads(text)) == sorted(json.loads(text))
    back = TrialSpec.from_json(text)
    assert back == t and back.trial_id == t.trial_id


def test_flat_round_trip_covers_every_field():
    t = TrialSpec()
    assert set(t.to_flat()) == set(FIELDS)
    assert TrialSpec.from_flat(t.to_flat()) == t


def test_frozen():
    t = TrialSpec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.seed = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.model.depth = 3


def test_all_problems_reported_at_once_with_choices():
    with pytest.raises(SpecError) as e:
        TrialSpec.from_flat({"depht": 20, "activation": "swish", "lr": "fast", "depth": 2,
                             "dataset": "imagefolder", "batch_size": True})
    problems = e.value.problems
    text = "\n".join(problems)
    assert len(problems) == 6, problems
    assert "depht: unknown setting (did you mean 'depth'?)" in text and "valid settings: arch, depth" in text
    assert "activation: unknown value 'swish'; valid choices: sigmoid, tanh, relu, gelu, selu" in text
    assert "lr: expected float, got 'fast'" in text
    assert "depth: must be >= 4, got 2" in text
    assert "data_root: dataset imagefolder needs a data_root" in text
    assert "batch_size: expected int, got True" in text


def test_direct_construction_is_validated_too():
    with pytest.raises(SpecError, match="norm: unknown value 'layernorm'; valid choices: none, batchnorm"):
        ModelSpec(norm="layernorm")
    with pytest.raises(SpecError, match="imagenet networks need >= 32 pixels"):
        TrialSpec.from_flat({"input": "imagenet", "resolution": 16})
    with pytest.raises(SpecError, match="cifar10 needs input=cifar"):
        TrialSpec.from_flat({"input": "imagenet", "dataset": "cifar10", "data_root": "/x"})


def test_from_json_rejects_other_spec_versions():
    d = json.loads(TrialSpec().to_json())
    d["spec_version"] = 99
    with pytest.raises(SpecError, match="spec_version: expected 1, got 99"):
        TrialSpec.from_json(json.dumps(d))


def test_coercion_of_strings_from_flags_and_yaml():
    t = TrialSpec.from_flat({"lr": "1e-4", "augment": "false", "steps_per_epoch": "none", "width": "8"})
    assert t.training.lr == 1e-4 and t.data.augment is False
    assert t.training.steps_per_epoch is None and t.model.width == 8
    assert TrialSpec.from_flat({"lr": 1}).training.lr == 1.0  # YAML int for a float setting
    direct = TrialSpec(training=TrainingSpec(lr=1))
    assert isinstance(direct.training.lr, float)
    assert direct.trial_id == TrialSpec.from_flat({"lr": 1.0}).trial_id
