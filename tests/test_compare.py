"""kdsearch compare: statistics, the L1 pruning baseline, figure data, and a whole run."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from scipy.stats import ttest_ind

from kdsearch.cli import compare as compare_cli
from kdsearch.compare import (
    COLUMNS,
    comparison_row,
    l1_channel_scores,
    magnitude_prune,
    pareto_data,
    spread,
    welch,
)
from kdsearch.compare.baselines import control_constraints, control_student
from kdsearch.compare.run import Candidate
from kdsearch.errors import KdsearchError
from kdsearch.graph.counting import count_model
from kdsearch.graph.units import Constraints
from kdsearch.io import write_json
from kdsearch.models import build_model

torch.set_num_threads(1)
TEACHER, STUDENTS = "digits_resnet14", ("digits_resnet8", "digits_resnet8_half")
KINDS = ("hand-designed", "searched", "l1", "random", "random", "uniform", "depgraph")


# -- statistics -------------------------------------------------------------------------------
def test_spread_is_mean_and_sample_std():
    s = spread([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3) and s.n == 3
    assert s.std == pytest.approx(torch.tensor([1.0, 2.0, 4.0]).std().item())  # ddof=1
    assert spread([5.0]).std is None


def test_welch_is_scipy_and_na_with_one_seed():
    a, b = [97.2, 98.1, 97.8], [96.0, 96.9]
    result = welch(a, b)
    assert result.diff == pytest.approx(sum(a) / 3 - sum(b) / 2)
    assert result.p_value == ttest_ind(a, b, equal_var=False).pvalue
    assert welch([97.0], [96.0]).p_value is None
    assert welch([97.0, 97.0], [97.0, 97.0]).p_value is None  # scipy: NaN


def test_row_compares_with_its_reference():
    runs = [{"best_test_acc": b, "last_test_acc": b - 1, "student_macs": 10, "student_params": 3}
            for b in (90.0, 92.0)]
    ref = [{**r, "best_test_acc": r["best_test_acc"] - 5} for r in runs]
    row = comparison_row("searched", "s", "like:x", runs, "x", ref)
    assert tuple(row) == COLUMNS
    assert row["best_diff"] == pytest.approx(5.0) and row["last_acc_mean"] == 90.0
    assert row["best_p"] == ttest_ind([90.0, 92.0], [85.0, 87.0], equal_var=False).pvalue
    alone = comparison_row("hand-designed", "x", "like:x", ref)
    assert alone["best_diff"] is None and alone["best_p"] is None


def test_the_table_marks_a_student_below_97_percent_of_its_budget():
    """The uniform control at 96.1 % of its budget is marked and named under the table; at
    97 % and more, a hand-designed student and a given one are not marked."""
    from kdsearch.compare.report import SHORT, budget_fractions, results_table

    def table_row(kind: str, student: str, budget: str, macs: int) -> dict:
        runs = [{"best_test_acc": 90.0, "last_test_acc": 89.0, "student_macs": macs,
                 "student_params": 3000}]
        reference = "" if kind == "hand-designed" else "r8"
        return {**comparison_row(kind, student, budget, runs, reference, runs),
                "latency_ms": 1.0, "speedup": 2.0}

    rows = [table_row("hand-designed", "r8", "like:r8", 1000),
            table_row("searched", "t searched @ like:r8", "like:r8", 970),
            table_row("uniform", "t uniform @ like:r8", "like:r8", 961),
            table_row("given", "mine", "like:r8", 500),
            table_row("searched", "t searched @ 0.5x", "0.5x", 1900)]
    assert budget_fractions(rows, 4000) == [None, 0.97, 0.961, None, 0.95]
    table = results_table(rows, 4000)
    marked = [line.split(" | ")[1] for line in table if f"M {SHORT} |" in line]
    assert marked == ["t uniform @ like:r8", "t searched @ 0.5x"]
    assert table[-1] == (f"{SHORT} Below 97 % of its budget: t uniform @ like:r8 96.1 %; "
                         "t searched @ 0.5x 95.0 %. The search and the controls are meant to "
                         "land in [97 %, 100 %] of the budget; a student further below has "
                         "fewer MACs to spend than those it is compared with.")
    assert all(SHORT not in line for line in results_table(rows[:2], 4000))


# -- the L1 pruning baseline ------------------------------------------------------------------
W = 16  # channels per conv: fine enough steps to land within 3% of any budget


class TwoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, W, 3, padding=1, bias=False), nn.BatchNorm2d(W)
        self.conv2, self.bn2 = nn.Conv2d(W, W, 3, padding=1, bias=False), nn.BatchNorm2d(W)
        self.fc = nn.Linear(W, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


class Residual(nn.Module):
    """conv_b's output and the shortcut conv_s's output are added: one channel unit."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(1, 4, 1, bias=False)
        self.conv_b = nn.Conv2d(4, 4, 1, bias=False)
        self.conv_s = nn.Conv2d(1, 4, 1, bias=False)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        y = self.conv_b(torch.relu(self.conv_a(x))) + self.conv_s(x)
        return self.fc(torch.relu(y).mean((2, 3)))


