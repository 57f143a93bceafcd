"""Depth -> network layout, for both families (pure Python; docs/models.md).

``depth`` counts weighted layers on the main path: stem conv(s) + block convs + the
final linear, as He et al. 2016 count them.  Projection shortcuts (ImageNet family,
residual only) are weighted layers too but are not counted in depth, as in He et al.

Rule for any depth (both families):
  1. k = convs per block: 2 (basic) for the CIFAR family and for ImageNet depth < 50,
     3 (bottleneck) for ImageNet depth >= 50.
  2. blocks B = (depth - 2) // k; the remainder r = (depth - 2) % k becomes r extra
     3x3 convs in the stem (plain conv-norm-act, no shortcut).
  3. The B blocks are spread evenly over the stages (3 for CIFAR, 4 for ImageNet),
     the remainder going to the earliest stages; stages left with no block are dropped.
The published depths keep their published layouts: CIFAR 6n+2 falls out of the rule
(ResNet-20/56/110: n = 3/9/18), and ImageNet 18/34/50/101/152 use torchvision's table.
"""
from __future__ import annotations

from dataclasses import dataclass

# torchvision's resnet layouts: depth -> (block kind, blocks per stage)
TORCHVISION_LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
CONVS_PER_BLOCK = {"basic": 2, "bottleneck": 3}
MIN_DEPTH = 4


@dataclass(frozen=True)
class Layout:
    block: str                  # "basic" or "bottleneck"
    stages: tuple[int, ...]     # blocks per stage; empty stages dropped
    stem_extra: int             # extra 3x3 stem convs beyond the first

    @property
    def depth(self) -> int:
        return 2 + self.stem_extra + CONVS_PER_BLOCK[self.block] * sum(self.stages)


def spread(blocks: int, n_stages: int) -> tuple[int, ...]:
    """Even split, remainder to the earliest stages, empty stages dropped."""
    base, extra = divmod(blocks, n_stages)
    counts = [base + (1 if i < extra else 0) for i in range(n_stages)]
    return tuple(c for c in counts if c > 0)


def layout_for(input: str, depth: int) -> Layout:
    if depth < MIN_DEPTH:
        raise ValueError(f"depth must be >= {MIN_DEPTH}, got {depth}")
    if input == "imagenet" and depth in TORCHVISION_LAYOUTS:
        block, stages = TORCHVISION_LAYOUTS[depth]
        return Layout(block, stages, 0)
    if input == "cifar":
        block, n_stages = "basic", 3
    elif input == "imagenet":
        block, n_stages = ("basic" if depth < 50 else "bottleneck"), 4
    else:
        raise ValueError(f"unknown input {input!r}; valid choices: cifar, imagenet")
    blocks, extra = divmod(depth - 2, CONVS_PER_BLOCK[block])
    layout = Layout(block, spread(blocks, n_stages), extra)
    assert layout.depth == depth, (layout, depth)
    return layout
