"""``kdsearch tune`` with several workers on one SQLite study, and SIGTERM during a trial.

Real subprocesses (``python -m kdsearch tune``) on the tiniest digits pipeline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

BASE = {"dataset": "digits", "teacher": {"model": "digits_resnet14", "train": {"epochs": 1}},
        "search": {"budgets": ["0.5x"], "steps": 3}, "distill": {"method": "kd", "epochs": 1},
        "device": "cpu"}
PARAMS = {"search.options.decay": {"type": "float", "low": 0.5, "high": 0.95},
          "distill.options.temperature": {"type": "float", "low": 1, "high": 8}}
ROOT = Path(__file__).resolve().parents[1]


def write_space(tmp_path: Path, **changes) -> str:
    space = {"base": BASE, "params": PARAMS, "objectives": ["accuracy", "macs"],
             "sampler": "random", "out": str(tmp_path / "out"), **changes}
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps(space))  # JSON is YAML
    return str(path)


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "kdsearch", "tune", "--config", write_space(tmp_path),
         "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study", "s",
         "--out", str(tmp_path / "out"), "--quiet", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(worker: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = worker.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, err = worker.communicate()
        pytest.fail(f"worker timed out\n{out}\n{err}")
    return worker.returncode, out, err


def load(tmp_path: Path):
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")


def test_help_documents_the_totals(capsys):
    from kdsearch.cli import main

    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    assert "--total-trials M stops every worker" in capsys.readouterr().out


def test_trials_or_total_trials_is_required(tmp_path, capsys):
    from kdsearch.cli import main

    assert main(["tune", "--config", write_space(tmp_path)]) == 2
    assert "--total-trials" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask/tell by hand
def test_counted_trials_lets_a_retry_stand_in_for_its_failed_trial(tmp_path):
    from kdsearch.tune import load_space, open_storage, open_study
    from kdsearch.tune.study import counted_trials, fail_interrupted, wants_more

    space = load_space(write_space(tmp_path))
    study = open_study(space, open_storage(f"sqlite:///{tmp_path / 'study.db'}"), "s")
    study.tell(study.ask(), (50.0, 1000.0))
    running = study.ask()  # a worker interrupted in this trial
    assert fail_interrupted(study, running.number)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "WAITING"]
    assert study.trials[2].system_attrs["failed_trial"] == 1
    assert counted_trials(study) == (2, 1)
    assert wants_more(study, 2)  # the waiting retry still runs
    assert fail_interrupted(study, running.number)  # twice: queued once only
    assert len(study.trials) == 3


@pytest.mark.slow
def test_two_workers_share_a_total_without_lost_or_duplicated_trials(tmp_path):
    total = 4
    started = time.monotonic()
    workers = [start(tmp_path, "--total-trials", str(total)) for _ in range(2)]
    results = [finish(worker) for worker in workers]
    seconds = time.monotonic() - started
    for code, out, err in results:
        assert code == 0, err
        assert "Pareto front" in out
    trials = load(tmp_path).trials
    assert [t.number for t in trials] == list(range(total))  # no gaps, no duplicates
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    folders = [t.user_attrs["dir"] for t in trials]
    assert len(set(folders)) == total and all(Path(f).is_dir() for f in folders)
    assert sorted(p.name for p in (tmp_path / "out" / "trials").iterdir()) == [
        f"trial_{n:04d}" for n in range(total)]
    workers_of = {t.user_attrs["worker"] for t in trials}
    first_end = min(t.datetime_complete for t in trials)
    both_started = all(t.datetime_start < first_end for t in trials[:2])
    if both_started:  # both workers took a trial before either finished one
        assert len(workers_of) == 2
    assert seconds < 300


@pytest.mark.slow
def test_sigterm_fails_the_trial_queues_it_again_and_the_next_run_continues(tmp_path):
    worker = start(tmp_path, "--trials", "3")
    # in its distill step: the pipeline's search step does not resume an interrupted
    # search (it refuses its checkpoint), so a retry of a trial stopped there would fail
    first = tmp_path / "out" / "trials" / "trial_0000" / "distill"
    deadline = time.monotonic() + 240
    while not first.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert first.exists() and worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    code, _, err = finish(worker)
    assert code == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err  # --quiet: the one line, no optuna warning or traceback
    message = lines[0]
    assert message.startswith("kdsearch: interrupted: SIGTERM: trial ")
    assert "failed and queued again" in message

    trials = load(tmp_path).trials
    states = [t.state.name for t in trials]
    assert "RUNNING" not in states and states.count("FAIL") == 1
    failed = trials[states.index("FAIL")]
    assert f"trial {failed.number} failed" in message
    assert states[-1] == "WAITING" and trials[-1].system_attrs["failed_trial"] == failed.number

    code, _, err = finish(start(tmp_path, "--trials", "1"))
    assert code == 0, err
    retry = load(tmp_path).trials[len(trials) - 1]
    assert retry.state.name == "COMPLETE"
    assert retry.user_attrs["dir"] == failed.user_attrs["dir"]  # continued in its folder
    assert retry.params == failed.params


def test_workers_starting_together_on_a_new_database_all_open_it(tmp_path):
    """Six workers create one new SQLite study database at the same moment: the tables are
    made once and every worker gets the storage (with one attempt, most of them failed with
    'table studies already exists')."""
    import threading

    from kdsearch.tune.study import open_storage

    url = f"sqlite:///{tmp_path / 'study.db'}"
    barrier, errors = threading.Barrier(6), []

    def worker():
        barrier.wait()
        try:
            open_storage(url)
        except Exception as err:  # collected: a thread's exception would be lost
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert optuna.storages.RDBStorage(url).get_all_studies() == []
