"""The model zoo: every registered model builds, runs, traces; checkpoints load or fail clearly."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kdsearch.errors import KdsearchError, UnknownNameError
from kdsearch.models.checkpoint import load_weights, save_weights
from kdsearch.models.registry import MODELS, build_model, model_family, model_names

FAMILIES = {"resnet_cifar", "wrn", "vgg", "mobilenetv2", "shufflenetv2", "digits"}

# Published parameter counts (millions) at 100 classes, CRD / RepDistiller model zoo.
PUBLISHED_PARAMS_M = {
    "resnet20": 0.278,
    "resnet56": 0.862,
    "resnet110": 1.737,
    "resnet8x4": 1.234,
    "resnet32x4": 7.434,
    "wrn_16_2": 0.703,
    "wrn_40_1": 0.570,
    "wrn_40_2": 2.255,
    "vgg8": 3.965,
    "vgg13": 9.462,
}


def natural_build(name: str, num_classes: int = 7) -> tuple[nn.Module, torch.Tensor]:
    """The model in eval mode and a random batch of 2 at its natural input size."""
    input_size = MODELS.meta(name)["input_size"]
    model = build_model(name, num_classes=num_classes, in_channels=input_size[0]).eval()
    return model, torch.randn(2, *input_size)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture
def small_model() -> nn.Module:
    return build_model("resnet8", num_classes=10).eval()


@pytest.mark.parametrize("name", model_names())
def test_model_builds_runs_and_traces(name: str) -> None:
    assert model_family(name) in FAMILIES
    model, x = natural_build(name)
    with torch.no_grad():
        logits = model(x)
        traced = torch.fx.symbolic_trace(model)(x)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(traced, logits)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_param_count_matches_published(name: str) -> None:
    measured = param_count(build_model(name, num_classes=100)) / 1e6
    assert measured == pytest.approx(PUBLISHED_PARAMS_M[name], rel=0.01)


def test_reference_key_names() -> None:
    keys = {
        "resnet8x4": ["conv1.weight", "layer1.0.conv1.weight", "layer1.0.downsample.0.weight"],
        "wrn_16_2": ["block1.layer.0.bn1.weight", "block1.layer.0.convShortcut.weight"],
        "vgg8": ["block0.0.weight", "block0.0.bias", "block0.1.running_mean"],
        "mobilenetv2": ["conv1.0.weight", "blocks.0.0.conv.7.weight", "conv2.0.weight"],
        "shufflenetv2": ["layer1.0.conv5.weight", "layer1.1.conv3.weight", "bn2.weight"],
    }
    heads = {"vgg8": "classifier.weight", "mobilenetv2": "classifier.0.weight"}
    heads["shufflenetv2"] = "linear.weight"
    for name, expected in keys.items():
        state = build_model(name).state_dict()
        assert set(expected) | {heads.get(name, "fc.weight")} <= set(state), name


def test_digits_models_fit_8x8_and_students_are_smaller() -> None:
    sizes = {n: param_count(natural_build(n, 10)[0]) for n in model_names() if "digits" in n}
    assert set(sizes) == {"digits_resnet14", "digits_resnet8", "digits_resnet8_half"}
    assert max(sizes["digits_resnet8"], sizes["digits_resnet8_half"]) < sizes["digits_resnet14"]


def test_saved_checkpoint_loads_into_fresh_model(tmp_path, small_model) -> None:
    path = save_weights(small_model, tmp_path / "w.pt")
    fresh = build_model("resnet8", num_classes=10).eval()
    load_weights(fresh, path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), small_model(x))


@pytest.mark.parametrize("wrapper", ["model", "state_dict", "net"])
def test_wrapped_and_parallel_checkpoints_load(tmp_path, small_model, wrapper) -> None:
    state = {f"module.{k}": v for k, v in small_model.state_dict().items()}
    torch.save({wrapper: state, "epoch": 240, "best_acc": torch.tensor(73.5)}, tmp_path / "c.pt")
    fresh = build_model("resnet8", num_classes=10)
    load_weights(fresh, tmp_path / "c.pt")
    for key, value in small_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_state_dict_without_bn_counters_loads(small_model) -> None:
    state = {k: v for k, v in small_model.state_dict().items() if "num_batches" not in k}
    fresh = build_model("resnet8", num_classes=10)
    load_weights(fresh, state)
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_key_mismatch_lists_missing_and_unexpected(small_model) -> None:
    state = dict(small_model.state_dict())
    state["extra.weight"] = state.pop("fc.weight")
    del state["fc.bias"]
    with pytest.raises(KdsearchError) as info:
        load_weights(build_model("resnet8", num_classes=10), state, model_name="resnet8")
    message = str(info.value)
    assert "\n" not in message
    assert "does not fit resnet8" in message
    assert "2 missing keys (fc.weight, fc.bias)" in message
    assert "1 unexpected (extra.weight)" in message


def test_shape_mismatch_is_reported(small_model) -> None:
    wide = build_model("resnet8", num_classes=100)
    with pytest.raises(KdsearchError, match=r"2 shape mismatches \(fc.weight: checkpoint"):
        load_weights(wide, small_model.state_dict())


def test_failed_load_leaves_model_untouched(small_model) -> None:
    target = build_model("resnet8", num_classes=100)
    before = target.conv1.weight.clone()
    with pytest.raises(KdsearchError):
        load_weights(target, small_model.state_dict())
    assert torch.equal(target.conv1.weight, before)


def test_truncated_missing_and_foreign_files_fail_in_one_line(tmp_path, small_model) -> None:
    good = save_weights(small_model, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases = {
        truncated: "truncated or corrupted",
        tmp_path / "absent.pt": "no such file",
        tmp_path / "list.pt": "holds a 'list' object, not a state_dict",
    }
    for path, expected in cases.items():
        with pytest.raises(KdsearchError, match=expected) as info:
            load_weights(small_model, path)
        assert "\n" not in str(info.value)


class PickledCode:
    """A class whose instances only unpickle by importing (running) this module's code."""


def test_checkpoint_with_pickled_code_is_refused(tmp_path, small_model) -> None:
    torch.save({"model": small_model.state_dict(), "extra": PickledCode()}, tmp_path / "c.pt")
    with pytest.raises(KdsearchError, match=r"not a plain weights file.*PickledCode"):
        load_weights(small_model, tmp_path / "c.pt")


def test_unknown_model_name_suggests_close_match() -> None:
    with pytest.raises(UnknownNameError, match="resnet56"):
        build_model("resnet65")
    with pytest.raises(UnknownNameError):
        build_model("nonexistent")


def test_torchvision_models_resolve() -> None:
    model = build_model("torchvision:resnet18", num_classes=10)
    assert model.fc.out_features == 10
