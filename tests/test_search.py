"""Budget parsing, landing on the budget, the search loop, student specs, the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from kdsearch.cli import main
from kdsearch.data import load_dataset
from kdsearch.errors import KdsearchError
from kdsearch.graph import Constraints, TopologyGraph
from kdsearch.graph.counting import count_model
from kdsearch.models import build_model
from kdsearch.pipeline.run import evaluate_accuracy
from kdsearch.search.budget import parse_budget
from kdsearch.search.config import SearchConfig
from kdsearch.search.cost import MacModel
from kdsearch.search.select import select_to_budget
from kdsearch.student.run import search_changes, search_student
from kdsearch.student.spec import build_student, load_student

TEACHER_MACS = 100_000_000


def like(name: str) -> int:
    return {"resnet20": 40_813_184}[name]


@pytest.mark.parametrize("text, expected", [
    ("41M", 41_000_000), ("1.5m", 1_500_000), ("0.02G", 20_000_000), ("40800000", 40_800_000),
    ("0.33x", 33_000_000), ("like:resnet20", 40_813_184), (" 2K ", 2000),
])
def test_budget_syntax(text, expected):
    assert parse_budget(text, TEACHER_MACS, like) == expected


@pytest.mark.parametrize("text, message", [
    ("0", "positive"), ("-5M", "not understood"), ("abc", "not understood"),
    ("200M", "not below the teacher"), ("1.5x", "not below the teacher"), ("0x", "positive"),
    ("-0.5x", "positive"), ("", "not understood"),
])
def test_bad_budgets(text, message):
    with pytest.raises(KdsearchError, match=message):
        parse_budget(text, TEACHER_MACS, like)


@pytest.mark.parametrize("fraction", [0.2, 0.33, 0.5, 0.8])
def test_selection_lands_in_budget_window(fraction):
    topology = TopologyGraph(build_model("resnet20"), (3, 32, 32), Constraints(keep_stem=False))
    model = MacModel(topology.units, topology.macs_per_node)
    gen = torch.Generator().manual_seed(0)
    gates = {u.id: torch.rand(u.size, generator=gen) for u in topology.units.searchable()}
    budget = int(fraction * topology.macs)
    selection, report = select_to_budget(topology.units, model, gates, budget,
                                         Constraints(keep_stem=False, min_channels=2))
    assert 0.97 * budget <= report.macs <= budget
    assert all(len(k) >= 2 for k in selection.kept.values())


def test_selection_respects_channel_multiple():
    topology = TopologyGraph(build_model("resnet20"), (3, 32, 32), Constraints(keep_stem=False))
    model = MacModel(topology.units, topology.macs_per_node)
    gates = {u.id: torch.ones(u.size) for u in topology.units.searchable()}
    constraints = Constraints(keep_stem=False, channel_multiple=8, unit_kinds=("channels",))
    selection, report = select_to_budget(topology.units, model, gates,
                                         int(0.5 * topology.macs), constraints)
    assert all(len(k) % 8 == 0 for k in selection.kept.values())
    assert report.macs <= 0.5 * topology.macs


def test_selection_respects_a_width_floor():
    """min_fraction 0.5: no group keeps fewer than half its channels, so at a budget that
    the channels alone could meet, whole blocks go instead."""
    topology = TopologyGraph(build_model("resnet20"), (3, 32, 32), Constraints(keep_stem=False))
    model = MacModel(topology.units, topology.macs_per_node)
    gen = torch.Generator().manual_seed(0)
    gates = {u.id: torch.rand(u.size, generator=gen) for u in topology.units.searchable()}
    gates.update({u.id: torch.full((1,), 1e6) for u in topology.units.blocks if u.searchable})
    sizes = {u.id: u.size for u in topology.units.channels}
    budget = int(0.2 * topology.macs)  # the blocks score highest: channels go first
    free, _ = select_to_budget(topology.units, model, gates, budget,
                               Constraints(keep_stem=False))
    floored, report = select_to_budget(topology.units, model, gates, budget,
                                       Constraints(keep_stem=False, min_fraction=0.5))
    assert 0.97 * budget <= report.macs <= budget
    assert any(len(k) < sizes[uid] / 2 for uid, k in free.kept.items())  # the floor binds
    assert all(len(k) >= sizes[uid] / 2 for uid, k in floored.kept.items())
    assert len(floored.removed_blocks) > len(free.removed_blocks)


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_a_width_floor_outside_0_to_1_is_refused(fraction):
    with pytest.raises(KdsearchError, match="min_fraction is a fraction"):
        Constraints(min_fraction=fraction)


def test_constraints_name_what_differs_from_a_summary():
    saved = dataclasses.asdict(Constraints(keep=("layer1.*",)))  # as JSON: lists
    saved = json.loads(json.dumps(saved))
    assert Constraints(keep=("layer1.*",)).changes(saved) == []
    assert Constraints(keep=("layer1.*",), min_fraction=0.5).changes(saved) == [
        "constraints.min_fraction: 0.0 -> 0.5"]
    assert Constraints().changes(saved) == ["constraints.keep: ('layer1.*',) -> ()"]
    del saved["min_fraction"]  # a summary older than the width floor: made without one
    assert Constraints(keep=("layer1.*",)).changes(saved) == []
    assert Constraints().changes(None) == []


def test_a_finished_search_is_not_reused_under_other_constraints():
    """compare and chains skip a finished search only when its constraints are the asked
    ones: a width floor added to the preset must search again, not reuse the old student."""
    config = SearchConfig(steps=8)
    summary = {"config": dataclasses.asdict(config), "budget": "0.5x",
               "constraints": dataclasses.asdict(Constraints())}
    assert search_changes(config, 100, "0.5x", Constraints())(summary) == []
    assert search_changes(config, 100, "0.5x", Constraints(min_fraction=0.5))(summary) == [
        "constraints.min_fraction: 0.0 -> 0.5"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def run_search(tmp_path, digits, steps=20, budget="0.4x", seed=0):
    torch.manual_seed(seed)
    teacher = build_model("digits_resnet14", num_classes=10, in_channels=1)
    config = SearchConfig(steps=steps, batch_size=64, device="cpu")
    return search_student(teacher, "digits_resnet14", digits, budget, config,
                          Constraints(keep_stem=False, min_channels=2), tmp_path, seed=seed,
                          progress=False)


def test_search_writes_run_and_hits_budget(tmp_path, digits):
    result = run_search(tmp_path, digits)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.97 <= summary["student"]["macs"] / summary["budget_macs"] <= 1.0
    for key in ("teacher", "student", "budget_macs", "search_seconds", "channels_removed",
                "blocks_removed"):
        assert key in summary
    log = [json.loads(line) for line in (tmp_path / "search_log.jsonl").read_text().splitlines()]
    assert len(log) == 20 and {"step", "kl", "selector", "live_macs"} <= set(log[0])
    # the spec alone rebuilds the architecture; with student.pt it is the same network
    loaded = load_student(tmp_path / "student.json", weights=str(tmp_path / "student.pt"))
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model.eval()(x), result.student.eval()(x))
    fresh = build_student(result.spec)
    assert count_model(fresh, (1, 8, 8)).macs == summary["student"]["macs"]
    state = torch.load(tmp_path / "student.pt", weights_only=True)
    assert set(state) == set(fresh.state_dict())


def test_a_spec_whose_unit_labels_moved_is_refused(tmp_path, digits):
    """Unit ids are positions; a spec whose ids name other layers here (another teacher, or
    units numbered by another version) must fail, not cut the wrong layers."""
    import copy

    spec = run_search(tmp_path, digits, steps=4).spec
    moved = copy.deepcopy(spec)
    uid = next(iter(moved["channels"]))
    moved["channels"][uid]["label"] = "layer9.conv"
    with pytest.raises(KdsearchError, match=f"spec unit {uid} is 'layer9.conv' in the spec"):
        build_student(moved)
    build_student(spec)  # the spec as written still rebuilds


def test_search_is_reproducible(tmp_path, digits):
    a = run_search(tmp_path / "a", digits, steps=8, seed=3)
    b = run_search(tmp_path / "b", digits, steps=8, seed=3)
    assert a.spec == b.spec
    for key, value in a.student.state_dict().items():
        assert torch.equal(value, b.student.state_dict()[key]), key


def test_spec_inherits_teacher_weights(tmp_path, digits):
    result = run_search(tmp_path, digits, steps=2)
    teacher = build_model("digits_resnet14", num_classes=10, in_channels=1)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    inherited = build_student(result.spec, teacher_weights=str(tmp_path / "teacher.pt"),
                              fresh=False)
    # inherited weights are the teacher's, sliced: the stem conv keeps its kept filters
    entry = next((e for e in result.spec["channels"].values() if e["label"] == "conv1"), None)
    kept = entry["kept"] if entry else list(range(teacher.conv1.out_channels))
    torch.testing.assert_close(inherited.conv1.weight, teacher.conv1.weight[kept])


def test_bad_spec_is_a_clear_error(tmp_path, digits):
    result = run_search(tmp_path, digits, steps=2)
    spec = json.loads(json.dumps(result.spec))
    uid = next(iter(spec["channels"]))
    spec["channels"][uid]["kept"] = [10_000]
    (tmp_path / "bad.json").write_text(json.dumps(spec))
    with pytest.raises(KdsearchError, match="kept"):
        load_student(tmp_path / "bad.json")
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(KdsearchError, match="not valid JSON"):
        load_student(tmp_path / "garbage.json")


def test_budget_below_smallest_student_is_rejected(tmp_path, digits):
    with pytest.raises(KdsearchError, match="smallest student"):
        run_search(tmp_path, digits, budget="100")


def test_search_command_and_flops_of_spec(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["search", "--teacher", "digits_resnet14", "--dataset", "digits",
                 "--budget", "0.5x", "--steps", "5", "--out", str(out), "--quiet"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert main(["flops", str(out / "student.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == summary["student"]["macs"]


@pytest.mark.parametrize("argv, message", [
    (["--teacher", "resnet65"], "unknown model 'resnet65'"),
    (["--dataset", "cifar1000"], "unknown dataset 'cifar1000'"),
    (["--budget", "lots"], "not understood"),
    (["--budget", "like:resnet999"], "unknown model 'resnet999'"),
])
def test_search_command_user_errors(tmp_path, capsys, argv, message):
    base = {"--teacher": "digits_resnet14", "--dataset": "digits", "--budget": "0.5x",
            "--out": str(tmp_path / "o"), "--steps": "1"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    code = main(["search", "--quiet", *[part for kv in base.items() for part in kv]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in err[-1] and "Traceback" not in "".join(err)


# -- the search selects, and its student keeps the gated network's function ------------------
@pytest.fixture(scope="module")
def demo_teacher(tmp_path_factory):
    """digits_resnet14 trained as the demo trains it (15 epochs, cross-entropy)."""
    out = tmp_path_factory.mktemp("demo_teacher")
    assert main(["teacher", "--model", "digits_resnet14", "--dataset", "digits", "--epochs",
                 "15", "--threads", "1", "--quiet", "--out", str(out)]) == 0
    return out / "teacher.pt"


def _searched(tmp_path, weights, budget: str) -> dict:
    out = tmp_path / budget
    assert main(["search", "--teacher", "digits_resnet14", "--teacher-weights", str(weights),
                 "--dataset", "digits", "--budget", budget, "--threads", "1", "--quiet",
                 "--out", str(out)]) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("budget", ["0.3x", "0.5x"])
def test_search_gates_select_and_student_pt_works(tmp_path, demo_teacher, budget):
    summary = _searched(tmp_path, demo_teacher, budget)
    # the gates themselves reach zero down to (about) the budget; the ranking only trims
    assert summary["selection"]["macs_from_gates"] <= 1.15 * summary["budget_macs"]
    assert summary["channels_removed"] > 0  # channels compete, not only whole blocks
    # what the search cost: 7 epochs of digits, a small fraction of retraining the student
    cost = summary["search_cost"]
    assert cost["images"] == summary["search"]["steps"] * 64 and 6.5 < cost["epochs"] < 7.5
    assert 0 < cost["fraction_of_retraining"] < 0.1
    # the extracted student, before any retraining, is close to the teacher
    assert summary["teacher_test_acc"] > 97
    assert summary["student_test_acc"] >= 90
    # what summary.json reports is what student.pt scores
    loaded = load_student(tmp_path / budget / "student.json", tmp_path / budget / "student.pt")
    accuracy = evaluate_accuracy(loaded.model, load_dataset("digits"), "cpu")
    assert accuracy == pytest.approx(summary["student_test_acc"], abs=0.6)  # bf16 vs float32


@pytest.mark.slow
def test_search_removing_one_channel_keeps_the_teacher(tmp_path, demo_teacher):
    summary = _searched(tmp_path, demo_teacher, "0.999x")
    assert summary["channels_removed"] + summary["blocks_removed"] >= 1
    assert summary["student_test_acc"] >= summary["teacher_test_acc"] - 1


def test_search_refuses_to_overwrite_a_finished_search(tmp_path, capsys):
    argv = ["search", "--teacher", "digits_resnet8", "--dataset", "digits", "--steps", "4",
            "--threads", "1", "--quiet", "--out", str(tmp_path)]
    assert main([*argv, "--budget", "0.5x"]) == 0
    before = (tmp_path / "student.json").read_text()
    capsys.readouterr()
    assert main([*argv, "--budget", "0.3x"]) == 2
    assert "holds a finished search" in capsys.readouterr().err
    assert (tmp_path / "student.json").read_text() == before
    assert main([*argv, "--budget", "0.3x", "--overwrite"]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["budget"] == "0.3x"


@pytest.mark.parametrize("device", ["gpu", "cuda:7"])
def test_search_with_a_bad_device_writes_nothing(tmp_path, capsys, device):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a machine with CUDA")
    out = tmp_path / "s"
    assert main(["search", "--teacher", "digits_resnet8", "--dataset", "digits", "--budget",
                 "0.5x", "--device", device, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdsearch: error:") and err.count("\n") == 1 and device in err
    assert not out.exists()


def test_a_diverging_search_says_how_large_the_teachers_logits_are(tmp_path, digits):
    """A teacher whose logits are huge (an untrained one's can reach 1e8) drives a large
    learning rate to NaN: the message names the logits' scale, not only the settings."""
    torch.manual_seed(0)
    teacher = build_model("digits_resnet8", num_classes=10, in_channels=1)
    with torch.no_grad():
        teacher.fc.weight.mul_(1e4)
    config = SearchConfig(steps=20, batch_size=64, device="cpu", lr=10.0, max_update=1e6)
    with pytest.raises(KdsearchError, match=r"diverged: KL is .*the teacher's logits reach"):
        search_student(teacher, "digits_resnet8", digits, "0.5x", config,
                       Constraints(keep_stem=False), tmp_path, progress=False)


def test_overwrite_removes_what_the_old_search_and_its_commands_wrote(tmp_path, digits):
    run_search(tmp_path, digits, steps=4)
    (tmp_path / "latency.json").write_text("{}")
    (tmp_path / "index.html").write_text("old")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "graph.png").write_bytes(b"old")
    torch.manual_seed(0)
    teacher = build_model("digits_resnet14", num_classes=10, in_channels=1)
    search_student(teacher, "digits_resnet14", digits, "0.5x", SearchConfig(steps=4),
                   Constraints(keep_stem=False, min_channels=2), tmp_path, progress=False,
                   overwrite=True)
    assert not any((tmp_path / name).exists() for name in ("latency.json", "index.html",
                                                            "figures"))
    assert json.loads((tmp_path / "summary.json").read_text())["budget"] == "0.5x"


def test_a_search_refuses_a_teacher_folder_even_with_overwrite(tmp_path, digits):
    assert main(["teacher", "--model", "digits_resnet8", "--dataset", "digits", "--epochs",
                 "1", "--out", str(tmp_path), "--quiet"]) == 0
    before = (tmp_path / "summary.json").read_text()
    with pytest.raises(KdsearchError, match="another kind of run"):
        search_student(build_model("digits_resnet14", num_classes=10, in_channels=1),
                       "digits_resnet14", digits, "0.5x", SearchConfig(steps=4),
                       Constraints(keep_stem=False), tmp_path, progress=False,
                       overwrite=True)
    assert (tmp_path / "summary.json").read_text() == before


def test_a_search_in_a_log_prints_progress_lines(tmp_path, digits, capsys):
    """Where no bar shows (stderr is not a terminal), a line every 5% of the steps."""
    torch.manual_seed(0)
    teacher = build_model("digits_resnet14", num_classes=10, in_channels=1)
    search_student(teacher, "digits_resnet14", digits, "0.5x", SearchConfig(steps=40),
                   Constraints(keep_stem=False, min_channels=2), tmp_path, progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("search step ")]
    assert len(lines) == 20 and lines[-1].startswith("search step 40/40: KL ")
