"""MACs, FLOPs and params: published sizes and an independent count (FlopCounterMode)."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from kdsearch.cli import main
from kdsearch.graph.counting import count_model
from kdsearch.models import build_model

# BENCHMARKS.md: (params M, MACs M) at 100 classes, 3x32x32
PUBLISHED = {
    "resnet20": (0.278, 40.8), "resnet32": (0.473, 69.1), "resnet56": (0.862, 125.8),
    "resnet110": (1.737, 253.2), "resnet8x4": (1.234, 177.1), "resnet32x4": (7.434, 1083.0),
    "wrn_16_2": (0.703, 101.1), "wrn_40_1": (0.570, 83.3), "wrn_40_2": (2.255, 327.6),
    "vgg8": (3.965, 96.2), "vgg13": (9.462, 284.9),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_sizes_within_one_percent(name):
    params, macs = PUBLISHED[name]
    counts = count_model(build_model(name, num_classes=100), (3, 32, 32))
    assert counts.macs == pytest.approx(macs * 1e6, rel=0.01)
    assert counts.params == pytest.approx(params * 1e6, rel=0.01)


def conv_and_matmul_flops(model: torch.nn.Module, input_size) -> int:
    """Independent count: FlopCounterMode's convolution + matmul FLOPs (2 per MAC)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *input_size))
    per_op = counter.get_flop_counts()["Global"]
    ops = ("convolution", "mm", "addmm", "bmm", "matmul")
    return sum(v for op, v in per_op.items() if any(str(op).startswith(f"aten.{o}") for o in ops))


ZOO = ["resnet8", "resnet20", "resnet8x4", "wrn_16_1", "vgg8", "mobilenetv2", "shufflenetv2",
       "digits_resnet14"]
TORCHVISION = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "vgg11_bn", "regnet_y_400mf",
               "efficientnet_b0", "densenet121", "convnext_tiny", "shufflenet_v2_x0_5"]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_macs_match_flop_counter(name):
    in_channels = 1 if name.startswith("digits") else 3
    size = (in_channels, 8, 8) if in_channels == 1 else (3, 32, 32)
    model = build_model(name, num_classes=10, in_channels=in_channels)
    counts = count_model(model, size)
    assert 2 * counts.macs == conv_and_matmul_flops(model, size)
    assert counts.flops >= 2 * counts.macs


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_macs_match_flop_counter(name):
    model = torchvision.models.get_model(name, num_classes=10)
    counts = count_model(model, (3, 64, 64))
    assert 2 * counts.macs == conv_and_matmul_flops(model, (3, 64, 64))
    assert sum(counts.macs_per_node.values()) == counts.macs


def test_flops_command_json(capsys):
    assert main(["flops", "resnet56", "--num-classes", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["macs"] == pytest.approx(125.8e6, rel=0.01)
    assert report["params"] == pytest.approx(0.862e6, rel=0.01)
    assert all(isinstance(report[k], int) for k in ("macs", "flops", "params"))


def test_flops_command_unknown_model(capsys):
    assert main(["flops", "resnet65"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet65'" in err and "resnet56" in err and len(err.splitlines()) == 1
    # what else a model name may be
    assert "torchvision:NAME" in err and "FILE.py:NAME" in err and "student.json" in err


def test_a_model_fx_cannot_trace_is_still_counted(tmp_path, capsys):
    """Data-dependent control flow defeats torch.fx; flops runs the model once under
    FlopCounterMode instead, says so, and its MACs agree with the traced count elsewhere."""
    from kdsearch.graph.counting import count_untraced

    (tmp_path / "untraceable.py").write_text(
        "import torch.nn as nn\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 8, 3, padding=1)\n"
        "        self.fc = nn.Linear(8, num_classes)\n\n"
        "    def forward(self, x):\n        x = self.conv(x)\n"
        "        if x.sum() > 0:\n            x = x.relu()\n"
        "        return self.fc(x.mean((2, 3)))\n")
    assert main(["flops", f"{tmp_path / 'untraceable.py'}:Net", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["macs"] == 8 * 3 * 9 * 32 * 32 + 8 * 10  # conv + linear, by hand
    assert report["counted"] == "FlopCounterMode (not traceable)"
    model = build_model("resnet8", num_classes=100)
    assert count_untraced(model, (3, 32, 32)).macs == count_model(model, (3, 32, 32)).macs


def test_flops_per_layer_lists_module_paths_shapes_params_and_macs(capsys):
    from kdsearch.cli.flops import layer_rows

    model = build_model("resnet8", num_classes=100)
    rows = layer_rows(model, (3, 32, 32))
    assert sum(row["macs"] for row in rows) == count_model(model, (3, 32, 32)).macs
    assert rows[0] == {"layer": "conv1", "type": "Conv2d", "output": [16, 32, 32],
                       "params": 16 * 3 * 9, "macs": 16 * 3 * 9 * 32 * 32}
    assert rows[-1]["layer"] == "fc" and rows[-1]["output"] == [100]
    assert main(["flops", "resnet8", "--per-layer"]) == 0
    printed = capsys.readouterr().out
    assert "layer" in printed and "layer2.0.downsample.0" in printed and "32x16x16" in printed


def test_flops_per_layer_of_a_spec_shows_teacher_to_student_widths(tmp_path, capsys):
    from kdsearch.graph.topology import TopologyGraph
    from kdsearch.graph.units import Selection
    from kdsearch.io import write_json
    from kdsearch.student.spec import make_spec

    teacher = build_model("resnet8", num_classes=10)
    topology = TopologyGraph(teacher, (3, 32, 32))
    unit = next(u for u in topology.units.channels if u.searchable and u.size == 16)
    selection = Selection(kept={unit.id: list(range(5))})
    info = {"model": "resnet8", "num_classes": 10, "input_size": [3, 32, 32]}
    write_json(tmp_path / "student.json", make_spec(info, topology.units, selection, 0, 0))
    assert main(["flops", str(tmp_path / "student.json"), "--per-layer"]) == 0
    assert "16->5" in capsys.readouterr().out
