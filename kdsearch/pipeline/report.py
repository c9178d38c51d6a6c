"""The run's report: ``results.json`` and ``results.md`` (teacher, students, comparison)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from kdsearch.io import write_json, write_text


def student_row(budget: str, search: dict[str, Any], distill: dict[str, Any]) -> dict[str, Any]:
    last_stage = distill["stages"][-1]
    return {"model": f"searched @ {budget}", "budget": budget,
            "macs": search["student"]["macs"], "params": search["student"]["params"],
            "teacher_macs": search["teacher"]["macs"],
            "teacher_params": search["teacher"]["params"],
            "best_acc": last_stage["best_test_acc"], "last_acc": last_stage["last_test_acc"]}


def read_comparison(path: Path) -> list[dict[str, Any]]:
    """The rows of ``comparison.csv`` (numbers as numbers, empty cells as None)."""
    with open(path, newline="") as f:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(f)]


def _number(text: str) -> Any:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def write_report(results: dict[str, Any], out: Path) -> str:
    """Write ``results.json`` and ``results.md`` (the table); return the table."""
    table = results_table(results)
    write_json(out / "results.json", results)
    write_text(out / "results.md", table + "\n")
    return table


def results_table(results: dict[str, Any]) -> str:
    """Teacher, searched students and the comparison's students: MACs, params, accuracy."""
    rows = [dict(results["teacher"], macs=None, params=None)]
    if results["students"]:
        first = results["students"][0]
        rows[0].update(macs=first["teacher_macs"], params=first["teacher_params"])
    rows += results["students"]
    for row in results["comparison"] or []:
        label = (row["student"] if row["kind"] == "hand-designed"
                 else f"{row['kind']} @ {row['budget']}")
        seeds = f" ({row['seeds']} seeds)" if row["seeds"] > 1 else ""
        rows.append({"model": f"{label} [compare{seeds}]", "macs": row["macs"],
                     "params": row["params"], "best_acc": row["best_acc_mean"],
                     "last_acc": row["last_acc_mean"]})
    lines = ["| model | MACs | params | best acc (%) | last acc (%) |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {_millions(r['macs'])} | {_thousands(r['params'])} | "
              f"{_pct(r['best_acc'])} | {_pct(r['last_acc'])} |" for r in rows]
    lines.append("\nbest acc: the best test accuracy over the epochs of a training (mean over "
                 "seeds in the compare rows); last acc: after its last epoch. The teacher has "
                 "only the accuracy of the weights every step uses (its last epoch).")
    return "\n".join(lines)


def headline(results: dict[str, Any]) -> str:
    """One line per searched student of the comparison against the hand-designed one at its
    budget: best test accuracy, the difference and its Welch p (mean over seeds); "" when
    the run has no comparison."""
    rows = results.get("comparison") or []
    hand = {row["budget"]: row for row in rows if row["kind"] == "hand-designed"}
    lines = []
    for row in rows:
        other = hand.get(row["budget"])
        if row["kind"] != "searched" or other is None:
            continue
        seeds = row["seeds"]
        p = (f"Welch p {row['best_p']:.3g}; {seeds} seeds" if seeds > 1
             and row["best_p"] is not None else f"{seeds} seed{'s' if seeds > 1 else ''}, "
             "no p-value")
        lines.append(f"searched at {row['budget']} ({_millions(row['macs'])} MACs) vs "
                     f"{other['student']} ({_millions(other['macs'])}): best test accuracy "
                     f"{_pct(row['best_acc_mean'])}% vs {_pct(other['best_acc_mean'])}%, "
                     f"difference {_signed(row['best_diff'])} points ({p})")
    return "\n".join(lines)


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _millions(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:.3f}M"


def _thousands(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e3:.1f}K"


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.2f}"