def _set_filter_norms(conv: nn.Conv2d, norms: list[float]) -> None:
    """Filter i gets constant entries summing (in absolute value) to norms[i]."""
    with torch.no_grad():
        per_entry = conv.weight[0].numel()
        for i, norm in enumerate(norms):
            sign = -1.0 if i % 2 else 1.0  # L1, not a signed sum
            conv.weight[i].fill_(sign * norm / per_entry)


def test_l1_scores_sum_producers_and_normalise_per_unit():
    model = Residual()
    _set_filter_norms(model.conv_a, [1.0, 1.0, 1.0, 5.0])
    _set_filter_norms(model.conv_b, [1.0, 2.0, 3.0, 4.0])
    _set_filter_norms(model.conv_s, [4.0, 0.0, 0.0, 0.0])
    from kdsearch.graph.topology import TopologyGraph

    topology = TopologyGraph(model, (1, 4, 4), Constraints(("channels",), keep_stem=False))
    scores = {topology.units.by_id()[uid].label: s
              for uid, s in l1_channel_scores(topology.gm, topology.units).items()}
    assert torch.allclose(scores["conv_a"], torch.tensor([1.0, 1, 1, 5]) / 2)
    assert torch.allclose(scores["conv_b"], torch.tensor([5.0, 2, 3, 4]) / 3.5)


@pytest.mark.parametrize("fraction", [0.6, 0.35])
def test_pruning_keeps_the_largest_filters(fraction):
    torch.manual_seed(0)
    model = TwoConvs()
    norms1 = [float(n) for n in torch.randperm(W) + 1]
    norms2 = [float(n) for n in torch.randperm(W) + 1]
    _set_filter_norms(model.conv1, norms1)
    _set_filter_norms(model.conv2, norms2)
    budget = round(fraction * count_model(model, (1, 8, 8)).macs)
    result = magnitude_prune(model, (1, 8, 8), budget,
                             Constraints(keep_stem=False, min_channels=1))
    macs = count_model(result.student, (1, 8, 8)).macs
    assert macs <= budget and macs == result.report.macs
    assert not result.selection.removed_blocks
    labels = {u.id: u.label for u in result.topology.units.channels}
    kept = {labels[uid]: k for uid, k in result.selection.kept.items()}
    assert set(kept) == {"conv1", "conv2"}
    for label, norms in (("conv1", norms1), ("conv2", norms2)):
        largest = sorted(range(W), key=lambda i: -norms[i])[:len(kept[label])]
        assert kept[label] == sorted(largest), label


@pytest.mark.parametrize("budget", ["like:digits_resnet8", "like:digits_resnet8_half", "0.5x",
                                    "0.25x"])
def test_pruning_lands_in_the_budget_on_the_digits_teacher(budget, tmp_path):
    from kdsearch.compare import prune_student
    from kdsearch.models import build_model
    from kdsearch.presets import load_preset
    from kdsearch.student.spec import build_student

    torch.manual_seed(0)
    teacher = build_model(TEACHER, 10, 1)
    constraints, _ = load_preset("digits")
    summary = prune_student(teacher, TEACHER, 10, (1, 8, 8), budget, constraints, tmp_path)
    assert 0.97 <= summary["budget_fraction"] <= 1.0
    # the spec rebuilds (fresh) into a network of exactly the pruned size
    import json

    spec = json.loads((tmp_path / "student.json").read_text())
    assert not spec["removed_blocks"] and spec["channels"]
    rebuilt = count_model(build_student(spec, fresh=True), (1, 8, 8))
    assert rebuilt.macs == summary["student"]["macs"] <= summary["budget_macs"]


