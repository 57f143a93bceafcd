"""Datasets.  ``synthetic``: deterministic, learnable, offline; any resolution and class count.

Every image is a function of (seed, split, index) alone, so two DDP ranks holding
different halves of a batch see exactly the images one process sees on the whole
batch, and a resumed trial sees the same data again.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TEMPLATE_SIDE = 8  # class patterns are drawn at 8x8 and upsampled: smooth, cheap at 224px
NOISE = 1.0        # per-pixel noise std against unit-variance templates: learnable, not trivial
# Each image seeds its own PCG64 stream from the entropy (seed, split, index) through
# numpy's SeedSequence: no collisions between splits or indices (torch's CPU generator
# keeps only 32 bits of a seed, which made splits collide).
SPLITS = {"train": 1, "test": 2}
TEMPLATES = 0


class SyntheticImages:
    """Class c's images are template_c (smooth, unit variance) + Gaussian noise.

    Labels are drawn per index, uniformly over classes.  ``batch(indices)`` costs one
    small generator per image on the host (about 20 us each at 32x32).
    """

    def __init__(self, *, num_classes: int, resolution: int, size: int, seed: int, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
        self.num_classes, self.resolution, self.size, self.seed = num_classes, resolution, size, seed
        self.split = SPLITS[split]
        rng = np.random.default_rng([seed, TEMPLATES])  # templates shared by train and test
        self.templates = torch.from_numpy(
            rng.standard_normal((num_classes, 3, TEMPLATE_SIDE, TEMPLATE_SIDE), dtype=np.float32))

    def __len__(self) -> int:
        return self.size

    def batch(self, indices, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        indices = [int(i) for i in indices]
        if any(i < 0 or i >= self.size for i in indices):
            raise IndexError(f"index out of range for a synthetic dataset of {self.size} images")
        labels, noise = [], []
        shape = (3, self.resolution, self.resolution)
        for i in indices:
            rng = np.random.default_rng([self.seed, self.split, i])
            labels.append(int(rng.integers(self.num_classes)))
            noise.append(rng.standard_normal(shape, dtype=np.float32))
        y = torch.tensor(labels, dtype=torch.long)
        t = F.interpolate(self.templates[y], size=self.resolution, mode="bilinear", align_corners=False)
        t = t / t.flatten(1).std(dim=1).clamp_min(1e-6)[:, None, None, None]
        x = (t + NOISE * torch.from_numpy(np.stack(noise))) / (1.0 + NOISE**2) ** 0.5
        return x.to(dtype), y

    def __getitem__(self, i: int):
        x, y = self.batch([i])
        return x[0], y[0]


def synthetic_for(trial, split: str = "train") -> SyntheticImages:
    size = trial.data.num_train if split == "train" else trial.data.num_test
    return SyntheticImages(num_classes=trial.model.num_classes, resolution=trial.data.resolution,
                           size=size, seed=trial.seed, split=split)
