"""The demo pipeline end to end, with its schedules shortened."""

from __future__ import annotations

import json

import pytest

from kdsearch import demo


@pytest.mark.slow
def test_demo_runs_and_continues(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "TEACHER_EPOCHS", 1)
    monkeypatch.setattr(demo, "STUDENT_EPOCHS", 1)
    monkeypatch.setattr(demo, "SEARCH_STEPS", 3)
    rows = demo.run_demo(tmp_path, quiet=True)
    assert rows[0]["model"] == "teacher" and len(rows) == 5
    teacher_macs = rows[0]["macs"]
    for row in rows[1:]:
        assert row["macs"] < teacher_macs and row["best_acc"] is not None
    assert json.loads((tmp_path / "demo.json").read_text()) == rows
    assert "| teacher |" in (tmp_path / "demo.md").read_text()
    # a second run skips every finished step and reports the same table
    assert demo.run_demo(tmp_path, quiet=True) == rows