def test_pruning_refuses_an_unreachable_budget():
    with pytest.raises(KdsearchError, match="outside"):
        magnitude_prune(TwoConvs(), (1, 8, 8), 10, Constraints(keep_stem=False, min_channels=1))


# -- figure data ------------------------------------------------------------------------------
def test_pareto_data_groups_kinds_and_sorts_by_macs():
    def row(kind, student, budget, macs, best):
        return {"kind": kind, "student": student, "budget": budget, "macs": macs,
                "best_acc_mean": best, "best_acc_std": None, "last_acc_mean": best - 1,
                "last_acc_std": 0.5}

    rows = [row("hand-designed", "r8", "like:r8", 4e5, 90.0),
            row("searched", "s", "like:r8", 4e5, 92.0), row("searched", "s", "0.5x", 8e5, 95.0),
            row("searched", "s", "0.15x", 2e5, 85.0)]
    data = pareto_data(rows, "t", teacher={"macs": 1.6e6, "acc": 97.0})
    best, last = data.panels
    assert [p.macs for p in best.series["searched"]] == [0.2, 0.4, 0.8]
    assert [p.label for p in best.series["searched"]] == ["0.15x", "like:r8", "0.5x"]
    assert best.series["hand-designed"][0].label == "r8" and "l1" not in best.series
    assert best.series["searched"][0].std == 0.0 and last.series["searched"][0].std == 0.5
    assert last.series["searched"][1].mean == 91.0 and best.teacher.mean == 97.0


