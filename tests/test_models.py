import itertools

import pytest
import torch
import torchvision
from torch import nn

from vgrad import ModelSpec, build_model, load_grid
from vgrad.models import count_params, layout_for

PAPER_CELLS = sorted({
    (t.model.arch, t.model.depth, t.model.activation, t.model.norm, t.model.init, t.model.input)
    for t in load_grid("paper", seeds=1).trials()
})


def test_paper_has_240_model_cells():
    assert len(PAPER_CELLS) == 5 * 3 * 2 * 2 * 2 * 2


@pytest.mark.parametrize("arch,depth,activation,norm,init,input", PAPER_CELLS,
                         ids=lambda v: str(v))
def test_every_paper_cell_runs_forward_backward_with_hooks(arch, depth, activation, norm, init, input):
    spec = ModelSpec(arch=arch, depth=depth, activation=activation, norm=norm, init=init,
                     input=input, width=4, num_classes=10)
    net = build_model(spec, seed=0)
    main = [i for i in net.layers if i.kind != "shortcut"]
    assert len(main) == depth and [i.index for i in net.layers] == list(range(len(net.layers)))
    assert main[-1].kind == "linear" and all(i.kind == "conv" for i in main[:-1])
    expect_shortcuts = arch == "residual" and input == "imagenet"
    assert any(i.kind == "shortcut" for i in net.layers) == expect_shortcuts

    fired, grads = [], {}

    def hook(index):
        def forward_hook(module, inputs, output):
            fired.append(index)
            output.register_hook(lambda g: grads.__setitem__(index, g))
        return forward_hook

    for info, module in zip(net.layers, net.weighted_modules()):
        module.register_forward_hook(hook(info.index))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = net(x)
    assert out.shape == (2, 10)
    loss = nn.functional.cross_entropy(out, torch.tensor([1, 7]))
    loss.backward()
    assert torch.isfinite(loss)
    # the layer table is in forward order on the main path
    assert [i for i in fired if i < depth] == list(range(depth))
    assert sorted(grads) == [i.index for i in net.layers]  # every layer output got its signal
    for info, module in zip(net.layers, net.weighted_modules()):
        assert module.weight.grad is not None and module.weight.grad.shape == module.weight.shape
        assert torch.isfinite(grads[info.index]).all()


@pytest.mark.parametrize("depth, published", [(20, 0.27e6), (56, 0.85e6), (110, 1.7e6)])
def test_cifar_resnets_match_he_et_al_table_6(depth, published):
    net = build_model(ModelSpec(arch="residual", depth=depth, input="cifar", width=16, norm="batchnorm"))
    n = count_params(net)
    # He et al. print 2 significant digits; count exactly by hand as well:
    # stem 3x3x3x16 + 3 stages of n blocks (2 convs each), BN (2 per channel), fc 64x10+10.
    blocks = (depth - 2) // 6
    convs = 3 * 9 * 16 + (2 * blocks * 16 * 16 * 9) \
        + (16 * 32 * 9 + (2 * blocks - 1) * 32 * 32 * 9) + (32 * 64 * 9 + (2 * blocks - 1) * 64 * 64 * 9)
    bn = 2 * (16 + 2 * blocks * (16 + 32 + 64))
    assert n == convs + bn + 64 * 10 + 10
    assert float(f"{n:.2g}") == published
    assert layout_for("cifar", depth).stages == (blocks,) * 3


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_imagenet_resnets_equal_torchvision(depth):
    ours = build_model(ModelSpec(arch="residual", depth=depth, input="imagenet"))
    ref = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    assert count_params(ours) == count_params(ref)
    assert sorted(p.shape for p in ours.parameters()) == sorted(p.shape for p in ref.parameters())
    plain = build_model(ModelSpec(arch="plain", depth=depth, input="imagenet"))
    assert count_params(plain) < count_params(ours)  # the same without projection shortcuts


@pytest.mark.parametrize("input, depth, block, stages, extra", [
    ("cifar", 10, "basic", (2, 1, 1), 0),
    ("cifar", 4, "basic", (1,), 0),
    ("cifar", 9, "basic", (1, 1, 1), 1),
    ("cifar", 100, "basic", (17, 16, 16), 0),
    ("cifar", 152, "basic", (25, 25, 25), 0),
    ("imagenet", 10, "basic", (1, 1, 1, 1), 0),
    ("imagenet", 20, "basic", (3, 2, 2, 2), 0),
    ("imagenet", 100, "bottleneck", (8, 8, 8, 8), 2),
])
def test_depth_rule(input, depth, block, stages, extra):
    lay = layout_for(input, depth)
    assert (lay.block, lay.stages, lay.stem_extra, lay.depth) == (block, stages, extra, depth)


def test_every_depth_from_4_builds_with_exact_depth():
    for input, depth in itertools.product(("cifar", "imagenet"), range(4, 40)):
        net = build_model(ModelSpec(depth=depth, input=input, width=2, num_classes=3))
        assert sum(i.kind != "shortcut" for i in net.layers) == depth


def test_build_model_is_pure_and_seeded():
    spec = ModelSpec(depth=20, width=4, init="xavier")
    state = torch.get_rng_state()
    a, b, c = build_model(spec, seed=1), build_model(spec, seed=1), build_model(spec, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.stem[0].weight, c.stem[0].weight)


def test_no_in_place_ops():
    for input, norm, act in itertools.product(("cifar", "imagenet"), ("none", "batchnorm"),
                                              ("relu", "selu", "sigmoid")):
        net = build_model(ModelSpec(depth=50, input=input, norm=norm, activation=act, width=2))
        assert not any(getattr(m, "inplace", False) for m in net.modules())


def test_conv_bias_only_without_norm():
    with_bn = build_model(ModelSpec(depth=8, width=4, norm="batchnorm"))
    without = build_model(ModelSpec(depth=8, width=4, norm="none"))
    assert all(m.bias is None for m in with_bn.weighted_modules()[:-1])
    assert all(m.bias is not None for m in without.weighted_modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())


def test_layer_table_fans_and_numel():
    net = build_model(ModelSpec(depth=18, input="imagenet", width=8))
    for info, m in zip(net.layers, net.weighted_modules()):
        w = m.weight
        rf = w[0, 0].numel() if w.dim() == 4 else 1
        assert (info.fan_in, info.fan_out, info.numel) == (w.shape[1] * rf, w.shape[0] * rf, w.numel())
    assert net.layers[0].name == "stem.0" and net.layers[0].fan_in == 3 * 7 * 7
    assert net.layers[17].name == "head"
