"""vgrad: how gradients vanish in deep CNNs, measured at cluster scale.

``from vgrad import ModelSpec, TrialSpec, SweepSpec, build_model``.  Torch is imported
only when a model is built, so spec and grid tools start fast.
"""
from .grid import SweepSpec, load_grid
from .spec import DataSpec, ModelSpec, ProbeSpec, SpecError, TrainingSpec, TrialSpec

__version__ = "0.1.0"
__all__ = ["ModelSpec", "DataSpec", "TrainingSpec", "ProbeSpec", "TrialSpec", "SweepSpec",
           "SpecError", "load_grid", "build_model", "__version__"]


def __getattr__(name):
    if name == "build_model":
        from .models import build_model
        return build_model
    raise AttributeError(f"module 'vgrad' has no attribute {name!r}")
