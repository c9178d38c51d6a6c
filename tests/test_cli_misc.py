"""Small command-line behaviours: --version, a closed pipe, negative values, schedule text."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdsearch import __version__
from kdsearch.cli import main
from kdsearch.distill.config import TrainConfig


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"kdsearch {__version__}"


@pytest.mark.slow
def test_a_closed_pipe_ends_quietly():
    """`kdsearch graph resnet20 --json | head -c 300`: no error, exit 0."""
    process = subprocess.Popen([sys.executable, "-m", "kdsearch", "graph", "resnet20", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert len(process.stdout.read(300)) == 300
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait() == 0 and err == ""


def test_a_negative_budget_is_named(tmp_path, capsys):
    assert main(["search", "--teacher", "digits_resnet8", "--dataset", "digits", "--budget",
                 "-5M", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "expected one argument" not in err and "-5M" in err


@pytest.mark.parametrize("epochs, text", [
    (1, "lr 0.05, constant over 1 epoch"),
    (4, "lr 0.05, x0.1 after epochs 2, 3 of 4"),
    (3, "lr 0.05, x0.1 after epochs 2 (x2) of 3"),
    (240, "lr 0.05, x0.1 after epochs 150, 180, 210 of 240"),
])
def test_schedule_text_names_each_decay_once(epochs, text):
    assert TrainConfig(epochs=epochs).schedule_text().startswith(text)
