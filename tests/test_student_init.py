"""A fresh student starts as a zoo model of its own shapes would: the comparison of a cut
student with a hand-designed one (protocol (b)) is not a comparison of initialisations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Selection
from kdsearch.models import build_model
from kdsearch.student.spec import STRUCTURAL, build_student, make_spec

CIFAR = (3, 32, 32)


def _spec(model: str, classes: int, selection_of) -> dict:
    teacher = build_model(model, classes, 3).eval()
    units = TopologyGraph(teacher, CIFAR, STRUCTURAL).units
    info = {"model": model, "num_classes": classes, "input_size": list(CIFAR)}
    return make_spec(info, units, selection_of(units), 0, 0)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: m.weight for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_a_depth_cut_of_resnet56_starts_like_resnet20():
    """(3,3,3) cut from resnet56 is resnet20's architecture, with resnet20's layer names: every
    layer's weights have the spread the zoo gives resnet20 (He-normal, fan-out)."""
    def first_three(units):
        return Selection(removed_blocks={u.id for u in units.blocks
                                         if int(u.label.split(".")[1]) >= 3})
    torch.manual_seed(0)
    cut = build_student(_spec("resnet56", 100, first_three))
    zoo = build_model("resnet20", 100, 3)
    mine, theirs = _weights(cut), _weights(zoo)
    assert set(mine) == set(theirs)
    for name, weight in theirs.items():
        if isinstance(zoo.get_submodule(name), nn.Conv2d):
            assert (mine[name].std() / weight.std()).item() == pytest.approx(1, abs=0.15), name
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0)
               for m in cut.modules() if isinstance(m, nn.BatchNorm2d))


def test_a_thinned_conv_gets_the_spread_of_its_own_width():
    """He-normal in fan-out mode at the cut's shape: a conv kept at 4 of 16 outputs draws
    from N(0, 2 / (4 * 9)), not the teacher's N(0, 2 / (16 * 9)) nor PyTorch's default."""
    def thin(units):
        unit = next(u for u in units.channels if u.label == "layer1.0.conv1")
        return Selection(kept={unit.id: [0, 1, 2, 3]})
    torch.manual_seed(0)
    conv = build_student(_spec("resnet8", 100, thin)).get_submodule("layer1.0.conv1")
    assert conv.weight.shape == (4, 16, 3, 3)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 36), rel=0.12)


@pytest.mark.parametrize("model, classifier", [("vgg8", "classifier"),
                                               ("mobilenetv2", "classifier.0"),
                                               ("wrn_16_1", "fc")])
def test_every_zoo_family_keeps_its_own_initialisation(model, classifier):
    torch.manual_seed(0)
    cut = build_student(_spec(model, 10, lambda units: Selection()))
    zoo = build_model(model, 10, 3)
    head, expected = cut.get_submodule(classifier).weight, zoo.get_submodule(classifier).weight
    assert (head.std() / expected.std()).item() == pytest.approx(1, abs=0.15)
    for name, weight in _weights(zoo).items():
        if isinstance(zoo.get_submodule(name), nn.Conv2d) and weight.numel() >= 500:
            got = cut.get_submodule(name).weight
            assert (got.std() / weight.std()).item() == pytest.approx(1, abs=0.2), name


def test_a_family_without_its_own_initialisation_gets_pytorch_defaults():
    from kdsearch.models.registry import FAMILY_INITS, initialise_like

    assert "shufflenetv2" not in FAMILY_INITS and "resnet_cifar" in FAMILY_INITS
    layer = nn.Sequential(nn.Conv2d(16, 16, 3))
    nn.init.zeros_(layer[0].weight)
    initialise_like(layer, "generic")
    bound = 1 / math.sqrt(16 * 9)  # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), ...)
    assert 0 < layer[0].weight.abs().max() <= bound



@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "efficientnet_b0",
                                  "squeezenet1_0", "mnasnet0_5", "regnet_x_400mf"])
def test_a_cut_of_a_torchvision_teacher_starts_as_torchvision_initialises_it(arch):
    """Every sizeable conv and linear layer of a fresh cut has the spread torchvision's
    constructor gives the same layer (PyTorch's defaults are 1.7-2.5x narrower for the convs)."""
    name = f"torchvision:{arch}"
    torch.manual_seed(0)
    cut = build_student(_spec(name, 10, lambda units: Selection()))
    zoo = build_model(name, 10, 3)
    checked = 0
    for layer, weight in _weights(zoo).items():
        if weight.numel() >= 2000:
            got = cut.get_submodule(layer).weight
            assert (got.std() / weight.std()).item() == pytest.approx(1, abs=0.2), layer
            checked += 1
    assert checked >= 5
