"""Helpers shared by several test modules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from kdsearch.graph.counting import count_macs
from kdsearch.graph.trace import example_input_for, trace_with_shapes
from kdsearch.graph.units import Constraints, Selection, find_units
from kdsearch.student.extract import extract_student
from kdsearch.student.resolve import resolve_model

DIGITS = (1, 8, 8)


def searched_digits_student() -> nn.Module:
    """A student cut out of digits_resnet14 as a search would (an fx.GraphModule): every
    third channel of each channel unit and the last residual block removed."""
    teacher = resolve_model("digits_resnet14", 10, DIGITS).model
    gm = trace_with_shapes(teacher, example_input_for(DIGITS))
    units = find_units(gm, count_macs(gm), Constraints(keep_stem=False, min_channels=0))
    kept = {u.id: list(range(0, u.size, 3)) for u in units.channels if u.searchable}
    last_block = [u.id for u in units.blocks if u.searchable][-1]
    return extract_student(gm, units, Selection(kept=kept, removed_blocks={last_block}))


def assert_same_state(a, b, where="state") -> None:
    """Nested dicts/lists of tensors and plain values are equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{index}]")
    else:
        assert a == b, where


def lines_in(path: Path) -> int:
    try:
        return path.read_text().count("\n")
    except FileNotFoundError:
        return 0


def kill_and_resume(argv: list[str], out: Path, checkpoint: str, log: str,
                    points: tuple[int, ...]) -> None:
    """Run ``kdsearch ARGV --out OUT`` and SIGKILL it once ``checkpoint`` exists, then resume
    it with ``--resume`` and kill it again once ``log`` has each of ``points`` lines; finally
    resume it to the end. Each kill must land before the run finishes."""
    command = [sys.executable, "-m", "kdsearch", *argv, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for point, resume in ((None, []), *((p, ["--resume"]) for p in points)):
        process = subprocess.Popen([*command, *resume], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while process.poll() is None and not (
                (out / checkpoint).exists() if point is None else lines_in(out / log) >= point):
            time.sleep(0.002)
        process.kill()
        assert process.wait() == -signal.SIGKILL, "the run ended before it could be killed"
        assert (out / checkpoint).exists() and not (out / "summary.json").exists()
    run_to_the_end([*argv, "--resume"], out)


def run_to_the_end(argv: list[str], out: Path) -> None:
    """``kdsearch ARGV --out OUT`` in a subprocess (one thread), which must succeed."""
    run = subprocess.run([sys.executable, "-m", "kdsearch", *argv, "--out", str(out)],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
