"""The demo pipeline end to end, with its schedules shortened."""

from __future__ import annotations

import json

import pytest

from kdsearch import demo


def test_demo_config_is_valid():
    config = demo.check_config(demo.demo_config())
    assert config["teacher"]["model"] == "digits_resnet14" and config["show"]
    assert config["compare"]["against"] == ["digits_resnet8"]


def test_the_demo_config_runs_apart_from_the_demo():
    """`kdsearch run --config pipeline_demo.yaml` after `kdsearch demo` runs the pipeline,
    rather than finding the demo's folder and skipping every finished step."""
    from kdsearch.cli import build_parser

    demo_out = build_parser().parse_args(["demo"]).out
    assert demo.check_config(demo.demo_config())["out"] not in (demo_out, "runs/demo")


@pytest.mark.slow
def test_demo_runs_and_continues(tmp_path, capsys):
    config = demo.demo_config()
    config["teacher"]["train"]["epochs"] = 1
    config["search"]["steps"] = 3
    config["distill"]["epochs"] = 1
    results = demo.run_demo(tmp_path, quiet=True, config=config)
    printed = capsys.readouterr().out
    assert "| teacher |" in printed
    # it ends with the headline, then where the table, the comparison and the figures are
    lines = printed.strip().splitlines()
    assert lines[-4].startswith("searched at like:digits_resnet8 (")
    assert lines[-3:] == [f"table: {tmp_path / 'results.md'}",
                          f"comparison: {tmp_path / 'compare' / 'comparison.md'}, "
                          f"{tmp_path / 'compare' / 'comparison.png'}",
                          f"figures: {tmp_path / 'figures'}"]
    teacher_macs = results["students"][0]["teacher_macs"]
    assert [s["model"] for s in results["students"]] == ["searched @ 0.5x", "searched @ 0.15x"]
    rows = results["students"] + results["comparison"]
    assert len(rows) == 4 and all(row["macs"] < teacher_macs for row in rows)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert "| teacher |" in (tmp_path / "results.md").read_text()
    for name in ("teacher/teacher.pt", "compare/comparison.csv", "compare/comparison.md"):
        assert (tmp_path / name).is_file()
    assert any(f.endswith(".png") for f in results["figures"])
    # a second run skips every finished step and reports the same table
    again = demo.run_demo(tmp_path, quiet=True, config=config)
    assert set(again["steps"].values()) == {"skipped"}
    assert again["students"] == results["students"]


@pytest.mark.slow
def test_run_with_the_demo_config_is_the_demo(tmp_path, monkeypatch, capsys):
    """`kdsearch run --config pipeline_demo.yaml` takes the demo's one thread, even where the
    machine would give it more, and so prints the demo's numbers."""
    import torch
    import yaml

    from kdsearch.cli import main

    config = demo.demo_config()
    config["teacher"]["train"]["epochs"] = 2
    config["search"]["steps"] = 8
    config["distill"]["epochs"] = 1
    config["compare"] = None
    config["show"] = False
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # what an idle 2-core machine would give
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert torch.get_num_threads() == 1
    ran = json.loads((tmp_path / "run" / "results.json").read_text())
    shown = demo.run_demo(tmp_path / "demo", quiet=True, config=config)
    for key in ("teacher", "students"):
        assert ran[key] == shown[key], key
    capsys.readouterr()
