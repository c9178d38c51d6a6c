"""``kdsearch show``: figure data checked against the run's own files, then the figures."""

from __future__ import annotations

import json
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

import kdsearch.cli.show  # noqa: F401  (registers the command)
from kdsearch.cli import main
from kdsearch.data import load_dataset
from kdsearch.distill import TrainConfig, build_method, train
from kdsearch.errors import KdsearchError
from kdsearch.graph import Constraints, TopologyGraph
from kdsearch.io import read_json, read_jsonl
from kdsearch.models import build_model
from kdsearch.search.config import SearchConfig
from kdsearch.show import (
    gate_curves,
    graph_layout,
    layer_widths,
    show_run,
    stage_macs,
    training_curves,
)
from kdsearch.show.run import find_runs
from kdsearch.student.run import search_student

SEARCH_FIGURES = {"graph", "layer_widths", "stage_macs", "gates"}


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> Path:
    """A 5-step search of digits_resnet14 at 0.4x its MACs."""
    out = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    teacher = build_model("digits_resnet14", num_classes=10, in_channels=1)
    search_student(teacher, "digits_resnet14", load_dataset("digits"), "0.4x",
                   SearchConfig(steps=5, batch_size=64, device="cpu"),
                   Constraints(keep_stem=False, min_channels=2), out, progress=False)
    return out


@pytest.fixture(scope="module")
def train_run(tmp_path_factory) -> Path:
    """Two epochs of cross-entropy training of digits_resnet8 on 128 images."""
    out = tmp_path_factory.mktemp("train")
    dataset = load_dataset("digits", subset=128, seed=0)
    torch.manual_seed(0)
    model = build_model("digits_resnet8", num_classes=10, in_channels=1)
    method = build_method("ce", model, None, {}, dataset.input_size)
    train(method, dataset, TrainConfig(epochs=2, batch_size=64, device="cpu"), out, quiet=True)
    return out


def files(run: Path) -> tuple[dict, dict, dict]:
    return (read_json(run / "graph.json"), read_json(run / "student.json"),
            read_json(run / "summary.json"))


def with_removed_block(graph: dict, spec: dict) -> dict:
    """The spec with the second residual block removed and unit ch1 cut to 4 channels."""
    spec = json.loads(json.dumps(spec))
    block = [u for u in graph["graph"]["units"] if u["kind"] == "blocks"][1]
    spec["removed_blocks"] = {block["id"]: block["label"]}
    spec["channels"]["ch1"] = {"label": "layer1.0.conv1", "size": 16, "kept": [0, 3, 5, 9]}
    return spec


# -- figure data -------------------------------------------------------------------------

@pytest.mark.parametrize("edit", [False, True], ids=["searched", "block-removed"])
def test_layer_widths_follow_the_spec(search_run, edit):
    graph, spec, _ = files(search_run)
    spec = with_removed_block(graph, spec) if edit else spec
    removed = {n for u in graph["graph"]["units"] if u["id"] in spec["removed_blocks"]
               for n in u["nodes"]}
    widths = {w.name: w for w in layer_widths(graph, spec)}
    target = {n["id"]: n["target"] for n in graph["nodes"]}
    assert len(widths) == sum(1 for n in graph["nodes"] if n["macs"])
    checked = 0
    for unit in (u for u in graph["graph"]["units"] if u["kind"] == "channels"):
        kept = len(spec["channels"][unit["id"]]["kept"]) if unit["id"] in spec["channels"] \
            else unit["size"]
        for producer in unit["producers"]:
            width = widths[target[producer]]
            assert width.teacher == unit["size"]
            assert width.removed == (producer in removed)
            assert width.kept == (0 if producer in removed else kept)
            checked += 1
    assert checked == len(widths)  # every conv/linear layer produces a unit in a resnet
    assert edit <= any(w.removed for w in widths.values())


