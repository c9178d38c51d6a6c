"""The Optuna side of ``kdsearch tune``: storage, study, objective, Pareto front.

Optuna is imported inside these functions only, so the rest of kdsearch works without it.
Storage is any Optuna RDB URL (``sqlite:///runs/tune/study.db``, ``postgresql://...``);
workers on several machines that share one URL and study name share the study. Each worker
records a heartbeat for its running trial; a trial whose heartbeat is older than the grace
period (its worker crashed or was killed) is failed, and queued again once, when any worker
starts or begins a trial. The retry reuses the crashed trial's folder, so its finished
steps are skipped.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kdsearch.errors import KdsearchError
from kdsearch.tune.space import Param, TuneSpace

HEARTBEAT_INTERVAL = 60  # seconds between a running trial's heartbeats
MAX_RETRY = 1  # a stale trial is queued again this many times


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats are an "experimental" feature
        try:
            return storages.RDBStorage(url, heartbeat_interval=heartbeat_interval,
                                       grace_period=grace_period,
                                       **{keyword: retry(max_retry=MAX_RETRY)})
        except Exception as err:  # a bad URL, a missing driver, a database that refuses
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise KdsearchError(f"storage {hide_password(url)!r}: {first}") from None


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
