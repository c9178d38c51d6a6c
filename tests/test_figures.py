"""The figures as a paper author reads them: what each shows is checked on the matplotlib
objects (texts, legends, scales, panels) and on the PNG, from small hand-made data."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import struct
import sys
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex

from kdsearch.compare.plots import DODGE, SPREAD, pareto_data, pareto_figure
from kdsearch.show import curves, draw
from kdsearch.show.data import (
    GateCurves,
    LayerWidth,
    StageMacs,
    TrainingCurves,
    focus_range,
    graph_layout,
    layer_widths,
    run_label,
)
from kdsearch.show.trials import pareto_optimal, tune_front


def rendered(fig):
    """The figure drawn once (tick labels and layout exist only after a draw)."""
    FigureCanvasAgg(fig).draw()
    return fig


def texts(fig, gid: str | None = None) -> list:
    return [t for ax in fig.axes for t in ax.texts if gid is None or t.get_gid() == gid]


def png_width(path: Path) -> int:
    return struct.unpack(">I", path.read_bytes()[16:20])[0]


@pytest.fixture(scope="module")
def resnet14_graph() -> dict:
    from kdsearch.graph import TopologyGraph
    from kdsearch.models import build_model

    model = build_model("digits_resnet14", num_classes=10, in_channels=1)
    return TopologyGraph(model, (1, 8, 8)).to_json()


# -- graph.png ------------------------------------------------------------------------------
def test_the_graph_writes_channel_counts_and_shows_a_nearly_removed_layer(resnet14_graph,
                                                                         tmp_path):
    spec = {"channels": {"ch1": {"kept": [3]}, "ch4": {"kept": list(range(20))}},
            "removed_blocks": {}}
    layout = graph_layout(resnet14_graph, spec)
    fig = draw.draw_graph(layout, "digits_resnet14")
    counts = {t.get_text(): t for t in texts(fig, "count")}
    layers = [n for n in layout.nodes if n.kind in ("conv", "linear")]
    assert len(counts) <= len(layers) and {"16→1", "32→20", "16→16", "10→10"} <= set(counts)
    assert to_hex(counts["16→1"].get_color()) == draw.BUDGET  # under 10 % kept: red
    assert to_hex(counts["16→16"].get_color()) != draw.BUDGET
    kept = [p for p in fig.axes[0].patches if p.get_gid() == "kept"]
    assert min(p.get_height() for p in kept) >= draw.SLIVER  # 1 of 16 stays visible
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert "under 10% kept" in labels
    assert png_width(draw.save_figure(fig, tmp_path / "graph", draw.GRAPH_PX,
                                      draw.GRAPH_DPI)[0]) >= 1600


def test_a_long_graph_is_widened_until_its_counts_fit():
    from kdsearch.graph import TopologyGraph
    from kdsearch.models import build_model

    layout = graph_layout(TopologyGraph(build_model("resnet56"), (3, 32, 32)).to_json())
    fig = draw.draw_graph(layout, "resnet56")
    assert fig.get_figwidth() * draw.GRAPH_DPI >= 1600
    rendered(fig)
    boxes = sorted((t.get_window_extent() for t in texts(fig, "count")
                    if t.get_ha() == "center"), key=lambda b: (round(b.y0), b.x0))
    assert len(boxes) > 50
    for a, b in itertools.pairwise(boxes):  # neighbours in a row do not overlap
        assert round(a.y0) != round(b.y0) or a.x1 <= b.x0 + 0.5


# -- layer_widths.png -----------------------------------------------------------------------
def test_layer_widths_of_a_deep_net_are_named_by_module():
    from kdsearch.graph import TopologyGraph
    from kdsearch.models import build_model

    widths = layer_widths(TopologyGraph(build_model("resnet56"), (3, 32, 32)).to_json())
    fig = draw.draw_layer_widths(widths)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(widths) > 50 and ticks == [w.name for w in widths]
    assert "layer3.8.conv2" in ticks and not any(t.isdigit() for t in ticks)


def test_a_very_deep_net_names_every_kth_layer():
    widths = [LayerWidth(f"blocks.{i}.conv", "8×8", 64, 32, False) for i in range(400)]
    fig = draw.draw_layer_widths(widths)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert 40 < len(ticks) < 400 and all(t.startswith("blocks.") for t in ticks)
    assert "one in" in fig.axes[0].get_xlabel()


# -- stage_macs.png -------------------------------------------------------------------------
@pytest.mark.parametrize(("share", "text"), [
    (0.002, "0.2 %"), (0.0004, "<0.1 %"), (0.0103, "1.0 %"), (0.32, "32 %"), (0.0, "0 %"),
    (1.0, "100 %"), (0.9996, ">99.9 %"), (0.995, "99.5 %")])
def test_percentages_never_round_a_kept_part_to_nothing(share, text):
    assert draw.percent(share) == text


def test_stage_macs_writes_small_shares_and_shows_a_tiny_head():
    stages = [StageMacs("32×32", 42_900_000, 85_800), StageMacs("16×16", 41_400_000, 13_100_000),
              StageMacs("head", 6_400, 6_400)]
    fig = draw.draw_stage_macs(stages)
    shares = [t.get_text().splitlines()[-1] for t in texts(fig, "share")]
    assert shares == ["0.2 %", "32 %", "100 %"]
    _, head = fig.axes
    assert [t.get_text() for t in head.get_xticklabels()] == ["head\n(linear)"]
    assert max(b.get_height() for b in head.patches) > 0.5 * head.get_ylim()[1]
    one = draw.draw_stage_macs([*stages[:2], StageMacs("head", 10_000_000, 5_000_000)])
    assert len(one.axes) == 1  # a head that shows beside the stages stays in line


# -- gates.png ------------------------------------------------------------------------------
def gate_curves(live: list[float], teacher: int = 1000) -> GateCurves:
    steps = list(range(len(live)))
    return GateCurves(steps, {"ch0": [1.0] * len(live), "ch1": [0.5] * len(live),
                              "blk0": [0.2] * len(live)}, live, [900.0] * len(live),
                      budget_macs=500, teacher_macs=teacher, removed=frozenset({"blk0"}))


def test_gates_legend_is_outside_the_data_with_a_depth_colour_bar_and_whole_steps():
    fig = rendered(curves.draw_gate_curves(gate_curves([1000, 800, 700, 600, 500])))
    gates_ax, macs_ax, colour_bar = fig.axes
    assert "depth" in colour_bar.get_ylabel() and colour_bar.get_yticks().tolist() == [0, 1]
    assert not gates_ax.get_legend() and not macs_ax.get_legend() and len(fig.legends) == 1
    legend = fig.legends[0].get_window_extent()
    for ax in (gates_ax, macs_ax):
        assert not legend.overlaps(ax.get_window_extent())
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
    assert not texts(fig, "stayed")


def test_gates_say_when_the_live_macs_never_left_the_teachers():
    fig = curves.draw_gate_curves(gate_curves([1000.0] * 5))
    [note] = texts(fig, "stayed")
    assert "live MACs stayed at the teacher's" in note.get_text()
    assert "5 logged steps" in note.get_text()


# -- training.png and test_accuracy.png -----------------------------------------------------
def test_accuracy_axes_zoom_to_where_runs_differ():
    early = [10.0, 40.0, 70.0, 90.0, 94.0, 95.0, 96.0, 96.5, 96.8, 97.0]
    later = [v - 0.8 for v in early]
    low, high = focus_range([early, later])
    assert 90 < low < 94 and 97 < high < 99
    assert focus_range([[10.0, 50.0, 90.0]]) is None  # too short to zoom
    runs = {"hand-designed digits_resnet8": TrainingCurves(list(range(1, 11)),
                                                          {"test_acc": early}),
            "searched @ like:digits_resnet8": TrainingCurves(list(range(1, 11)),
                                                            {"test_acc": later})}
    fig = rendered(curves.draw_comparison(runs, "test accuracy of 2 runs"))
    ax = fig.axes[0]
    assert ax.get_ylim()[0] > 85 and "zoomed" in ax.get_ylabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["hand-designed digits_resnet8 (best 97.0%)",
                      "searched @ like:digits_resnet8 (best 96.2%)"]
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # outside
    training = curves.draw_training_curves(TrainingCurves(
        list(range(1, 11)), {"train_acc": early, "test_acc": later}))
    assert training.axes[0].get_ylim()[0] > 85


def test_one_epoch_runs_get_a_whole_epoch_tick():
    runs = {name: TrainingCurves([1], {"test_acc": [acc]}) for name, acc in (("a", 9.8),
                                                                             ("b", 19.0))}
    for fig in (curves.draw_comparison(runs), curves.draw_training_curves(runs["a"])):
        ax = rendered(fig).axes[0]
        assert [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]] == [1]


@pytest.mark.parametrize(("summary", "label"), [
    ({"kind": "hand-designed", "student": "digits_resnet8"}, "hand-designed digits_resnet8"),
    ({"kind": "searched", "student": "resnet56 searched @ like:resnet20"},
     "searched @ like:resnet20"),
    ({"kind": "random", "student": "resnet56 random #0 @ like:resnet20"},
     "random #0 @ like:resnet20"),
    ({"student": "/runs/demo/search/0.5x/student.json"}, "searched @ 0.5x"),
    ({"model": "digits_resnet14", "method": "ce"}, "teacher digits_resnet14"),
    ({"student": "digits_resnet8"}, "digits_resnet8"),
    ({}, "kd_0"),
])
def test_training_runs_are_named_by_their_student_not_their_folder(summary, label):
    assert run_label(summary, "kd_0") == label


# -- comparison.png -------------------------------------------------------------------------
def row(kind: str, student: str, macs: float, best: float, last: float | None = None,
        seeds: int = 1, std: float | None = None) -> dict:
    last = best if last is None else last
    return {"kind": kind, "student": student, "budget": f"like:{student}", "macs": macs,
            "seeds": seeds, "best_acc_mean": best, "best_acc_std": std, "last_acc_mean": last,
            "last_acc_std": std}


def test_comparison_dodges_equal_macs_labels_every_series_and_keeps_the_teacher_in():
    rows = [row("hand-designed", "r8", 4e5, 90.0, 89.0), row("searched", "r8", 4e5, 90.5, 90.0),
            row("l1", "r8", 4e5, 90.2, 89.9), row("random", "r8", 4.01e5, 88.0, 87.5),
            row("random", "r8", 3.99e5, 88.4, 87.9)]
    data = pareto_data(rows, "t", teacher={"macs": 1.6e6, "acc": 97.0})
    best = data.panels[0]
    columns = {kind: {p.at for p in ps} for kind, ps in best.series.items()}
    assert all(len(xs) == 1 for xs in columns.values())  # random's draws share one column
    xs = [x for xs in columns.values() for x in xs]
    assert len(set(xs)) == len(xs) and not data.log_x and data.dodged
    assert [p.macs for p in best.series["searched"]] == [0.4]  # the value stays exact
    assert best.shared == [pytest.approx(0.4)]
    assert max(xs) - min(xs) <= SPREAD * (1.6 - 0.399) + 1e-9  # near 0.4, not spread away
    fig = rendered(pareto_figure(data))
    assert len(fig.axes) == 2
    for ax, panel in zip(fig.axes, data.panels, strict=True):
        [shared] = [line for line in ax.lines if line.get_gid() == "shared-macs"]
        assert shared.get_xdata()[0] == pytest.approx(0.4) and shared.get_linestyle() == ":"
        names = {t.get_text() for t in ax.texts}
        assert {"searched", "l1", "random", "r8"} == names  # one label per series
        boxes = sorted((t.get_window_extent() for t in ax.texts), key=lambda b: b.y0)
        assert all(a.y1 <= b.y0 + 0.5 for a, b in itertools.pairwise(boxes))
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        teacher = panel.teacher
        assert x0 < teacher.macs < x1 - 0.05 * (x1 - x0)
        assert y0 < teacher.mean < y1 - 0.03 * (y1 - y0)
    assert fig.axes[0].get_xscale() == "linear" and "one seed" in fig.axes[0].get_ylabel()


def test_the_two_panels_x_labels_stay_apart_and_within_their_panels():
    """The longest x label (log scale, equal MACs spread sideways) of two panels side by side:
    the demo's comparison.png printed one over the other."""
    rows = [row("hand-designed", "r8", 2e5, 90.0, 89.0), row("searched", "r8", 2e5, 90.5, 90.0),
            row("hand-designed", "r110", 2.5e8, 95.0, 94.0)]
    data = pareto_data(rows, "t", teacher={"macs": 5e8, "acc": 96.0})
    assert data.log_x and data.dodged and len(data.panels) == 2
    fig = rendered(pareto_figure(data))
    renderer = fig.canvas.get_renderer()
    left, right = (ax.xaxis.label.get_window_extent(renderer) for ax in fig.axes)
    assert not left.overlaps(right) and left.x1 < right.x0
    for ax in fig.axes:
        label, panel = ax.xaxis.label.get_window_extent(renderer), ax.get_window_extent()
        assert panel.x0 - 1 <= label.x0 and label.x1 <= panel.x1 + 1, ax.get_xlabel()
        assert "log scale" in ax.get_xlabel() and "spread sideways" in ax.get_xlabel()