@pytest.mark.parametrize("edit", [False, True], ids=["searched", "block-removed"])
def test_stage_macs_add_up_to_teacher_and_student(search_run, edit):
    graph, spec, summary = files(search_run)
    stages = stage_macs(graph, with_removed_block(graph, spec) if edit else spec)
    assert [s.stage for s in stages] == ["8×8", "4×4", "2×2", "head"]
    assert sum(s.teacher for s in stages) == summary["teacher"]["macs"]
    if edit:  # the figure's count agrees with counting the rebuilt student
        from kdsearch.graph.counting import count_model
        from kdsearch.student.spec import build_student

        spec = with_removed_block(graph, spec)
        assert sum(s.student for s in stages) == count_model(build_student(spec), (1, 8, 8)).macs
    else:
        assert sum(s.student for s in stages) == spec["macs"] == summary["student"]["macs"]
    assert all(0 <= s.student <= s.teacher for s in stages)


def test_graph_layout_collapses_and_places_layers(search_run):
    graph, spec, _ = files(search_run)
    spec = with_removed_block(graph, spec)
    layout = graph_layout(graph, spec)
    kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
    assert {kinds[n.name] for n in layout.nodes} == {"placeholder", "Conv2d", "Linear", "add"}
    assert layout.rows == ["8×8", "4×4", "2×2"]
    positions = [(n.x, n.y) for n in layout.nodes]
    assert len(set(positions)) == len(positions)
    by_name = {n.name: n for n in layout.nodes}
    for source, target in layout.edges:  # left to right in a row, or down to the next row
        a, b = by_name[source], by_name[target]
        assert (a.row == b.row and a.x < b.x) or b.row == a.row + 1
    block = next(u for u in graph["graph"]["units"] if u["id"] in spec["removed_blocks"])
    assert {n.name for n in layout.nodes if n.removed} == (
        {n for n in block["nodes"] if n in by_name} | {block["add"]})
    conv = by_name[next(u for u in graph["graph"]["units"] if u["id"] == "ch1")["producers"][0]]
    assert (conv.width, conv.kept, conv.kept_fraction) == (16, 4, 0.25)


def test_layout_of_resnet56_is_one_row_per_stage():
    graph = TopologyGraph(build_model("resnet56"), (3, 32, 32)).to_json()
    layout = graph_layout(graph)
    assert len(graph["nodes"]) > 170 and layout.rows == ["32×32", "16×16", "8×8"]
    assert max(n.x for n in layout.nodes) < 32  # 9 blocks of conv, conv, add per row
    assert len({(n.x, n.y) for n in layout.nodes}) == len(layout.nodes)
    assert all(n.kept_fraction == 1 and not n.removed for n in layout.nodes)
    assert [g.label for g in layout.groups if g.row == 1][:3] == ["layer2.0", "layer2.1",
                                                                  "layer2.2"]


def test_gate_curves_have_one_point_per_step(search_run):
    _, spec, summary = files(search_run)
    log = read_jsonl(search_run / "search_log.jsonl")
    curves = gate_curves(log, summary, spec)
    assert curves.steps == [r["step"] for r in log] == list(range(5))
    assert set(curves.gates) == set(log[0]["gate_mean"])
    assert all(len(values) == len(log) for values in curves.gates.values())
    assert curves.gates["ch0"] == [r["gate_mean"]["ch0"] for r in log]
    assert curves.live_macs == [r["live_macs"] for r in log]
    assert curves.budget_macs == summary["budget_macs"]
    assert curves.removed == set(spec["removed_blocks"])
    with pytest.raises(KdsearchError, match="empty"):
        gate_curves([])


