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
pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_compare_leaves_no_worker_training(tmp_path, sig):
    """The workers used to keep training as orphans after their parent was killed, writing
    into the run folders that a restarted compare resumes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    parent = subprocess.Popen(
        [sys.executable, "-m", "kdsearch", "compare", "--teacher", "digits_resnet14",
         "--dataset", "digits", "--against", "digits_resnet8", "--seeds", "2",
         "--epochs", "200", "--search-steps", "4", "--jobs", "2", "--device", "cpu",
         "--quiet", "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def training() -> set[int]:  # both workers have written a training's first epoch
            runs = list((tmp_path / "out" / "train").glob("*/seed*/metrics.jsonl"))
            return len(runs) >= 2 and _alive_children(parent.pid)

        workers = _wait_for(training, 240, "two trainings to start")
        parent.send_signal(sig)
        parent.wait(30)
        _wait_for(lambda: not any(map(_alive, workers)), 20, f"workers {workers} to end")
    finally:
        parent.kill()
        parent.wait()
        parent.stderr.close()
