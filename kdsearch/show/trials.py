"""The trials of a ``kdsearch tune`` run, read from the files it writes (no optuna here).

A tune run folder holds ``trials.csv`` (every trial: number, state, accuracy, macs, params,
parameters, folder) and ``pareto.json`` (the objectives and their directions, the accuracy
used, and ``front``: the Pareto front for several objectives, the best trial for one). The
figure plots each finished trial's accuracy against its MACs (its params when params is the
objective) and highlights the front; without ``pareto.json`` the front is computed here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from kdsearch.errors import KdsearchError

TRIALS, PARETO = "trials.csv", "pareto.json"
COSTS = ("macs", "params")


@dataclass(frozen=True)
class Trial:
    number: int
    state: str  # COMPLETE, FAIL, PRUNED, RUNNING, WAITING
    accuracy: float | None  # %
    cost: float | None  # MACs or params
    budget: str = ""

    @property
    def label(self) -> str:
        """``#3 (0.5x)``: the trial's number, and its budget when it has one."""
        return f"#{self.number}" + (f" ({self.budget})" if self.budget else "")


@dataclass
class TuneFront:
    trials: list[Trial]
    front: list[int]  # trial numbers on the Pareto front (or the best trial)
    objectives: dict[str, str]  # name -> maximize / minimize
    cost: str = "macs"  # the x-axis: macs, or params when that is the objective
    accuracy: str = "last"  # which epoch's test accuracy the study used
    study: str = ""

    @property
    def finished(self) -> list[Trial]:
        return [t for t in self.trials if t.state == "COMPLETE" and t.accuracy is not None
                and t.cost is not None]

    @property
    def cost_name(self) -> str:
        return {"macs": "MACs", "params": "parameters"}[self.cost]

    @property
    def front_name(self) -> str:
        return "Pareto front" if len(self.objectives) > 1 else "best trial"

    def summary(self) -> str:
        """``study 'space': 6 trials (5 complete, 1 fail); Pareto front of accuracy (max)
        and macs (min): trials 1, 4``."""
        states: dict[str, int] = {}
        for trial in self.trials:
            states[trial.state.lower()] = states.get(trial.state.lower(), 0) + 1
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        objectives = " and ".join(f"{k} ({v[:3]})" for k, v in self.objectives.items())
        name = f"study {self.study!r}: " if self.study else ""
        return (f"{name}{len(self.trials)} trials ({counts})\n{self.front_name} of "
                f"{objectives}: "
                f"{', '.join(f'#{n}' for n in self.front) or 'none yet'}")


def read_trials(text: str) -> list[dict[str, str]]:
    """The rows of a ``trials.csv``."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"number", "state", "accuracy"} <= rows[0].keys():
        raise KdsearchError("not a kdsearch trials.csv (needs number, state, accuracy)")
    return rows


def tune_front(rows: list[dict], pareto: dict | None = None) -> TuneFront:
    """The trials of ``trials.csv`` (``rows``, values as text or numbers) and the front of
    ``pareto.json`` (computed from the finished trials when ``pareto`` is None)."""
    pareto = pareto or {}
    objectives = pareto.get("objectives") or {"accuracy": "maximize", "macs": "minimize"}
    cost = next((name for name in objectives if name in COSTS), "macs")
    trials = [Trial(int(row["number"]), str(row["state"]), _number(row.get("accuracy")),
                    _number(row.get(cost)), str(row.get("budget") or ""))
              for row in rows]
    result = TuneFront(trials, [], dict(objectives), cost, str(pareto.get("accuracy", "last")),
                       str(pareto.get("study", "")))
    if "front" in pareto:
        result.front = sorted(int(row["number"]) for row in pareto["front"])
    elif len(objectives) > 1:
        result.front = sorted(t.number for t in pareto_optimal(result.finished))
    elif result.finished:
        result.front = [max(result.finished, key=lambda t: t.accuracy).number]
    return result


def pareto_optimal(trials: list[Trial]) -> list[Trial]:
    """The trials no other trial beats on both accuracy (higher) and cost (lower)."""
    def beats(a: Trial, b: Trial) -> bool:
        return (a.accuracy >= b.accuracy and a.cost <= b.cost
                and (a.accuracy > b.accuracy or a.cost < b.cost))

    return [t for t in trials if not any(beats(other, t) for other in trials)]


def _number(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
