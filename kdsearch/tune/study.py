"""The Optuna side of ``kdsearch tune``: storage, study, objective, Pareto front.

Optuna is imported inside these functions only, so the rest of kdsearch works without it.
Storage is any Optuna RDB URL (``sqlite:///runs/tune/study.db``, ``postgresql://...``);
workers on several machines that share one URL and study name share the study. Each worker
records a heartbeat for its running trial; a trial whose heartbeat is older than the grace
period (its worker crashed or was killed) is failed, and queued again once, when any worker
starts or begins a trial. The retry reuses the crashed trial's folder, so its finished
steps are skipped. A worker stopped by SIGINT/SIGTERM fails its running trial and queues it
again at once (:func:`fail_interrupted`), so the next invocation continues it.

Several workers, one study: ``--trials N`` counts this worker's trials; a study-wide total
(``--total-trials``) is :func:`wants_more`, checked while holding :func:`study_lock`, so
that no two workers take the last slot. SQLite waits up to ``SQLITE_TIMEOUT`` seconds for
another worker's write instead of failing with "database is locked". Workers that start
together on a new database race to create its tables; the loser opens it again.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kdsearch.errors import KdsearchError, first_line
from kdsearch.tune.space import Param, TuneSpace

HEARTBEAT_INTERVAL = 60  # seconds between a running trial's heartbeats
MAX_RETRY = 1  # a stale trial is queued again this many times
SQLITE_TIMEOUT = 60  # seconds a SQLite write waits for another worker's
STORAGE_ATTEMPTS = 5  # tries to open a storage whose tables another worker is creating


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise KdsearchError("kdsearch tune needs optuna: pip install optuna") from None
    return optuna


def open_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL,
                 grace_period: int | None = None):
    """An ``RDBStorage`` with heartbeats and a retry of stale trials."""
    optuna = import_optuna()
    storages = optuna.storages
    retry = (getattr(storages, "RetryHeartbeatStaleTrialCallback", None)
             or storages.RetryFailedTrialCallback)  # its name before optuna 4.9
    names = inspect.signature(storages.RDBStorage).parameters
    keyword = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in names
               else "failed_trial_callback")
    extra = {}
    if url.startswith("sqlite:") and "engine_kwargs" in names:
        extra["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are an "experimental" feature
        extra[keyword] = retry(max_retry=MAX_RETRY)
        for attempt in range(1, STORAGE_ATTEMPTS + 1):
            try:
                return storages.RDBStorage(url, heartbeat_interval=heartbeat_interval,
                                           grace_period=grace_period, **extra)
            except Exception as err:  # a bad URL, a missing driver, a database that refuses
                if attempt == STORAGE_ATTEMPTS or not _schema_race(err):
                    raise KdsearchError(f"storage {hide_password(url)!r}: "
                                        f"{first_line(err)}") from None
                time.sleep(0.2 * attempt)  # another worker is creating the tables


def _schema_race(err: Exception) -> bool:
    """Whether ``err`` may come from two workers creating a new database's tables at once
    (both insert the schema version: a unique constraint fails, or a table exists)."""
    from sqlalchemy import exc

    return isinstance(err, (exc.IntegrityError, exc.OperationalError, exc.ProgrammingError))


def hide_password(url: str) -> str:
    """``postgresql://user:***@host/db``: a URL fit to print."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def open_study(space: TuneSpace, storage, name: str):
    """Create the study, or load it when ``name`` exists in ``storage`` (same objectives)."""
    optuna = import_optuna()
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=_sampler(space),
                                    directions=space.directions, load_if_exists=True)
    except ValueError as err:
        raise KdsearchError(f"study {name!r}: {err}") from None
    if space.sampler_seed is not None and study.trials:
        # a continued study must not replay the proposals of the first invocation
        study = optuna.load_study(study_name=name, storage=storage,
                                  sampler=_sampler(space, len(study.trials)))
    directions = [d.name.lower() for d in study.directions]
    if directions != space.directions:
        raise KdsearchError(f"study {name!r} exists with directions {directions}; these "
                            f"objectives ({', '.join(space.objectives)}) need "
                            f"{space.directions}: use another --study")
    return study


def _sampler(space: TuneSpace, offset: int = 0):
    seed = None if space.sampler_seed is None else space.sampler_seed + offset
    samplers = import_optuna().samplers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if space.sampler == "random":
            return samplers.RandomSampler(seed=seed)
        if space.sampler == "nsga2":
            return samplers.NSGAIISampler(seed=seed)
        return samplers.TPESampler(seed=seed)


