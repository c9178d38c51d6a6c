"""Accuracy over seeds: mean, sample standard deviation, and Welch's t-test between two sets.

Every number in ``comparison.csv`` comes from these three functions, so a reader can check
them against the per-seed accuracies the table also lists.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """``n`` values summarised: ``std`` is the sample std (ddof=1), None for one value."""

    mean: float
    std: float | None
    n: int


@dataclass(frozen=True)
class Difference:
    """``a`` minus ``b`` in means, and the two-sided Welch p-value (None: not computable)."""

    diff: float | None
    p_value: float | None


def spread(values: Sequence[float]) -> Spread:
    """Mean and sample standard deviation of ``values`` (at least one)."""
    if not values:
        raise ValueError("spread() needs at least one value")
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return Spread(mean, std, n)


def welch(a: Sequence[float], b: Sequence[float]) -> Difference:
    """``mean(a) - mean(b)`` and the p-value of ``scipy.stats.ttest_ind(a, b,
    equal_var=False)``; the p-value is None with fewer than two values on a side, or when
    scipy gives NaN (both sides without spread)."""
    diff = spread(a).mean - spread(b).mean
    if len(a) < 2 or len(b) < 2:
        return Difference(diff, None)
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # identical values: scipy warns, then answers NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(ttest_ind(list(a), list(b), equal_var=False).pvalue)
    return Difference(diff, None if math.isnan(p_value) else p_value)


# -- rows of comparison.csv -------------------------------------------------------------------
COLUMNS = (
    "kind", "student", "budget", "reference", "macs", "params", "latency_ms", "speedup", "seeds",
    "best_acc_mean", "best_acc_std", "last_acc_mean", "last_acc_std",
    "best_diff", "best_p", "last_diff", "last_p", "best_acc_runs", "last_acc_runs",
)
METRICS = {"best": "best_test_acc", "last": "last_test_acc"}  # row prefix -> summary key


def comparison_row(kind: str, student: str, budget: str, runs: Sequence[dict],
                   reference: str = "", reference_runs: Sequence[dict] = ()) -> dict:
    """One row of the table from the training summaries of one student over seeds.

    ``runs`` are ``summary.json`` contents (``best_test_acc``, ``last_test_acc``,
    ``student_macs``, ``student_params``). With ``reference_runs`` (the hand-designed
    student at the same budget) ``*_diff`` is this mean minus the reference's and ``*_p``
    the Welch p-value; otherwise both are None.
    """
    row = {"kind": kind, "student": student, "budget": budget, "reference": reference,
           "macs": runs[0]["student_macs"], "params": runs[0]["student_params"],
           "seeds": len(runs)}
    for prefix, key in METRICS.items():
        values = [float(run[key]) for run in runs]
        summary = spread(values)
        row[f"{prefix}_acc_mean"], row[f"{prefix}_acc_std"] = summary.mean, summary.std
        versus = (welch(values, [float(r[key]) for r in reference_runs])
                  if reference_runs else Difference(None, None))
        row[f"{prefix}_diff"], row[f"{prefix}_p"] = versus.diff, versus.p_value
        row[f"{prefix}_acc_runs"] = values
    return {column: row.get(column) for column in COLUMNS}  # latency: filled in by the caller
