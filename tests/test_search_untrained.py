"""No search diverges on a zoo teacher, trained or not: an untrained teacher's outputs (huge
logits through BatchNorm at its initial statistics, or near-uniform ones) are a legitimate
input."""

from __future__ import annotations

import dataclasses
import math

import pytest

from kdsearch.data import load_dataset
from kdsearch.models import MODELS, build_model, model_names
from kdsearch.presets import load_preset
from kdsearch.search.config import SearchConfig
from kdsearch.search.selectors import SELECTORS
from kdsearch.student.run import search_student

CIFAR_LIKE = [name for name in model_names() if MODELS.meta(name).get("family") != "digits"]
DEFAULT = SearchConfig().selector
# the default selector on every zoo teacher; the others on the deepest and the odd ones
CASES = [(name, DEFAULT) for name in CIFAR_LIKE] + [
    (name, selector) for selector in SELECTORS.names() if selector != DEFAULT
    for name in ("resnet110", "resnet32x4", "wrn_40_2", "vgg19", "mobilenetv2",
                 "shufflenetv2")]


@pytest.mark.slow
@pytest.mark.parametrize("name, selector", CASES)
def test_the_default_search_of_an_untrained_zoo_teacher_stays_finite_and_lands(
        name, selector, tmp_path):
    dataset = load_dataset("synthetic", num_classes=100, input_size=(3, 32, 32),
                           num_train=64, num_test=32)
    teacher = build_model(name, num_classes=100, in_channels=3)
    constraints, config = load_preset(MODELS.meta(name)["family"])
    config = dataclasses.replace(config, steps=10, batch_size=8, selector=selector)
    result = search_student(teacher, name, dataset, "0.3x", config, constraints, tmp_path,
                            progress=False)
    summary = result.summary
    assert math.isfinite(summary["search"]["final_kl"])
    assert 0.97 <= summary["budget_fraction"] <= 1.0
