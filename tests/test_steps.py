"""The one resumable-step helper every orchestrator uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from kdsearch.errors import KdsearchError
from kdsearch.io import write_json
from kdsearch.steps import config_changes, run_step, setting_changes


@dataclass
class Settings:
    RESUMABLE: ClassVar[frozenset[str]] = frozenset({"device"})
    lr: float = 0.1
    sizes: tuple[int, ...] = (1, 2)
    device: str = "cpu"


def test_a_step_runs_once_then_is_skipped_after_its_settings_are_checked(tmp_path):
    notes, calls = [], []

    def action(folder):
        calls.append(folder)
        write_json(folder / "summary.json", {"config": {"lr": 0.1, "sizes": [1, 2],
                                                        "device": "cpu"}})

    def changes(config):
        return lambda summary: config_changes(summary["config"], config)

    summary, ran = run_step(tmp_path / "step", action, changes(Settings()), note=notes.append,
                            label="step one")
    assert ran and calls == [tmp_path / "step"] and summary["config"]["lr"] == 0.1
    # a resume on another device reuses it (RESUMABLE); lists and tuples compare equal
    summary, ran = run_step(tmp_path / "step", action, changes(Settings(device="cuda")),
                            note=notes.append, label="step one")
    assert not ran and len(calls) == 1
    assert notes == [f"step one -> {tmp_path / 'step'}",
                     f"step one: finished, skipped ({tmp_path / 'step'})"]
    with pytest.raises(KdsearchError, match=r"step was trained with other settings "
                                            r"\(lr: 0.1 -> 0.2\); restore it"):
        run_step(tmp_path / "step", action, changes(Settings(lr=0.2)), note=notes.append,
                 label="step one", made="trained", advice="restore it")


def test_a_marker_that_is_not_json_only_marks_the_step_finished(tmp_path):
    (tmp_path / "table.csv").write_text("a,b\n")
    summary, ran = run_step(tmp_path, lambda folder: None, lambda _: [], note=print,
                            label="table", done="table.csv")
    assert (summary, ran) == ({}, False)


def test_setting_changes_name_every_difference():
    assert setting_changes({"a": 1, "b": [1]}, {"a": 2, "b": (1,), "c": 3}, may_change={"c"}) \
        == ["a: 1 -> 2"]