def test_many_candidates_at_one_budget_stay_within_a_narrow_band_around_its_macs():
    kinds = ["searched", "l1", "depgraph", "uniform", "random", "hand-designed"]
    rows = [row(kind, "r8", 12.5e6, 20.0 + i) for i, kind in enumerate(kinds)]
    rows += [row("given", f"g{i}", 12.5e6, 15.0 + i) for i in range(4)]
    rows += [row("random", "r8", 12.5e6, 18.0 + i) for i in range(4)]
    data = pareto_data(rows, "t", teacher={"macs": 125.7e6, "acc": 70.0})
    [panel] = data.panels
    xs = sorted({p.at for ps in panel.series.values() for p in ps})
    assert len(xs) == 10  # six kinds, four given students; random's five draws in one column
    span = 125.7 - 12.5
    assert xs[-1] - xs[0] == pytest.approx(SPREAD * span)  # 9 columns DODGE apart would be wider
    assert 9 * DODGE > SPREAD and panel.shared == [pytest.approx(12.5)]


def test_comparison_is_log_scaled_when_macs_span_widely_and_shows_std_only_with_seeds():
    rows = [row("hand-designed", "r8", 2e5, 90.0, seeds=3, std=0.4),
            row("searched", "r8", 2e5, 91.0, seeds=3, std=0.3),
            row("hand-designed", "r110", 2.5e8, 95.0, seeds=3, std=0.2)]
    data = pareto_data(rows, "t", teacher={"macs": 5e8, "acc": 96.0})
    assert data.log_x and data.several_seeds and len(data.panels) == 1  # best == last
    fig = rendered(pareto_figure(data))
    [ax] = fig.axes
    assert ax.get_xscale() == "log" and "± std" in ax.get_ylabel()
    assert "best epoch is the last" in ax.get_title()
    single = pareto_data([{**r, "seeds": 1, "best_acc_std": None, "last_acc_std": None}
                          for r in rows], "t")
    assert not single.several_seeds and "±" not in single.y_label


