"""``kdsearch compare --jobs N``: its worker processes end with it, however it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow,  # about 20 s each: a real compare with two workers
              pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")]


def _alive_children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` and that have not exited (zombies count as
    exited: nobody may reap an orphan here)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _start(tmp_path: Path) -> subprocess.Popen:
    """A comparison on digits whose two worker processes train for minutes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "kdsearch", "compare", "--teacher", "digits_resnet14",
         "--dataset", "digits", "--against", "digits_resnet8", "--seeds", "2",
         "--epochs", "200", "--search-steps", "4", "--jobs", "2", "--device", "cpu",
         "--quiet", "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own process group, as a shell's foreground job


def _training(tmp_path: Path, parent: subprocess.Popen) -> set[int]:
    """The parent's live children once both workers have finished a training epoch."""
    runs = list((tmp_path / "out" / "train").glob("*/seed*/metrics.jsonl"))
    return len(runs) >= 2 and _alive_children(parent.pid)


@pytest.mark.parametrize("how", ["SIGTERM to compare", "Ctrl-C (SIGINT to its group)"])
def test_a_signal_stops_every_worker_after_its_step(tmp_path, how):
    """The workers stop as a single training would: after the current step, with the last
    epoch in checkpoint.pt; compare says so in one line and exits with 130."""
    parent = _start(tmp_path)
    try:
        workers = _wait_for(lambda: _training(tmp_path, parent), 240, "two trainings")
        if how.startswith("SIGTERM"):
            parent.send_signal(signal.SIGTERM)
        else:
            os.killpg(parent.pid, signal.SIGINT)
        _, err = parent.communicate(timeout=60)
        assert parent.returncode == 130, err
        lines = err.strip().splitlines()
        assert lines[-1].startswith("kdsearch: interrupted: SIG"), err
        assert "holds epoch" in lines[-1] and "Traceback" not in err
        _wait_for(lambda: not any(map(_alive, workers)), 20, f"workers {workers} to end")
        started = [run.parent for run in (tmp_path / "out" / "train").glob("*/seed*/metrics.jsonl")]
        assert all((run / "checkpoint.pt").is_file() for run in started)
    finally:
        parent.kill()
        parent.communicate()


def test_killed_compare_leaves_no_worker_training(tmp_path):
    """SIGKILL gives the parent no chance to stop anything: its workers end by themselves.
    They used to keep training as orphans, writing into the run folders that a restarted
    compare resumes."""
    parent = _start(tmp_path)
    try:
        workers = _wait_for(lambda: _training(tmp_path, parent), 240, "two trainings")
        parent.kill()
        parent.communicate(timeout=30)
        _wait_for(lambda: not any(map(_alive, workers)), 20, f"workers {workers} to end")
    finally:
        parent.kill()
        parent.communicate()