# -- a whole comparison on digits -------------------------------------------------------------
def _args(out: Path, weights: Path | None, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    compare_cli.configure(parser)
    argv = ["--teacher", TEACHER, "--dataset", "digits", "--against", ",".join(STUDENTS),
            "--seeds", "2", "--epochs", "1", "--search-steps", "8", "--pruning-baseline",
            "--baselines", "random,uniform,depgraph", "--random-draws", "2",
            "--device", "cpu", "--quiet", "--out", str(out), *extra]
    return parser.parse_args(argv + (["--teacher-weights", str(weights)] if weights else []))


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    from kdsearch.data import load_dataset
    from kdsearch.distill import TrainConfig, build_method, train
    from kdsearch.models import build_model

    root = tmp_path_factory.mktemp("compare")
    dataset = load_dataset("digits")
    torch.manual_seed(0)
    teacher = build_model(TEACHER, dataset.num_classes, dataset.input_size[0])
    train(build_method("ce", teacher, None, input_size=dataset.input_size), dataset,
          TrainConfig(epochs=1, device="cpu"), root / "teacher", quiet=True)
    out, weights = root / "out", root / "teacher" / "student.pt"
    start = time.perf_counter()
    assert compare_cli.run(_args(out, weights)) == 0
    return out, weights, time.perf_counter() - start


def _csv(out: Path) -> list[dict]:
    with open(out / "comparison.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_compare_writes_the_table_and_plot(comparison):
    out, _, _ = comparison
    rows = _csv(out)
    assert tuple(rows[0]) == COLUMNS
    assert [(r["kind"], r["budget"]) for r in rows] == [
        (kind, f"like:{s}") for s in STUDENTS for kind in KINDS]
    assert len({r["student"] for r in rows if r["kind"] == "random"}) == 4  # 2 draws x 2
    for r in rows:
        assert r["seeds"] == "2" and int(r["macs"]) > 0 and int(r["params"]) > 0
        assert len(r["best_acc_runs"].split(";")) == 2
        if r["kind"] != "hand-designed":
            budget_macs = int(next(h["macs"] for h in rows if h["student"] == r["reference"]))
            # uniform scales every unit by one factor: it lands as close as that allows
            least = 0.9 if r["kind"] == "uniform" else 0.97
            assert least * budget_macs <= int(r["macs"]) <= budget_macs, r
    _check_latency_columns(rows)
    md = " ".join((out / "comparison.md").read_text().split())  # ignore line wrapping
    for text in ("best", "last", "method kd, 1 epoch, ", "seeds (0, 1", "on cpu", "Welch",
                 "| latency (ms) | speed-up |", "**Latency**: median wall time",
                 "a batch of 1 on cpu (1 thread)", "**speed-up** = the teacher's",
                 "| hand-designed | digits_resnet8 |", "Searched minus each control",
                 "| random | like:digits_resnet8 |", "of 3 |", "**depgraph**"):
        assert text in md, text
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _check_latency_columns(rows: list[dict]) -> None:
    """Every student timed; the speed-ups share one teacher latency (teacher / row)."""
    latency = [float(r["latency_ms"]) for r in rows]
    speedup = [float(r["speedup"]) for r in rows]
    assert min(latency) > 0
    teacher = [s * t for s, t in zip(speedup, latency, strict=True)]
    assert max(teacher) == pytest.approx(min(teacher), rel=1e-3)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # scipy on identical accuracies
def test_compare_p_values_are_scipy_welch(comparison):
    out, _, _ = comparison
    rows = _csv(out)
    for r in rows:
        if r["kind"] == "hand-designed":
            continue
        ref = next(h for h in rows if h["student"] == r["reference"])
        for metric in ("best", "last"):
            a = [float(v) for v in r[f"{metric}_acc_runs"].split(";")]
            b = [float(v) for v in ref[f"{metric}_acc_runs"].split(";")]
            expected = ttest_ind(a, b, equal_var=False).pvalue
            if expected != expected:  # NaN: no spread on either side
                assert r[f"{metric}_p"] == ""
            else:
                assert float(r[f"{metric}_p"]) == pytest.approx(expected, rel=1e-3)
            assert float(r[f"{metric}_diff"]) == pytest.approx(sum(a) / 2 - sum(b) / 2,
                                                               abs=1e-3)


@pytest.mark.slow
def test_compare_rerun_skips_finished_work_and_continues(comparison):
    out, weights, first = comparison
    summaries = sorted(out.glob("**/summary.json"))
    mtimes = {p: p.stat().st_mtime_ns for p in summaries}
    start = time.perf_counter()
    compare_cli.run(_args(out, weights, "--budgets", "0.5x"))
    again = time.perf_counter() - start
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in summaries)
    assert again < first
    rows = _csv(out)
    assert rows[-1]["kind"] == "searched" and rows[-1]["budget"] == "0.5x"
    assert rows[-1]["best_p"] == "" and len(rows) == 2 * len(KINDS) + 1
    with pytest.raises(KdsearchError, match="other settings"):
        compare_cli.run(_args(out, weights, "--lr", "0.01"))


def test_controls_are_cut_under_the_search_constraints_on_their_own_unit_kinds():
    asked = Constraints(keep=("layer1.*",), min_channels=4, min_fraction=0.5)
    assert control_constraints("random", asked) == asked  # random removes blocks too
    for name in ("l1", "uniform", "depgraph"):  # channels only: no width floor
        cut = control_constraints(name, asked)
        assert cut == dataclasses.replace(asked, unit_kinds=("channels",), min_fraction=0.0)
    # a cut control is reused only under the same constraints (compare checks its summary)
    random = control_constraints("random", asked)
    assert random.changes({**dataclasses.asdict(random), "min_fraction": 0.0}) == [
        "constraints.min_fraction: 0.0 -> 0.5"]


def test_channel_controls_reach_budgets_below_the_width_floor(tmp_path):
    """resnet20 at 0.15x with a floor of 0.5: channels alone cannot get there under the
    floor (about 0.25x), so l1 and uniform are cut without it; random keeps the floor and
    removes blocks."""
    teacher = build_model("resnet20", 100)
    floor = Constraints(keep_stem=False, min_fraction=0.5)
    for name in ("l1", "uniform", "random"):
        summary = control_student(name, teacher, "resnet20", 100, (3, 32, 32), "0.15x",
                                  floor, tmp_path / name)
        assert summary["budget_fraction"] <= 1.0
        assert summary["constraints"]["min_fraction"] == (0.5 if name == "random" else 0.0)
    assert summary["blocks_removed"]  # random, under the floor: blocks had to go


def test_compare_warns_without_teacher_weights(tmp_path, capsys):
    with pytest.raises(KdsearchError):  # a hand-designed name that is not in the zoo
        compare_cli.run(_args(tmp_path, None, "--against", "no_such_model"))
    assert capsys.readouterr().err.count("warning: no --teacher-weights") == 1


@pytest.mark.slow
def test_compare_jobs_give_the_same_table(comparison, tmp_path):
    """Two worker processes train the runs of a fresh comparison: the same accuracies as one
    process (each run has its own folder, seed and thread count)."""
    out, weights, _ = comparison
    again = tmp_path / "jobs"
    assert compare_cli.run(_args(again, weights, "--jobs", "2")) == 0
    one = {(r["kind"], r["student"]): r["best_acc_runs"] for r in _csv(out)}
    two = {(r["kind"], r["student"]): r["best_acc_runs"] for r in _csv(again)}
    assert len(two) == 2 * len(KINDS)
    assert all(one[key] == value for key, value in two.items())


# -- given students (--students) ---------------------------------------------------------------
def _spec(path: Path, model: str = TEACHER, classes: int = 10, size=(1, 8, 8)) -> Path:
    """A student.json keeping all of ``model`` (every channel, every block)."""
    write_json(path, {"format": "kdsearch-student/1",
                      "teacher": {"model": model, "num_classes": classes,
                                  "input_size": list(size)},
                      "channels": {}, "removed_blocks": {}, "macs": 0, "params": 0})
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "no such student.json"),
    ("not json", "no such student.json"),
    ("other data", "is for 100 classes at input [3, 32, 32], the data has 10 at [1, 8, 8]"),
    ("twice", "two given students are named 'same'"),
])
def test_given_students_fail_in_one_line_before_any_search(tmp_path, case, message):
    students = {
        "missing": [tmp_path / "nowhere"],
        "not json": [_spec(tmp_path / "spec.txt")],
        "other data": [_spec(tmp_path / "c.json", "resnet8", 100, (3, 32, 32))],
        "twice": [_spec(tmp_path / "same.json"), _spec(tmp_path / "a" / "same" / "student.json")],
    }[case]
    out = tmp_path / "out"
    with pytest.raises(KdsearchError, match=re.escape(message)):
        compare_cli.run(_args(out, None, "--students", ",".join(map(str, students))))
    assert not (out / "search").exists()