# -- the Pareto front of a tune run -----------------------------------------------------------
TRIALS = [  # number, state, accuracy, macs
    (0, "COMPLETE", 70.0, 3.6e5), (1, "COMPLETE", 90.0, 8.8e5), (2, "COMPLETE", 64.0, 3.8e5),
    (3, "FAIL", None, None), (4, "COMPLETE", 84.0, 8.2e5), (5, "COMPLETE", 88.0, 8.9e5)]


def write_tune_files(folder: Path, with_pareto: bool = True) -> None:
    """trials.csv and pareto.json as ``kdsearch tune`` writes them (its own writer)."""
    from kdsearch.tune.run import csv_text

    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"number": n, "state": s, "accuracy": a, "macs": m, "params": 1000,
             "best_acc": a, "last_acc": a, "budget": "0.5x" if m and m > 5e5 else "0.2x",
             "param.budget": "0.5x", "dir": str(folder / f"trials/trial_{n:04d}")}
            for n, s, a, m in TRIALS]
    (folder / "trials.csv").write_text(csv_text(rows))
    if with_pareto:
        front = [r for r in rows if r["number"] in (0, 1, 4)]
        (folder / "pareto.json").write_text(json.dumps({
            "study": "space", "storage": "sqlite:///x", "accuracy": "last", "front": front,
            "objectives": {"accuracy": "maximize", "macs": "minimize"}}))


