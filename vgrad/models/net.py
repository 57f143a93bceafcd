"""The network: stem, stages of blocks, global pool, linear; and its weighted-layer table.

CIFAR family (He et al. 2016, section 4.2): 3x3 stem conv at width w, three stages at
w, 2w, 4w (stride 2 at the start of stages 2 and 3), option-A shortcuts (zero-pad).
ImageNet family (He et al. 2016, table 1 / torchvision): 7x7 stride-2 stem conv and
3x3 max-pool, four stages at w, 2w, 4w, 8w (x4 out for bottlenecks), option-B
shortcuts (1x1 conv + norm) where the shape changes.  ``plain`` drops the shortcuts.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..spec import ModelSpec
from .blocks import ACTIVATION_TYPES, BLOCKS, conv_norm_act
from .init import fans
from .layout import Layout, layout_for

LAYER_KINDS = ("conv", "linear", "shortcut")


@dataclass(frozen=True)
class LayerInfo:
    """One weighted layer.  ``index`` runs input -> output over the main path
    (0 .. depth-1, the final linear last); projection shortcuts follow (depth ..)."""

    index: int
    name: str       # qualified module name, for model.get_submodule(name)
    kind: str       # one of LAYER_KINDS
    fan_in: int
    fan_out: int
    numel: int
    act_module: str | None  # the activation module this layer feeds (after norm / shortcut add)


class Net(nn.Module):
    def __init__(self, spec: ModelSpec, layout: Layout):
        super().__init__()
        self.spec, self.layout = spec, layout
        w, act, norm = spec.width, spec.activation, spec.norm
        cifar = spec.input == "cifar"
        stem = conv_norm_act(3, w, 3 if cifar else 7, 1 if cifar else 2, activation=act, norm=norm)
        if not cifar:
            stem.append(nn.MaxPool2d(3, stride=2, padding=1))
        for _ in range(layout.stem_extra):
            stem += conv_norm_act(w, w, 3, 1, activation=act, norm=norm)
        self.stem = nn.Sequential(*stem)

        block_cls = BLOCKS[layout.block]
        shortcut = "pad" if cifar else "project"
        cin, stages = w, []
        for i, n_blocks in enumerate(layout.stages):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                block = block_cls(cin, w * 2**i, stride, activation=act, norm=norm,
                                  residual=spec.arch == "residual", shortcut=shortcut)
                blocks.append(block)
                cin = block.out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(cin, spec.num_classes)
        self.layers = self._layer_table()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.stages(self.stem(x))), 1))

    def _layer_table(self) -> tuple[LayerInfo, ...]:
        # Modules are registered in forward order inside every block, so
        # named_modules() order is input -> output order.
        # An activation module belongs to the nearest main-path layer before it.
        main, side, act_of = [], [], {}
        for n, m in self.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                (side if ".shortcut." in n else main).append((n, m))
            elif isinstance(m, ACTIVATION_TYPES) and main:
                act_of.setdefault(main[-1][0], n)
        assert len(main) == self.spec.depth, (len(main), self.spec.depth)
        table = []
        for i, (n, m) in enumerate(main + side):
            kind = "shortcut" if i >= len(main) else ("linear" if isinstance(m, nn.Linear) else "conv")
            fan_in, fan_out = fans(m.weight)
            table.append(LayerInfo(i, n, kind, fan_in, fan_out, m.weight.numel(), act_of.get(n)))
        return tuple(table)

    def weighted_modules(self) -> list[nn.Module]:
        """The modules of ``self.layers``, in the same order."""
        return [self.get_submodule(info.name) for info in self.layers]


def build_net(spec: ModelSpec) -> Net:
    return Net(spec, layout_for(spec.input, spec.depth))
