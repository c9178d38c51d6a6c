"""Topology graph and units: coupling rules, extraction exactness, MAC model vs counting."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torchvision

from kdsearch.graph import Constraints, TopologyGraph, TraceFailure, register_leaf_module
from kdsearch.graph.counting import count_macs, count_model
from kdsearch.graph.trace import trace_with_shapes
from kdsearch.graph.units import Selection
from kdsearch.models import build_model, model_names
from kdsearch.search.cost import MacModel
from kdsearch.search.gates import build_gated, fold_gates, gate_bank
from kdsearch.student.extract import extract_student
from kdsearch.student.run import harden_gates

ALL = Constraints(keep_stem=False, min_channels=0)


def randomise_norms(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics so exactness tests can fail."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
        if hasattr(m, "layer_scale"):
            m.layer_scale.data.fill_(0.5)
    return model.eval()


def random_selection(units, gates, seed=1) -> Selection:
    """Random kept channels and removed blocks; gates get random values, 0 where removed."""
    gen = torch.Generator().manual_seed(seed)
    selection = Selection()
    for unit in units.searchable():
        with torch.no_grad():
            gates[unit.id].copy_(torch.rand(unit.size, generator=gen) + 0.5)
        if unit.kind == "channels":
            k = int(torch.randint(1, unit.size + 1, (1,), generator=gen))
            selection.kept[unit.id] = sorted(torch.randperm(unit.size, generator=gen)[:k].tolist())
        elif torch.rand(1, generator=gen) < 0.5:
            selection.removed_blocks.add(unit.id)
    harden_gates(gates, selection)
    return selection


def check_exact_extraction(model: nn.Module, input_size, seed=1):
    """Gated network (gates 1) == teacher; hardened gated == extracted; MACs agree."""
    model = randomise_norms(model)
    x = torch.randn(2, *input_size)
    topology = TopologyGraph(model, input_size, ALL)
    gated = build_gated(topology.gm, topology.units).eval()
    with torch.no_grad():
        torch.testing.assert_close(gated(x), model(x))
    selection = random_selection(topology.units, gate_bank(gated).gates, seed)
    student = extract_student(fold_gates(gated), topology.units, selection).eval()
    with torch.no_grad():
        torch.testing.assert_close(student(x), gated(x), rtol=1e-4, atol=1e-5)
    kept = {uid: len(k) for uid, k in selection.kept.items()}
    predicted = MacModel(topology.units, topology.macs_per_node).macs(
        kept, selection.removed_blocks)
    assert predicted == count_model(student, input_size).macs
    return topology, student


CIFAR_ZOO = [n for n in model_names() if not n.startswith("digits")]


@pytest.mark.parametrize("name", [*CIFAR_ZOO, "digits_resnet14"])
def test_zoo_extraction_is_exact(name):
    size = (1, 8, 8) if name.startswith("digits") else (3, 32, 32)
    model = build_model(name, num_classes=10, in_channels=size[0])
    topology, _ = check_exact_extraction(model, size)
    assert topology.units.searchable(), f"{name} has no searchable unit"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mobilenet_v3_small",
                                  "efficientnet_b0", "regnet_y_400mf", "densenet121",
                                  "vgg11_bn", "shufflenet_v2_x0_5", "convnext_tiny"])
def test_torchvision_extraction_is_exact(name):
    model = torchvision.models.get_model(name, num_classes=10)
    topology, _ = check_exact_extraction(model, (3, 64, 64))
    assert topology.units.searchable()


def tiny_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=32, mlp_dim=64,
                                               num_classes=10)


def test_vit_attention_and_mlp_branches_are_removable_blocks():
    """``x, _ = self.self_attention(...)``: the unread attention weights do not keep the
    attention branch from being a block; its label says which branch of the layer it is."""
    topology, _ = check_exact_extraction(tiny_vit(), (3, 32, 32))
    assert [u.label for u in topology.units.blocks] == [
        f"encoder.layers.encoder_layer_{i} ({parts})"
        for i in range(2) for parts in ("ln_1, self_attention, dropout", "ln_2, mlp")]
    model = randomise_norms(tiny_vit())
    topology = TopologyGraph(model, (3, 32, 32), ALL)
    gated = build_gated(topology.gm, topology.units).eval()
    selection = Selection(removed_blocks={"blk0", "blk2"})  # both attention branches
    harden_gates(gate_bank(gated).gates, selection)
    student = extract_student(fold_gates(gated), topology.units, selection).eval()
    assert not any(isinstance(m, nn.MultiheadAttention) for m in student.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(student(x), gated(x), rtol=1e-4, atol=1e-5)


def test_resnet20_units():
    topology = TopologyGraph(build_model("resnet20"), (3, 32, 32), ALL)
    channels = {u.label: u for u in topology.units.channels}
    # the residual stream of stage 1 is one group with the stem conv
    stream = channels["conv1"]
    assert stream.size == 16 and len(stream.producers) == 4 and len(stream.members) == 4
    assert channels["layer2.0.downsample.0"].size == 32
    assert not channels["fc"].searchable  # logits reach the output
    blocks = [b.label for b in topology.units.blocks]
    assert blocks == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2",
                      "layer3.1", "layer3.2"]  # projection blocks are not removable
    assert topology.macs == pytest.approx(40.8e6, rel=0.01)


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.dw = nn.Conv2d(10, 10, 3, padding=1, groups=10)
        self.head = nn.Linear(10 * 4, 5)

    def forward(self, x):
        y = self.dw(torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1))))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 2), 1))


def test_concat_depthwise_flatten_are_sliced_exactly():
    topology, _ = check_exact_extraction(ConcatNet(), (3, 8, 8))
    labels = {u.label for u in topology.units.searchable()}
    assert labels == {"a", "b"}


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.g(self.a(x)).mean([2, 3]))


def test_grouped_conv_fixes_its_channels():
    topology = TopologyGraph(GroupedNet(), (3, 8, 8), ALL)
    unit = next(u for u in topology.units.channels if u.label == "a")
    assert not unit.searchable and "grouped" in unit.reason


class Opaque(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x  # data-dependent: not traceable


class UsesOpaque(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.odd = nn.Conv2d(3, 4, 1), Opaque()

    def forward(self, x):
        return self.odd(self.conv(x)).mean([2, 3])


def test_untraceable_names_module_and_leaf_registry_fixes_it():
    with pytest.raises(TraceFailure, match="odd"):
        TopologyGraph(UsesOpaque(), (3, 4, 4))
    register_leaf_module(Opaque)
    try:
        topology = TopologyGraph(UsesOpaque(), (3, 4, 4), ALL)
        assert topology.graph.nodes["odd"]["kind"] == "Opaque"
    finally:
        from kdsearch.graph.trace import LEAF_MODULE_TYPES

        LEAF_MODULE_TYPES.discard(Opaque)


def test_constraints_keep_patterns_and_min_channels():
    model = build_model("resnet20")
    free = TopologyGraph(model, (3, 32, 32), ALL).units
    kept = TopologyGraph(model, (3, 32, 32), Constraints(keep=("layer1.*",), min_channels=16,
                                                         keep_stem=True)).units
    assert {u.label for u in free.searchable()} > {u.label for u in kept.searchable()}
    assert not any(u.label.startswith("layer1") for u in kept.searchable())
    assert all(u.size > 16 for u in kept.channels if u.searchable)


def test_graph_json_round_trip(tmp_path):
    topology = TopologyGraph(build_model("resnet8"), (3, 32, 32))
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(topology.to_json()))
    graph = TopologyGraph.from_json(json.loads(path.read_text()))
    assert set(graph.nodes) == set(topology.graph.nodes)
    assert set(graph.edges) == set(topology.graph.edges)
    assert sum(d["macs"] for _, d in graph.nodes(data=True)) == topology.macs
    assert [u["id"] for u in graph.graph["units"]] == [
        u.id for u in [*topology.units.channels, *topology.units.blocks]]


def test_per_node_macs_of_a_conv():
    gm = trace_with_shapes(build_model("resnet20"), torch.randn(1, 3, 32, 32))
    macs = count_macs(gm)
    assert macs["layer1_0_conv1"] == 32 * 32 * 16 * 16 * 9
    assert macs["fc"] == 64 * 100