def test_training_curves_follow_metrics(train_run):
    metrics = read_jsonl(train_run / "metrics.jsonl")
    curves = training_curves(metrics)
    assert curves.epochs == [1, 2]
    assert set(curves.accuracy) == {"train_acc", "test_acc"}
    assert "loss" in curves.losses and curves.lr == [r["lr"] for r in metrics]
    assert curves.accuracy["test_acc"] == [r["test_acc"] for r in metrics]
    partial = training_curves([{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5,
                                                           "loss_kd": 0.1}])
    assert partial.losses["loss_kd"][1] == 0.1 and partial.losses["loss_kd"][0] != 0.0


# -- the figures ---------------------------------------------------------------------------

def png_width(path: Path) -> int:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">I", header[16:20])[0]


def assert_figures(folder: Path, names: set[str]) -> None:
    for name in names:
        width = png_width(folder / f"{name}.png")
        if name == "graph":  # zoomed into: its channel counts must stay legible
            assert width >= 1600
        else:
            assert 600 <= width <= 1000  # a README image
        assert "<svg" in (folder / f"{name}.svg").read_text()[:2000]


def test_show_writes_search_and_training_figures(search_run, train_run, tmp_path):
    written = show_run(search_run, tmp_path / "search")
    assert {p.stem for p in written} == SEARCH_FIGURES | {"index"} and len(written) == 9
    assert written[-1] == tmp_path / "search" / "index.html"  # --out outside the run folder
    assert_figures(tmp_path / "search", SEARCH_FIGURES)
    written = show_run(train_run)  # default: RUN_DIR/figures, and RUN_DIR/index.html
    assert written == [train_run / "figures/training.png", train_run / "figures/training.svg",
                       train_run / "index.html"]
    assert_figures(train_run / "figures", {"training"})


def test_show_returns_paths_in_the_callers_terms(train_run, tmp_path, monkeypatch):
    """A relative run folder gives relative paths, index.html's too (the pipeline writes
    them relative to its run folder: an absolute one crashed `kdsearch demo`)."""
    import shutil

    shutil.copytree(train_run, tmp_path / "run", ignore=shutil.ignore_patterns("figures"))
    monkeypatch.chdir(tmp_path)
    written = show_run(Path("run"))
    assert written == [Path("run/figures/training.png"), Path("run/figures/training.svg"),
                       Path("run/index.html")]
    assert all(path.is_file() for path in written)


def test_show_recurses_into_a_folder_of_runs(search_run, train_run, tmp_path):
    import shutil

    for name, run in (("search", search_run), ("kd_0", train_run), ("kd_1", train_run)):
        shutil.copytree(run, tmp_path / "runs" / name, ignore=shutil.ignore_patterns("figures"))
    written = show_run(tmp_path / "runs")
    figures = tmp_path / "runs" / "figures"
    assert written[-1] == tmp_path / "runs" / "index.html"
    assert {p.relative_to(figures).with_suffix("").as_posix() for p in written[:-1]} == {
        *(f"search/{name}" for name in SEARCH_FIGURES), "kd_0/training", "kd_1/training",
        "test_accuracy"}
    searches, trainings, tunes = find_runs(tmp_path / "runs")  # figures/ holds no run
    assert [p.name for p in searches] == ["search"]
    assert [p.name for p in trainings] == ["kd_0", "kd_1"] and tunes == []


def test_cli_show(search_run, tmp_path, capsys):
    assert main(["show", str(search_run), "--out", str(tmp_path / "fig")]) == 0
    out = capsys.readouterr().out
    assert "graph.png" in out and f"wrote {tmp_path / 'fig' / 'index.html'}" in out
    assert (tmp_path / "fig" / "gates.png").stat().st_size > 0


