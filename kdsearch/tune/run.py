"""``run_tune``: an Optuna study over a tune space, one pipeline run per trial.

Files in the output directory::

    study.db          the default storage (SQLite), unless --storage / storage: is given
    teacher/          the teacher, trained once for every trial (when the base config has no
                      teacher.weights and no parameter changes the teacher)
    trials/trial_N/   one pipeline run directory per trial (teacher -> search -> distill)
    trials.csv        every trial: number, state, accuracy, MACs, params, parameters, folder
    pareto.json/.csv  the Pareto front (several objectives) or the best trial (one)
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Any

from kdsearch.errors import KdsearchError
from kdsearch.io import ensure_out_dir, write_json, write_text
from kdsearch.tune.space import TuneSpace, load_space
from kdsearch.tune.study import (
    HEARTBEAT_INTERVAL,
    FileLock,
    fail_interrupted,
    fail_stale_trials,
    front_rows,
    hide_password,
    import_optuna,
    make_objective,
    open_storage,
    open_study,
    orphan_trial,
    running_number,
    study_lock,
    trial_rows,
    wants_more,
)


class TuneInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped ``run_tune``; the message says what became of the trial."""


def run_tune(space: TuneSpace | str | Path, trials: int | None, storage: str | None = None,
             study: str | None = None, out_dir: str | Path | None = None, quiet: bool = False,
             heartbeat_interval: int = HEARTBEAT_INTERVAL,
             grace_period: int | None = None, total_trials: int | None = None) -> dict[str, Any]:
    """Run ``trials`` more trials of the study (created, or continued when it exists).

    With ``total_trials``, stop (sooner) once the study as a whole, every worker's trials
    included, holds that many (see :func:`~kdsearch.tune.study.counted_trials`); ``trials``
    may then be None. SIGINT/SIGTERM fail the running trial, queue it again, and raise
    :class:`TuneInterrupted` (a second signal while that happens is ignored).

    Returns ``study``, ``storage`` (password hidden), ``objectives``, ``trials`` (every trial
    as a row) and ``front`` (the Pareto front, or the best trial for one objective).
    """
    if trials is None and total_trials is None:
        raise KdsearchError("give the number of trials to run (--trials) or the study's total "
                            "(--total-trials)")
    optuna = import_optuna()
    space = space if isinstance(space, TuneSpace) else load_space(space)
    out = ensure_out_dir(out_dir or space.out)
    url = storage or space.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study or space.study
    trials_dir = Path(space.trials_dir) if space.trials_dir else out / "trials"
    optuna.logging.set_verbosity(optuna.logging.WARNING if quiet else optuna.logging.INFO)
    study_obj = open_study(space, open_storage(url, heartbeat_interval, grace_period), name)
    stale = fail_stale_trials(study_obj)
    if stale and not quiet:
        print(f"trials {stale} of study {name!r} had stale heartbeats (a crashed worker): "
              "failed, and queued again", flush=True)
    lock = study_lock(url)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    current: dict[str, int | None] = {"number": None}  # this worker's trial, if any

    def locked_objective(trial):
        current["number"] = trial.number
        trial.set_user_attr("worker", worker)  # before the release: see orphan_trial
        lock.release()  # the trial exists: other workers may count it and start theirs
        try:
            return objective(trial)
        except KeyboardInterrupt:
            current["interrupted"] = trial.number  # optuna fails it; we queue it again
            raise

    def after_trial(finished_study, _trial) -> None:
        write_reports(finished_study, space, out, url)  # other workers' trials included

    done = 0
    with SignalsInterrupt() as signals, quiet_interrupted_trials():
        with FileLock(out / "teacher.lock").held():  # workers sharing OUT train it once
            space = with_shared_teacher(space, out, quiet)  # interrupted: KeyboardInterrupt
        objective = make_objective(space, lambda config, folder: run_trial(
            config, folder, space.base_dir, quiet), trials_dir)
        try:
            while trials is None or done < trials:
                with lock.held():
                    if total_trials is not None and not wants_more(study_obj, total_trials):
                        break
                    current["number"] = None
                    study_obj.optimize(locked_objective, n_trials=1, catch=(KdsearchError,),
                                       callbacks=[after_trial])
                done += 1
        except KeyboardInterrupt as err:
            signals.ignore()  # clean up without a second interrupt
            number = current.get("interrupted")
            if number is None and current["number"] is not None:  # around the objective
                number = running_number(study_obj, current["number"])
            if number is None and lock.file is not None:  # between ask and the objective
                number = orphan_trial(study_obj)
            lock.release()
            # the trainer's handler stops training at a step: its message names the signal
            word = str(err).split(" ", 1)[0]
            name = word if word in ("SIGINT", "SIGTERM") else signals.name
            raise TuneInterrupted(interrupted(study_obj, number, name, space, out,
                                              url)) from None
    return write_reports(study_obj, space, out, url)