def test_given_student_inherits_the_weights_beside_its_spec(tmp_path):
    spec = _spec(tmp_path / "mine" / "student.json")
    given = Candidate("given", "mine", "like:x", str(spec), reference="x")
    assert given.weights is None and given.folder == "given_mine"
    torch.save({}, tmp_path / "mine" / "student.pt")
    assert given.weights == tmp_path / "mine" / "student.pt"
    assert Candidate("searched", "s", "like:x", str(tmp_path)).weights == (
        tmp_path / "student.pt")


@pytest.mark.slow
def test_compare_trains_a_given_student_like_the_others(comparison, tmp_path):
    """The searched student's own spec, given back, trains to exactly the searched row's
    accuracies (same architecture, seeds, schedule); a whole-teacher spec gets its row too."""
    out, weights, _ = comparison
    again = tmp_path / "out"
    shutil.copytree(out, again)
    searched = again / "search" / f"like_{STUDENTS[0]}"
    whole = _spec(tmp_path / "whole.json")
    assert compare_cli.run(_args(again, weights, "--students", f"{searched},{whole}")) == 0
    rows = {(r["kind"], r["student"]): r for r in _csv(again)}
    mine = rows[("given", f"like_{STUDENTS[0]}")]
    assert mine["best_acc_runs"] == rows[("searched", f"{TEACHER} searched @ like:"
                                                     f"{STUDENTS[0]}")]["best_acc_runs"]
    assert mine["reference"] == STUDENTS[0] and mine["budget"] == f"like:{STUDENTS[0]}"
    assert int(rows[("given", "whole")]["macs"]) == count_model(
        build_model(TEACHER, 10, 1), (1, 8, 8)).macs
    md = " ".join((again / "comparison.md").read_text().split())
    assert "**Given** students" in md and f"| given | like_{STUDENTS[0]} |" in md
    assert "| given | like:" not in md  # not pooled with the controls
