"""compute.models: configs, seeded initialisation, sizes, and the first-affine protocol."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compute.models import architecture_names, build_model, check_architecture
from tracker import SpecError

# (architecture, config, input shape, classes): small widths and 8x8 images keep this fast.
CASES = [
    ("mlp", {"widths": [16, 8]}, (4,), 3),
    ("mlp", {"widths": [], "activation": "sigmoid"}, (1, 8, 8), 10),
    ("cnn", {"channels": [4, 6], "hidden": [12], "batchnorm": True}, (1, 8, 8), 10),
    ("cnn", {"channels": [3], "kernel_size": 5, "activation": "tanh"}, (1, 28, 28), 10),
    ("resnet20", {}, (3, 8, 8), 10),
    ("resnet56", {"shortcut": "B"}, (3, 8, 8), 10),
    ("resnet110", {}, (1, 8, 8), 10),
    ("resnet-lb", {"width": 4}, (3, 32, 32), 10),
    ("resnet-lb", {"width": 4, "activation": "tanh"}, (1, 28, 28), 10),
    ("vgg9", {"width": 8}, (3, 32, 32), 10),
    ("vgg11", {"width": 8}, (1, 28, 28), 10),
    ("vgg11", {"width": 4}, (1, 8, 8), 10),
    ("wrn", {"depth": 10, "k": 1}, (3, 8, 8), 10),
    ("wrn", {"depth": 16, "k": 2}, (3, 32, 32), 10),
]


def case_id(case):
    arch, cfg, shape, _ = case
    return f"{arch}-{'x'.join(map(str, shape))}-{'-'.join(f'{k}{v}' for k, v in cfg.items())}"


def affine_call_order(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, input) of every Linear/Conv2d call during one forward, in call order."""
    calls: list[tuple[str, torch.Tensor]] = []
    handles = [
        module.register_forward_pre_hook(lambda m, args, name=name: calls.append((name, args[0])))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def test_architecture_names():
    assert architecture_names() == [
        "mlp",
        "cnn",
        "resnet20",
        "resnet56",
        "resnet110",
        "resnet-lb",
        "vgg9",
        "vgg11",
        "wrn",
    ]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_equals_first_affine_then_rest(case):
    arch, cfg, shape, classes = case
    model = build_model(arch, cfg, input_shape=shape, num_classes=classes, seed=1).eval()
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    first = dict(model.named_modules())[model.first_affine]
    assert isinstance(first, nn.Linear | nn.Conv2d)
    with torch.no_grad():
        whole = model(x)
        split = model.forward_after_first(first(model.prepare_input(x)))
    assert whole.shape == (2, classes)
    assert torch.allclose(whole, split, atol=1e-6, rtol=1e-5)
    # the named layer is the first affine one called, and it sees the raw (flattened) input
    calls = affine_call_order(model, x)
    assert calls[0][0] == model.first_affine
    assert torch.equal(calls[0][1], model.prepare_input(x))
    assert torch.equal(calls[0][1].reshape(2, -1), x.reshape(2, -1))


@pytest.fixture(scope="module")
def wrn_28_10():
    return build_model("wrn", {"depth": 28, "k": 10}, input_shape=(3, 8, 8), num_classes=10, seed=0)


def test_wrn_28_10_keeps_the_protocol_and_has_36_5m_parameters(wrn_28_10):
    model = wrn_28_10.eval()
    assert sum(p.numel() for p in model.parameters()) == 36_479_194
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = model.conv1(model.prepare_input(x))
        assert torch.allclose(model(x), model.forward_after_first(z), atol=1e-6, rtol=1e-5)
    assert model.first_affine == "conv1"


def n_params(arch, cfg, shape=(3, 32, 32), classes=10):
    model = build_model(arch, cfg, input_shape=shape, num_classes=classes, seed=0)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "cfg", "shape", "classes", "expected"),
    [
        # METHODS.md: WRN-28-2 of seed 000 has D = 1,467,610
        ("wrn", {}, (3, 32, 32), 10, 1_467_610),
        # He et al. 2016 CIFAR ResNets, option A: 0.27M, 0.85M, 1.7M
        ("resnet20", {}, (3, 32, 32), 10, 269_722),
        ("resnet56", {}, (3, 32, 32), 10, 853_018),
        ("resnet110", {}, (3, 32, 32), 10, 1_727_962),
        # option B adds 1x1 projections (+BN) at the two stage changes
        ("resnet20", {"shortcut": "B"}, (3, 32, 32), 10, 269_722 + 16 * 32 + 64 + 32 * 64 + 128),
        # METHODS.md level-set setups: IRIS_FF 4-100^4-3 and MNIST_FF 784-100-100-100-10
        ("mlp", {"widths": [100] * 4, "activation": "tanh"}, (4,), 3, 31_103),
        ("mlp", {"widths": [100] * 3, "activation": "tanh"}, (1, 28, 28), 10, 99_710),
    ],
)
def test_parameter_counts_match_the_published_architectures(arch, cfg, shape, classes, expected):
    assert n_params(arch, cfg, shape, classes) == expected


