"""The selectors as a contract, and the ``l1`` selector landing on the budget by its gates."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from kdsearch.cli import main
from kdsearch.data import dataset_batches, load_dataset
from kdsearch.errors import KdsearchError
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Constraints
from kdsearch.models import build_model
from kdsearch.presets import load_preset
from kdsearch.search.config import SearchConfig
from kdsearch.search.cost import MacModel
from kdsearch.search.gates import build_gated, gate_bank
from kdsearch.search.search import GatedSearch
from kdsearch.search.selectors import SELECTORS
from kdsearch.student.run import search_student


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory, digits):
    """digits_resnet14 trained for 15 epochs (about 99 % on the test split, 6 s)."""
    out = tmp_path_factory.mktemp("teacher")
    assert main(["teacher", "--model", "digits_resnet14", "--dataset", "digits", "--epochs",
                 "15", "--out", str(out), "--quiet"]) == 0
    teacher = build_model("digits_resnet14", num_classes=10, in_channels=1)
    teacher.load_state_dict(torch.load(out / "teacher.pt", weights_only=True))
    return teacher.eval()


def test_l1_lands_on_the_budget_by_its_gates_alone(trained_teacher, digits, tmp_path):
    """At 0.3x the gates' own zeros are the student: within [97%, 100%] of the budget with
    nothing removed or restored by the ranking, channels removed inside channel groups (not
    only whole blocks), and the student works before any retraining."""
    constraints, config = load_preset("digits")
    config = dataclasses.replace(config, selector="l1")
    result = search_student(trained_teacher, "digits_resnet14", digits, "0.3x", config,
                            constraints, tmp_path, progress=False)
    summary, selection = result.summary, result.summary["selection"]
    assert 0.97 <= selection["macs_from_gates"] / summary["budget_macs"] <= 1.0
    assert selection["removed_by_rank"] == selection["restored_by_rank"] == 0
    thinned = [uid for uid, kept in result.selection.kept.items() if kept]
    assert thinned, "no channel group lost a channel: only blocks were removed"
    assert summary["student_test_acc"] >= 90
    assert summary["search"]["selector"] == "l1"


def gated_search(teacher, dataset, **options) -> GatedSearch:
    constraints = Constraints(keep_stem=False, min_channels=2)
    topology = TopologyGraph(teacher, dataset.input_size, constraints)
    model = MacModel(topology.units, topology.macs_per_node)
    config = SearchConfig(steps=40, amp=False, channels_last=False, **options)
    return GatedSearch(build_gated(topology.gm, topology.units), teacher, model,
                       model.full // 2, config, topology.units, constraints)


@pytest.mark.parametrize("selector", SELECTORS.names())
def test_every_selector_meets_the_falling_target_and_keeps_zeros(selector, trained_teacher,
                                                                   digits):
    """The registry-wide contract: the live MACs follow the target down (never far below
    it), and a gate at zero stays at zero while selecting."""
    search = gated_search(trained_teacher, digits, selector=selector, lr=0.01)
    batches = dataset_batches(digits, "train", 64, "cpu", seed=0)
    states = search.run(batches, progress=False, end=30)
    dead: dict[str, torch.Tensor] = {}
    for state in states:
        assert state.live_macs >= 0.9 * state.target_macs
    assert states[-1].live_macs <= states[-1].target_macs * 1.05
    gates = gate_bank(search.gated).gates
    for uid, gate in gates.items():
        dead[uid] = gate.detach() == 0
    search.run(batches, progress=False, start=30, end=34)
    for uid, gate in gates.items():
        assert bool((gate.detach()[dead[uid]] == 0).all())


def test_l1_gates_separate_inside_a_channel_group(trained_teacher, digits):
    """Channels of one group do not fall together: after the target has fallen, some
    channel groups hold gates at exactly zero beside live ones."""
    search = gated_search(trained_teacher, digits, selector="l1", lr=0.01)
    search.run(dataset_batches(digits, "train", 64, "cpu", seed=0), progress=False, end=30)
    gates = gate_bank(search.gated).gates
    split = [uid for uid, g in gates.items() if uid in search.mac_model.sizes
             and 0 < int((g > 0).sum()) < g.numel()]
    assert split


@pytest.mark.parametrize("selector, options, message", [
    ("l0", {}, "unknown selector 'l0'"),
    ("fisher", {"step": 0.5}, "selector 'fisher': unknown option 'step'"),
    ("l1", {"every": 5}, "selector 'l1': unknown option 'every'"),
    ("fisher", {"every": 0}, "every must be >= 1"),
    ("l1", {"step": 2.0}, "step must be in"),
])
def test_an_option_the_selector_does_not_read_is_refused(selector, options, message):
    with pytest.raises(KdsearchError, match=message):
        SearchConfig(selector=selector, options=options)


def test_a_preset_knob_no_selector_reads_is_refused(tmp_path):
    preset = tmp_path / "old.yaml"
    preset.write_text("family: digits\nsearch:\n  lambda_init: 0.1\n")
    with pytest.raises(KdsearchError, match="unknown key 'lambda_init'"):
        load_preset(str(preset))


def test_the_command_line_picks_the_selector(tmp_path, capsys):
    """--selector names another selector than the default (l1), so it must have acted."""
    assert SearchConfig().selector != "fisher"
    code = main(["search", "--teacher", "digits_resnet8", "--dataset", "digits", "--budget",
                 "0.5x", "--steps", "8", "--selector", "fisher", "--out", str(tmp_path),
                 "--quiet"])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["search"]["selector"] == "fisher"
    assert summary["config"]["selector"] == "fisher"


def test_a_search_that_epochs_make_too_short_says_what_to_pass():
    with pytest.warns(UserWarning, match=r"only 1 step \(1 epochs of 60 .*--steps 50"):
        SearchConfig(epochs=1.0, batch_size=64).resolved(60)


def test_another_selector_starts_from_its_own_options():
    """A preset's options belong to its selector: choosing another (--selector, compare's
    --selector, a pipeline's search.selector) starts from the new one's defaults."""
    preset = SearchConfig(selector="fisher", options={"every": 3})
    assert preset.overridden(selector="l1").options == {}
    assert preset.overridden(selector="l1", options={"step": 0.3}).options == {"step": 0.3}
    assert preset.overridden(selector="fisher").options == {"every": 3}
    with pytest.raises(KdsearchError, match="unknown option 'every'"):
        dataclasses.replace(preset, selector="l1")
