"""Feature taps at stage boundaries, features with logits, and heads after a tap."""

from __future__ import annotations

import pytest
import torch
import torchvision

from kdsearch.graph.taps import WithFeatures, head_after, stage_taps
from kdsearch.models import build_model


@pytest.mark.parametrize("name, shapes", [
    ("resnet20", [(16, 32, 32), (32, 16, 16), (64, 8, 8)]),
    ("wrn_16_2", [(32, 32, 32), (64, 16, 16), (128, 8, 8)]),
    ("vgg8", [(128, 16, 16), (256, 8, 8), (512, 4, 4)]),
    ("resnet8x4", [(64, 32, 32), (128, 16, 16), (256, 8, 8)]),
])
def test_stage_taps_of_the_zoo(name, shapes):
    taps = stage_taps(build_model(name, num_classes=10), (3, 32, 32))
    assert [t.shape for t in taps] == shapes


def test_torchvision_resnet_skips_the_stem():
    taps = stage_taps(torchvision.models.resnet18(num_classes=10), (3, 64, 64))
    assert [t.shape[0] for t in taps] == [64, 128, 256, 512]


def test_preact_taps_read_before_the_final_relu():
    model = build_model("resnet20", num_classes=10).eval()
    post, pre = stage_taps(model, (3, 32, 32)), stage_taps(model, (3, 32, 32), preact=True)
    x = torch.randn(2, 3, 32, 32)
    _, after = WithFeatures(model, post)(x)
    _, before = WithFeatures(model, pre)(x)
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, torch.relu(b))
        assert (b < 0).any()


def test_features_share_parameters_and_head_reproduces_logits():
    model = build_model("resnet8", num_classes=10).eval()
    taps = stage_taps(model, (3, 32, 32))
    with_features = WithFeatures(model, taps)
    x = torch.randn(2, 3, 32, 32)
    logits, features = with_features(x)
    torch.testing.assert_close(logits, model(x))
    torch.testing.assert_close(head_after(model, taps[-1])(features[-1]), model(x))
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in with_features.parameters()} == ids


def test_preact_tap_survives_inplace_relu():
    model = torchvision.models.resnet18(num_classes=10).eval()  # uses ReLU(inplace=True)
    taps = stage_taps(model, (3, 64, 64), preact=True)
    with torch.no_grad():
        _, features = WithFeatures(model, taps)(torch.randn(2, 3, 64, 64))
    assert all((f < 0).any() for f in features)