@pytest.mark.parametrize(
    ("arch", "cfg", "dataset", "shape"),
    [("wrn", {}, "cifar10", (3, 32, 32)), ("resnet20", {}, "cifar10", (3, 32, 32)),
     ("vgg9", {}, "cifar10", (3, 32, 32)), ("cnn", {}, "digits", (1, 8, 8)),
     ("mlp", {"widths": [30]}, "iris", (4,))],
)  # fmt: skip
def test_parameter_count_without_building_equals_the_built_model(arch, cfg, dataset, shape):
    from compute.data import dataset_shape
    from compute.models import parameter_count

    _, classes = dataset_shape(dataset)
    assert parameter_count(arch, cfg, dataset) == n_params(arch, cfg, shape, classes)


def test_option_a_shortcut_has_no_parameters_and_option_b_projects():
    a = build_model("resnet20", {}, input_shape=(3, 8, 8), num_classes=10, seed=0)
    b = build_model("resnet20", {"shortcut": "B"}, input_shape=(3, 8, 8), num_classes=10, seed=0)
    assert not [n for n, _ in a.named_parameters() if "project" in n]
    assert len([n for n, _ in b.named_parameters() if "project" in n]) == 6


def test_resnet_lb_activation_replaces_every_relu():
    model = build_model(
        "resnet-lb", {"activation": "sigmoid", "width": 4}, input_shape=(3, 32, 32),
        num_classes=10, seed=0,
    )  # fmt: skip
    kinds = {type(m) for m in model.modules()}
    assert nn.Sigmoid in kinds and nn.ReLU not in kinds


def test_same_seed_gives_identical_weights_and_leaves_global_rng_alone():
    before = torch.get_rng_state()
    kw = {"input_shape": (3, 8, 8), "num_classes": 10}
    a = build_model("resnet20", {}, seed=7, **kw)
    b = build_model("resnet20", {}, seed=7, **kw)
    c = build_model("resnet20", {}, seed=8, **kw)
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    assert not torch.equal(sa["fc.weight"], sc["fc.weight"])


@pytest.mark.parametrize("arch", ["cnn", "resnet20", "resnet-lb", "vgg9", "vgg11", "wrn"])
def test_conv_nets_refuse_flat_inputs(arch):
    with pytest.raises(SpecError) as err:
        build_model(arch, {}, input_shape=(4,), num_classes=3, seed=0)
    assert "use the mlp architecture" in str(err.value) and "\n" not in str(err.value)


def test_check_architecture_fills_defaults():
    assert check_architecture("mlp", {}) == {"widths": [100, 100], "activation": "relu"}
    assert check_architecture("wrn", {"k": 4}) == {"depth": 28, "k": 4}
    assert check_architecture("resnet56", None) == {"shortcut": "A"}
    assert check_architecture("cnn", {"hidden": (32,)})["hidden"] == [32]


@pytest.mark.parametrize(
    ("arch", "cfg", "words"),
    [
        ("resnet50", {}, "mlp, cnn, resnet20"),
        ("mlp", {"width": [3]}, "allowed keys: widths, activation"),
        ("mlp", {"activation": "gelu"}, "['relu', 'tanh', 'sigmoid']"),
        ("mlp", {"widths": [3, 0]}, "positive integers"),
        ("cnn", {"channels": []}, "non-empty"),
        ("cnn", {"kernel_size": 4}, "odd"),
        ("cnn", {"batchnorm": 1}, "true or false"),
        ("wrn", {"depth": 27}, "6n + 4"),
        ("wrn", {"k": True}, "integer >= 1"),
        ("resnet20", {"shortcut": "C"}, "['A', 'B']"),
        ("vgg9", "wide", "table of keys"),
    ],
)
def test_bad_architecture_specs_raise_one_line_spec_errors(arch, cfg, words):
    with pytest.raises(SpecError) as err:
        check_architecture(arch, cfg)
    assert words in str(err.value) and "\n" not in str(err.value)