def interrupted(study, number: int | None, signal_name: str, space: TuneSpace, out: Path,
                url: str) -> str:
    """Fail and queue again the interrupted trial, update the reports; what to print."""
    what = "no trial was running"
    if number is not None and fail_interrupted(study, number):
        what = f"trial {number} failed and queued again"
    write_reports(study, space, out, url)
    return f"{signal_name}: {what}; the same command continues the study"


class SignalsInterrupt:
    """SIGTERM raises KeyboardInterrupt like SIGINT (main thread only); ``name`` is the
    signal's. Inside training, the trainer's own handler stops at a step boundary."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> SignalsInterrupt:
        self.name, self.previous = "SIGINT", {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}
        return self

    def handle(self, signum: int, _frame: Any) -> None:
        self.name = signal.Signals(signum).name
        raise KeyboardInterrupt

    def ignore(self) -> None:
        if self.previous:
            for sig in self.SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    def __exit__(self, *exc_info: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def quiet_interrupted_trials():
    """Drop optuna's "Trial N failed ... KeyboardInterrupt" warning and its traceback: the
    interrupt is reported in one line."""

    dropped = {"reason": False}

    def keep(record: logging.LogRecord) -> bool:
        info = record.exc_info
        if info and isinstance(info[1], KeyboardInterrupt):
            dropped["reason"] = True  # and the "failed with value None" line that follows
            return False
        if dropped["reason"] and "failed with value" in record.getMessage():
            dropped["reason"] = False
            return False
        return True

    logger = logging.getLogger("optuna.study._optimize")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def run_trial(config: dict[str, Any], folder: Path, base_dir: Path,
              quiet: bool) -> dict[str, Any]:
    """One trial: the pipeline in ``folder``; returns its (only) student's row."""
    from kdsearch.pipeline import run_pipeline

    return run_pipeline(config, folder, quiet=quiet, base_dir=base_dir)["students"][0]


def with_shared_teacher(space: TuneSpace, out: Path, quiet: bool) -> TuneSpace:
    """Train the teacher once (in ``out/teacher``) unless it is given or tuned."""
    teacher = space.base.get("teacher") or {}
    if teacher.get("weights") or any(p.name.startswith("teacher.") for p in space.params):
        return space
    from kdsearch.pipeline import train_teacher

    weights = train_teacher(space.trial_config({}), out, quiet=quiet, base_dir=space.base_dir)
    base = copy.deepcopy(space.base)
    base["teacher"]["weights"] = str(weights.resolve())
    return dataclasses.replace(space, base=base)


def write_reports(study, space: TuneSpace, out: Path, url: str) -> dict[str, Any]:
    """Write trials.csv, pareto.json and pareto.csv; return what pareto.json holds + trials."""
    trials, front = trial_rows(study, space), front_rows(study, space)
    summary = {"study": study.study_name, "storage": hide_password(url),
               "objectives": dict(zip(space.objectives, space.directions, strict=True)),
               "accuracy": space.accuracy, "front": front}
    write_text(out / "trials.csv", csv_text(trials))
    write_text(out / "pareto.csv", csv_text(front))
    write_json(out / "pareto.json", summary)
    return {**summary, "trials": trials}


def csv_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def front_table(result: dict[str, Any]) -> str:
    """The front as a Markdown table, with a line saying what it is."""
    trials, front = result["trials"], result["front"]
    states = {}
    for row in trials:
        states[row["state"].lower()] = states.get(row["state"].lower(), 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    what = ("Pareto front" if len(result["objectives"]) > 1 else "best trial")
    objectives = ", ".join(f"{k} ({v[:3]})" for k, v in result["objectives"].items())
    lines = [f"study {result['study']!r}: {len(trials)} trials ({counts}); {what} over "
             f"{objectives}, accuracy = {result['accuracy']} test accuracy"]
    if not front:
        return "\n".join([*lines, "no finished trial yet"])
    names = [key for key in front[0] if key.startswith("param.")]
    lines += ["", "| trial | accuracy (%) | MACs | params | " +
              " | ".join(n[len("param."):] for n in names) + " |",
              "|---:|---:|---:|---:|" + "---|" * len(names)]
    for row in front:
        lines.append(f"| {row['number']} | {row['accuracy']:.2f} | {row['macs'] / 1e6:.3f}M | "
                     f"{row['params'] / 1e3:.1f}K | "
                     + " | ".join(_short(row[n]) for n in names) + " |")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