def test_the_tune_front_is_read_from_the_files_without_optuna(tmp_path, monkeypatch):
    from kdsearch.show import show_run

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    write_tune_files(tmp_path / "tune")
    written = show_run(tmp_path / "tune")
    assert {p.name for p in written} == {"pareto_front.png", "pareto_front.svg", "index.html"}
    rows = list(csv.DictReader(io.StringIO((tmp_path / "tune/trials.csv").read_text())))
    front = tune_front(rows, json.loads((tmp_path / "tune/pareto.json").read_text()))
    assert front.front == [0, 1, 4] and len(front.finished) == 5
    assert "5 complete" in front.summary() and "1 fail" in front.summary()
    fig = rendered(curves.draw_tune_front(front))
    ax = fig.axes[0]
    assert {t.get_text() for t in texts(fig, "front-label")} == {"#0 (0.2x)", "#1 (0.5x)",
                                                                "#4 (0.5x)"}
    highlighted = ax.collections[-1].get_offsets().tolist()
    assert sorted(highlighted) == [[3.6e5, 70.0], [8.2e5, 84.0], [8.8e5, 90.0]]
    assert "Pareto front" in [t.get_text() for t in ax.get_legend().get_texts()]
    computed = tune_front(rows)  # no pareto.json: the front is computed from the trials
    assert computed.front == [0, 1, 4]
    assert not math.isnan(sum(t.accuracy for t in pareto_optimal(computed.finished)))


