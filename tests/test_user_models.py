"""The user's own models, named FILE.py:NAME or package.module:NAME."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from kdsearch.data import load_dataset
from kdsearch.errors import KdsearchError
from kdsearch.graph import Constraints, TraceFailure
from kdsearch.graph.counting import count_model
from kdsearch.models import build_model, model_family
from kdsearch.models.user import is_user_model, portable_name
from kdsearch.search.config import SearchConfig
from kdsearch.student.resolve import resolve_model
from kdsearch.student.run import search_student
from kdsearch.student.spec import load_student

NETS = """\
import torch.nn as nn

import kdsearch.graph

CALLS = []


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, width=8):
        super().__init__()
        CALLS.append((num_classes, in_channels))
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.bn(self.conv(x)).relu()
        return self.fc(self.conv2(x).relu().mean((2, 3)))


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class Gated(Net):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gate = Gate()

    def forward(self, x):
        return super().forward(self.gate(x))


def fixed_head():
    return Net(num_classes=4, in_channels=3)


def opaque_gate(num_classes):
    kdsearch.graph.register_leaf_module(Gate)
    return Gated(num_classes=num_classes)
"""


@pytest.fixture
def nets(tmp_path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(NETS)
    return path


def test_names_that_point_into_user_code():
    assert is_user_model("nets.py:Net") and is_user_model("my.pkg:build")
    assert not is_user_model("resnet56") and not is_user_model("torchvision:resnet18")
    assert not is_user_model("nets.py:") and not is_user_model(":Net")


def test_the_factory_gets_the_arguments_it_takes(nets):
    model = build_model(f"{nets}:Net", num_classes=5, in_channels=3)
    assert model.fc.out_features == 5 and model.conv.in_channels == 3
    # one module per file: a second build does not import the file again
    calls = sys.modules[type(model).__module__].CALLS
    build_model(f"{nets}:Net", num_classes=7, in_channels=1)
    assert calls == [(5, 3), (7, 1)]
    assert model_family(f"{nets}:Net") == "generic"


def test_a_factory_without_arguments_keeps_its_head(nets):
    resolved = resolve_model(f"{nets}:fixed_head")
    assert resolved.num_classes == 4 and resolved.input_size == (3, 32, 32)
    with pytest.raises(KdsearchError, match="outputs 4 classes, not 10"):
        resolve_model(f"{nets}:fixed_head", num_classes=10, input_size=(3, 8, 8))


def test_a_package_module_works_like_a_file(nets, monkeypatch):
    monkeypatch.syspath_prepend(str(nets.parent))
    monkeypatch.delitem(sys.modules, "nets", raising=False)
    model = build_model("nets:Net", num_classes=3, in_channels=1)
    assert model.fc.out_features == 3


def test_macs_of_a_user_model_match_a_hand_count(nets):
    counts = count_model(build_model(f"{nets}:Net", num_classes=10, in_channels=1), (1, 8, 8))
    conv, conv2, fc = 8 * 1 * 9 * 64, 16 * 8 * 9 * 64, 16 * 10
    assert counts.macs == conv + conv2 + fc


def test_an_untraceable_model_names_its_line_and_a_leaf_registration_fixes_it(nets):
    with pytest.raises(TraceFailure, match=r"in module 'gate' at nets.py:\d+ `if x.sum\(\) > 0:`"):
        count_model(build_model(f"{nets}:Gated", num_classes=10, in_channels=1), (1, 8, 8))
    model = build_model(f"{nets}:opaque_gate", num_classes=10)
    assert count_model(model, (1, 8, 8)).macs > 0


def test_a_searched_user_model_rebuilds_from_its_spec_anywhere(nets, tmp_path, monkeypatch):
    monkeypatch.chdir(nets.parent)
    digits = load_dataset("digits", subset=128)
    torch.manual_seed(0)
    teacher = resolve_model("nets.py:Net", digits.num_classes, digits.input_size).model
    config = SearchConfig(steps=6, batch_size=32, device="cpu")
    result = search_student(teacher, "nets.py:Net", digits, "0.5x", config, Constraints(),
                            tmp_path / "search", progress=False)
    assert result.spec["teacher"]["model"] == portable_name("nets.py:Net") == f"{nets}:Net"
    monkeypatch.chdir(tmp_path.parent)  # the spec names the file by its absolute path
    student = load_student(tmp_path / "search" / "student.json",
                           weights=str(tmp_path / "search" / "student.pt"))
    assert count_model(student.model, (1, 8, 8)).macs == result.summary["student"]["macs"]


def test_a_file_imports_its_neighbours_and_required_arguments_are_named(tmp_path):
    (tmp_path / "blocks.py").write_text("import torch.nn as nn\n\n\nclass Block(nn.Conv2d):\n"
                                        "    pass\n")
    (tmp_path / "composed.py").write_text(
        "import torch.nn as nn\nfrom blocks import Block\n\n\ndef net(num_classes):\n"
        "    return nn.Sequential(Block(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(4, num_classes))\n")
    with pytest.raises(KdsearchError, match="needs num_classes: give it with --num-classes"):
        resolve_model(f"{tmp_path}/composed.py:net", input_size=(1, 8, 8))
    resolved = resolve_model(f"{tmp_path}/composed.py:net", 6, (1, 8, 8))
    assert resolved.num_classes == 6 and type(resolved.model[0]).__name__ == "Block"