def test_bad_run_directories_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(KdsearchError, match="no such directory"):
        show_run(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(KdsearchError, match="no kdsearch run"):
        show_run(tmp_path / "junk")
    assert main(["show", str(tmp_path / "junk")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdsearch: error:") and err.count("\n") == 1
    (tmp_path / "junk" / "graph.json").write_text('{"nodes": [], "edges": [], "graph": '
                                                  '{"units": [{"id": "ch0"}]}}')
    (tmp_path / "junk" / "student.json").write_text("{}")
    with pytest.raises(KdsearchError, match="junk: not the files of a kdsearch search"):
        show_run(tmp_path / "junk")
    (tmp_path / "junk" / "graph.json").write_text("[1, 2]")
    with pytest.raises(KdsearchError, match=r"not a kdsearch graph\.json"):
        show_run(tmp_path / "junk")


# -- latency ------------------------------------------------------------------------------
def test_the_graph_title_gives_the_latency_of_a_timed_run(search_run, tmp_path, monkeypatch):
    """``kdsearch latency RUN/student.json --out RUN/latency.json``: show puts the medians
    and the speed-up into the graph figure's title."""
    import shutil

    from kdsearch.show import draw, speed

    run = tmp_path / "run"
    shutil.copytree(search_run, run, ignore=shutil.ignore_patterns("figures"))
    assert main(["latency", str(run / "student.json"), "--min-time", "0.05", "--out",
                 str(run / "latency.json")]) == 0
    figures = speed(read_json(run / "latency.json"), "digits_resnet14")
    assert figures.speedup == pytest.approx(figures.teacher_ms / figures.student_ms)
    titles = []
    drawn = draw.draw_graph
    monkeypatch.setattr(draw, "draw_graph", lambda layout, title: titles.append(title) or
                        drawn(layout, title))
    show_run(run, tmp_path / "figures")
    line = titles[0].splitlines()[-1]
    assert line.startswith(f"latency: {figures.student_ms:.3g} ms vs ")
    assert line.endswith(f"per batch of 1, float32 eager on cpu: {figures.speedup:.2f}x faster")


def test_a_latency_file_of_another_teacher_is_one_line(search_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(search_run, run, ignore=shutil.ignore_patterns("figures"))
    timing = {"median_ms": 1.0, "batch_size": 1, "device": "cpu", "backend": "eager"}
    (run / "latency.json").write_text(json.dumps(
        {"latency": timing, "teacher": "resnet56", "teacher_latency": timing}))
    with pytest.raises(KdsearchError, match=r"latency\.json: latency\.json timed teacher resnet56"):
        show_run(run, tmp_path / "figures")
    (run / "latency.json").write_text(json.dumps({"latency": {"median_ms": 1.0}}))
    with pytest.raises(KdsearchError, match=r"not a kdsearch latency\.json"):
        show_run(run, tmp_path / "figures")


# -- index.html ---------------------------------------------------------------------------
def _train_copy(train_run: Path, folder: Path, **summary) -> None:
    import shutil

    shutil.copytree(train_run, folder, ignore=shutil.ignore_patterns("figures", "index.html"))
    data = read_json(folder / "summary.json")
    data["config"]["seed"] = summary.pop("seed", 0)
    (folder / "summary.json").write_text(json.dumps({**data, **summary}))


@pytest.fixture(scope="module")
def run_folder(search_run, train_run, tmp_path_factory) -> tuple[Path, list[Path]]:
    """A pipeline-like folder: a search, a comparison's trainings (two seeds of one
    student) and its tables and figure, results.md, and a tune run's files; shown."""
    import shutil

    from kdsearch.compare.plots import draw_pareto, pareto_data
    from kdsearch.tune.run import csv_text

    root = tmp_path_factory.mktemp("shown") / "run"
    shutil.copytree(search_run, root / "search/0.5x", ignore=shutil.ignore_patterns("figures"))
    train = root / "compare/train"
    for seed in (0, 1):
        _train_copy(train_run, train / f"hand-designed_digits_resnet8/seed{seed}", seed=seed,
                    kind="hand-designed", student="digits_resnet8")
    _train_copy(train_run, train / "searched_like_digits_resnet8/seed0", kind="searched",
                student="digits_resnet14 searched @ like:digits_resnet8")
    rows = [{"kind": "hand-designed", "student": "digits_resnet8", "budget": "like:r8",
             "macs": 431328, "seeds": 1, "best_acc_mean": 86.5, "best_acc_std": None,
             "last_acc_mean": 86.0, "last_acc_std": None}]
    (root / "compare/comparison.csv").write_text(csv_text(rows))
    (root / "compare/comparison.md").write_text("# comparison\n\n| kind |\n|---|\n| x |\n")
    draw_pareto(pareto_data(rows, "t"), root / "compare/comparison.png")
    (root / "results.md").write_text("| model | MACs |\n|---|---:|\n| teacher | 1.6M |\n")
    trials = [{"number": 0, "state": "COMPLETE", "accuracy": 80.0, "macs": 4e5, "params": 10},
              {"number": 1, "state": "FAIL", "accuracy": None, "macs": None, "params": None}]
    (root / "tune").mkdir()
    (root / "tune/trials.csv").write_text(csv_text(trials))
    (root / "tune/pareto.json").write_text(json.dumps({
        "objectives": {"accuracy": "maximize", "macs": "minimize"}, "front": trials[:1]}))
    return root, show_run(root)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.images, self.tags, self.paragraphs = [], [], set(), 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.paragraphs += tag == "p"
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])


def test_index_links_every_table_and_figure_of_the_run(run_folder):
    from urllib.parse import unquote

    run_folder, written = run_folder
    index = run_folder / "index.html"
    assert written[-1] == index
    page = Links()
    page.feed(index.read_text())
    assert "script" not in page.tags  # plain HTML: nothing to run, no server needed
    for link in page.hrefs + page.images:
        assert "://" not in link and not link.startswith("/"), link  # relative
        target = (run_folder / unquote(link)).resolve()
        assert target.is_file() and run_folder.resolve() in target.parents, link
    images = {(run_folder / unquote(src)).resolve() for src in page.images}
    pngs = {p.resolve() for p in written if p.suffix == ".png"}
    assert pngs | {(run_folder / "compare/comparison.png").resolve()} == images
    linked = {(run_folder / unquote(href)).resolve() for href in page.hrefs}
    assert {p.resolve() for p in written if p.suffix == ".svg"} <= linked
    tables = {run_folder / name for name in ("results.md", "compare/comparison.csv",
                                             "compare/comparison.md", "tune/trials.csv")}
    assert {p.resolve() for p in tables} <= linked
    assert page.paragraphs > len(images) + len(tables)  # a reading of each
    assert (run_folder / "figures/tune/pareto_front.png").resolve() in images


def test_training_figures_name_runs_by_student_and_seed(run_folder):
    figures = run_folder[0] / "figures"
    legend = (figures / "test_accuracy.svg").read_text()
    for label in ("hand-designed digits_resnet8, seed 0", "hand-designed digits_resnet8, seed 1",
                  "searched @ like:digits_resnet8 (best"):
        assert label in legend, label
    assert "compare/train" not in legend and "seed0" not in legend
    title = (figures / "compare/train/hand-designed_digits_resnet8/seed1/training.svg")
    assert "hand-designed digits_resnet8, seed 1: ce" in title.read_text()


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "firefox")


def test_index_renders_in_a_headless_browser(run_folder, tmp_path):
    """Skipped where no browser is installed (this machine and CI have none)."""
    import shutil
    import subprocess

    browser = next((b for b in map(shutil.which, BROWSERS) if b), None)
    if browser is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}) on this machine")
    uri, shot = (run_folder[0] / "index.html").resolve().as_uri(), tmp_path / "index.png"
    if "firefox" in Path(browser).name:
        command = [browser, "--headless", "--screenshot", str(shot), uri]
    else:
        command = [browser, "--headless", "--disable-gpu", "--no-sandbox",
                   f"--screenshot={shot}", "--window-size=1200,4000", uri]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    assert shot.is_file() and png_width(shot) >= 1000