def fail_stale_trials(study) -> list[int]:
    """Fail the running trials whose heartbeat is stale; return their numbers."""
    optuna = import_optuna()
    running = {t.number for t in study.get_trials(deepcopy=False,
                                                  states=(optuna.trial.TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    return sorted(t.number for t in failed if t.number in running)


def counted_trials(study) -> tuple[int, int]:
    """(trials that count towards a study-wide total, trials waiting to run).

    Every trial counts (complete, pruned, failed, running, waiting) except a failed one
    that was queued again: its retry stands in for it.
    """
    state = import_optuna().trial.TrialState
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counted = [t for t in trials if not (t.state == state.FAIL and t.number in retried)]
    return len(counted), sum(t.state == state.WAITING for t in trials)


def wants_more(study, total: int) -> bool:
    """Whether a worker should start a trial: fewer than ``total`` counted, or one waiting."""
    counted, waiting = counted_trials(study)
    return counted < total or waiting > 0


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL (None for other storages, or in memory)."""
    match = re.match(r"sqlite:///(.+)$", url)
    return Path(match.group(1).split("?")[0]) if match and ":memory:" not in url else None


class FileLock:
    """An exclusive ``flock`` on ``path`` (between processes on one machine); no-op without
    a path or without ``fcntl``. ``release`` may be called more than once."""

    def __init__(self, path: Path | None):
        self.path, self.file = path, None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no lock (workers may overshoot a total by one each)
            return
        if self.path is None or self.file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a")  # noqa: SIM115  (closed in release)
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the flock
            self.file = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()


def study_lock(url: str) -> FileLock:
    """The lock that makes "check the total, then create a trial" atomic: beside a SQLite
    database. Other storages get none (workers on several machines asking in the same
    instant may overshoot a total by one trial each)."""
    path = sqlite_path(url)
    return FileLock(path.with_name(path.name + ".lock") if path else None)


def running_number(study, number: int) -> int | None:
    """``number`` if that trial is still running, else None."""
    state = import_optuna().trial.TrialState
    running = study.get_trials(deepcopy=False, states=(state.RUNNING,))
    return number if any(t.number == number for t in running) else None


def orphan_trial(study) -> int | None:
    """The running trial that this worker asked for but had not started (interrupted in
    between): under :func:`study_lock`, the only running trial without a ``worker``."""
    state = import_optuna().trial.TrialState
    running = [t.number for t in study.get_trials(deepcopy=False, states=(state.RUNNING,))
               if "worker" not in t.user_attrs]
    return max(running) if running else None


def fail_interrupted(study, number: int) -> bool:
    """Fail trial ``number`` if it is still running (optuna fails it when the objective
    raises; give only a failed trial that was interrupted), and queue it again (it
    continues in its folder); True if it was queued."""
    optuna = import_optuna()
    state = optuna.trial.TrialState
    frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if frozen is None or frozen.state not in (state.RUNNING, state.FAIL):
        return False
    if frozen.state == state.RUNNING:
        study._storage.set_trial_state_values(frozen._trial_id, state=state.FAIL)
        frozen = study._storage.get_trial(frozen._trial_id)
    if any(number in t.system_attrs.get("retry_history", []) for t in study.get_trials(
            deepcopy=False)):
        return True  # already queued again (by a stale-heartbeat check)
    retry = (getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
             or optuna.storages.RetryFailedTrialCallback)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        retry(max_retry=None)(study, frozen)  # an interrupt is no fault of the trial
    return True


def suggest(trial, param: Param) -> Any:
    """The trial's value of ``param`` (a categorical's label is what optuna records)."""
    if param.type == "categorical":
        return param.choices[trial.suggest_categorical(param.name, list(param.choices))]
    if param.type == "int":
        return trial.suggest_int(param.name, param.low, param.high, step=param.step or 1,
                                 log=param.log)
    return trial.suggest_float(param.name, param.low, param.high, step=param.step,
                               log=param.log)


def original_number(trial) -> int:
    """The number of the trial this one retries (itself when it is not a retry)."""
    optuna = import_optuna()
    for frozen in trial.study.get_trials(deepcopy=False,
                                         states=(optuna.trial.TrialState.RUNNING,)):
        if frozen.number == trial.number:
            return frozen.system_attrs.get("failed_trial", trial.number)
    return trial.number


def make_objective(space: TuneSpace, run_trial: Callable[[dict, Path], dict],
                   trials_dir: Path) -> Callable:
    """The objective: suggest values, run the trial in its folder, return the objectives."""

    def objective(trial) -> float | tuple[float, ...]:
        values = {param.name: suggest(trial, param) for param in space.params}
        folder = trials_dir / f"trial_{original_number(trial):04d}"
        trial.set_user_attr("dir", str(folder))
        student = run_trial(space.trial_config(values), folder)
        measured = {"accuracy": student[f"{space.accuracy}_acc"], "macs": student["macs"],
                    "params": student["params"]}
        for key in ("macs", "params", "best_acc", "last_acc", "budget"):
            trial.set_user_attr(key, student[key])
        objectives = tuple(float(measured[name]) for name in space.objectives)
        return objectives[0] if len(objectives) == 1 else objectives

    return objective


def trial_rows(study, space: TuneSpace) -> list[dict[str, Any]]:
    """Every trial of the study: number, state, objectives, parameters, user attributes."""
    return [_row(trial, space) for trial in study.get_trials(deepcopy=False)]


def front_rows(study, space: TuneSpace) -> list[dict[str, Any]]:
    """The Pareto front (multi-objective) or the best trial, as rows; [] before any result."""
    optuna = import_optuna()
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return []
    best = study.best_trials if len(space.objectives) > 1 else [study.best_trial]
    return [_row(trial, space) for trial in sorted(best, key=lambda t: t.number)]


def _row(trial, space: TuneSpace) -> dict[str, Any]:
    attrs = trial.user_attrs
    accuracy = attrs.get(f"{space.accuracy}_acc")
    row = {"number": trial.number, "state": trial.state.name, "accuracy": accuracy,
           "macs": attrs.get("macs"), "params": attrs.get("params"),
           "best_acc": attrs.get("best_acc"), "last_acc": attrs.get("last_acc"),
           "budget": attrs.get("budget")}
    row.update({f"param.{p.name}": trial.params.get(p.name) for p in space.params})
    row["dir"] = attrs.get("dir")
    return row