@pytest.mark.slow
def test_the_tune_front_matches_optunas(tmp_path, monkeypatch):
    """A real study (the trials stand in for pipeline runs): the figure's front is the one
    optuna wrote to pareto.json, and the one computed from trials.csv agrees."""
    pytest.importorskip("optuna")
    from kdsearch.show import show_run
    from kdsearch.tune import run as tune_run
    from kdsearch.tune import run_tune

    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"")
    space = {"base": {"dataset": "digits", "device": "cpu",
                      "teacher": {"model": "digits_resnet14", "weights": str(weights)},
                      "search": {"budgets": ["0.5x"], "steps": 3},
                      "distill": {"method": "kd", "epochs": 1}},
             "params": {"distill.options.temperature": {"type": "float", "low": 1, "high": 8},
                        "budget": {"type": "categorical", "choices": ["0.2x", "0.5x"]}},
             "objectives": ["accuracy", "macs"], "sampler_seed": 0, "out": str(tmp_path / "out")}
    (tmp_path / "space.yaml").write_text(json.dumps(space))

    def stand_in(config, folder, base_dir, quiet):
        fraction = float(config["search"]["budgets"][0][:-1])
        temperature = config["distill"]["options"]["temperature"]
        accuracy = 60 + 60 * fraction - 2 * abs(temperature - 4)
        return {"macs": int(1.6e6 * fraction * (1 + temperature / 40)), "params": 10,
                "best_acc": accuracy, "last_acc": accuracy, "budget": "x"}

    monkeypatch.setattr(tune_run, "run_trial", stand_in)
    run_tune(str(tmp_path / "space.yaml"), trials=6, quiet=True)
    out = tmp_path / "out"
    assert (out / "figures/pareto_front.png") in show_run(out)
    pareto = json.loads((out / "pareto.json").read_text())
    rows = list(csv.DictReader(io.StringIO((out / "trials.csv").read_text())))
    assert tune_front(rows, pareto).front == sorted(r["number"] for r in pareto["front"])
    assert tune_front(rows).front == tune_front(rows, pareto).front


def test_a_transformers_widths_are_its_last_axis_and_its_stages_are_tokens():
    """A linear layer on tokens [N, L, E] has E channels, not L; attention (a tuple output)
    takes its output's width; the stage of a token layer is its token count."""
    import torch
    import torchvision

    from kdsearch.graph import Constraints, TopologyGraph
    from kdsearch.show.data import layer_widths

    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=1,
                                              num_heads=2, hidden_dim=32, mlp_dim=64,
                                              num_classes=10)
    graph = TopologyGraph(vit, (3, 32, 32), Constraints()).to_json()
    widths = {w.name: (w.teacher, w.stage) for w in layer_widths(graph)}
    layer = "encoder.layers.encoder_layer_0"
    assert widths[f"{layer}.mlp.0"] == (64, "17 tokens")
    assert widths[f"{layer}.mlp.3"] == (32, "17 tokens")
    assert widths[f"{layer}.self_attention"] == (32, "17 tokens")
    assert widths["conv_proj"] == (32, "4×4") and widths["heads.head"][0] == 10
