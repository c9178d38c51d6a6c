"""The comparison's tables: ``comparison.csv`` and ``comparison.md`` from its rows."""

from __future__ import annotations

import csv
import io
import re
from typing import TYPE_CHECKING

import torch

from kdsearch.compare.stats import COLUMNS, spread, welch
from kdsearch.search.budget import parse_budget
from kdsearch.search.select import LANDING

if TYPE_CHECKING:
    from kdsearch.compare.run import Setup


def csv_text(rows: list[dict]) -> str:
    """The rows as CSV: accuracies to 4 decimals, p-values to 4 significant digits, per-seed
    accuracies joined by ``;``, empty where a value does not apply."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(key, value) for key, value in row.items()})
    return buffer.getvalue()


def _csv_value(key: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(f"{v:.4f}" for v in value)
    if isinstance(value, float):
        return f"{value:.4g}" if key.endswith("_p") else f"{value:.4f}"
    return str(value)


WHAT_IS_COMPARED = """\
- **Teacher** {teacher} (weights: {weights}): {teacher_macs} MACs, {teacher_params} params,
  test accuracy {teacher_acc:.2f}% (of the weights every candidate learns from; for a teacher
  trained by kdsearch, its last epoch).
- **Students**: each hand-designed student, and a student searched inside the teacher at its
  MAC budget (`like:NAME`; one search per budget: seed {first_seed}, {search_steps},
  preset {preset}, selector {selector}).{controls}{given}
- **Training**, identical for every student: {init}, method {method},
  {epochs}, SGD {schedule}, batch {batch_size}, on {device}; the same seeds ({seeds}) for
  every student (a seed sets the initialisation, the batch order and the augmentation).
- **Accuracy**: top-1 (%) on the {dataset} test split ({test_images} images), mean ± sample
  std over the seeds. **best** = the highest test accuracy over the epochs (compare with
  tables that report the best epoch); **last** = the final epoch's (compare with tables that
  report the last epoch).
- **Δ** = the row's mean minus the hand-designed student's at the same budget; **p** =
  two-sided Welch t-test (`scipy.stats.ttest_ind(a, b, equal_var=False)`) on the per-seed
  accuracies; n/a with one seed.
- **MACs**: multiply-accumulates of conv and linear layers and matrix products per sample.
- **Latency**: median wall time of one forward pass over a batch of {latency_batch} on
  {latency_device} ({latency_threads}), float32 eager in eval mode, timed with
  torch.utils.benchmark for {latency_time:g} s per model on the machine that wrote this report
  (students with fresh weights); **speed-up** = the teacher's {teacher_latency:.3f} ms / the
  row's.
"""
CONTROLS = {
    "l1": "**l1**: the teacher's channels whose producing filters have the smallest L1 norm "
          "(normalised per channel unit; no block removal) removed to the budget",
    "random": "**random**: {draws} random subgraphs (channels and blocks ranked by seeded "
              "random scores, draw i with seed i), landed by the search's selection code",
    "uniform": "**uniform**: every channel unit keeps the same fraction of its channels "
               "(largest L1 norms), the largest fraction that fits",
    "depgraph": "**depgraph**: Torch-Pruning's DepGraph group-norm importance "
                "(GroupMagnitudeImportance, p=2), ranked globally",
}


def markdown_report(setup: Setup, rows: list[dict]) -> str:
    """comparison.md: what was compared, the table, and searched vs the controls."""
    settings = setup.settings
    lines = [f"# {settings.teacher} on {setup.dataset.name}: searched vs hand-designed "
             "students", "", _what_is_compared(setup),
             *results_table(rows, setup.teacher_info["macs"])]
    return "\n".join(lines + _versus_controls(rows)) + "\n"


SHORT = "†"  # marks MACs below LANDING of the budget


def results_table(rows: list[dict], teacher_macs: int) -> list[str]:
    """The table of every row; :data:`SHORT` marks the MACs of a row that landed below
    :data:`~kdsearch.search.select.LANDING` of its budget, and a footnote says which."""
    fractions = budget_fractions(rows, teacher_macs)
    lines = ["| kind | student | MACs | params | latency (ms) | speed-up | best acc (%) "
             "| Δ best | p best | last acc (%) | Δ last | p last |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r, fraction in zip(rows, fractions, strict=True):
        compared = bool(r["reference"])
        macs = f"{r['macs'] / 1e6:.3f}M" + (f" {SHORT}" if _short(fraction) else "")
        lines.append(
            f"| {r['kind']} | {r['student']} | {macs} | {_count(r['params'])} "
            f"| {_number(r['latency_ms'], '.3f')} | {_number(r['speedup'], '.2f', 'x')} "
            f"| {_pm(r['best_acc_mean'], r['best_acc_std'])} | {_signed(r['best_diff'])} "
            f"| {_p(r['best_p'], compared)} | {_pm(r['last_acc_mean'], r['last_acc_std'])} "
            f"| {_signed(r['last_diff'])} | {_p(r['last_p'], compared)} |")
    return lines + _short_footnote(rows, fractions)


def _short_footnote(rows: list[dict], fractions: list[float | None]) -> list[str]:
    """What :data:`SHORT` means, and the rows it marks with their share of the budget."""
    short = [f"{r['student']} {100 * f:.1f} %" for r, f in zip(rows, fractions, strict=True)
             if _short(f)]
    if not short:
        return []
    least = f"{100 * LANDING:.0f} %"
    return ["", f"{SHORT} Below {least} of its budget: " + "; ".join(short) + ". The search "
            f"and the controls are meant to land in [{least}, 100 %] of the budget; a student "
            "further below has fewer MACs to spend than those it is compared with."]


def budget_fractions(rows: list[dict], teacher_macs: int) -> list[float | None]:
    """Each row's MACs over its budget's; None for hand-designed students (whose MACs are
    the ``like:NAME`` budgets) and given ones (the user's, not cut to a budget)."""
    hand = {r["student"]: r["macs"] for r in rows if r["kind"] == "hand-designed"}
    return [None if r["kind"] in ("hand-designed", "given") else
            r["macs"] / parse_budget(r["budget"], teacher_macs, hand.__getitem__)
            for r in rows]


def _short(fraction: float | None) -> bool:
    return fraction is not None and fraction < LANDING


def _what_is_compared(setup: Setup) -> str:
    settings, config, teacher = setup.settings, setup.train, setup.teacher_info
    device = _device_name(config.device)
    latency = setup.latency
    return WHAT_IS_COMPARED.format(
        latency_batch=settings.latency_batch_size, latency_time=settings.latency_time,
        latency_device=_device_name(latency.device) if latency else "n/a",
        latency_threads=plural(latency.threads, "thread") if latency else "n/a",
        teacher_latency=latency.median_ms if latency else float("nan"),
        teacher=settings.teacher, weights=settings.teacher_weights or "none: UNTRAINED",
        teacher_macs=f"{teacher['macs'] / 1e6:.3f}M", teacher_params=_count(teacher["params"]),
        teacher_acc=teacher["acc"], first_seed=settings.first_seed,
        search_steps=setup.search.length_text(), preset=setup.preset,
        selector=setup.search.selector,
        controls=_controls_text(settings), given=_given_text(settings),
        init=INIT_TEXT[settings.init],
        method=settings.method,
        epochs=plural(config.epochs, "epoch"), schedule=config.schedule_text(),
        batch_size=config.batch_size, device=device,
        seeds=", ".join(map(str, settings.seed_list)), dataset=setup.dataset.name,
        test_images=len(setup.dataset.test_labels))


def _device_name(device: str) -> str:
    """``cuda:0 (NVIDIA H200)``, ``cpu``."""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return device


def _number(value: float | None, spec: str, unit: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{unit}"


INIT_TEXT = {
    "fresh": "from a fresh initialisation (protocol (b): the architecture alone)",
    "inherit": "searched and control students from the weights they kept (their student.pt; "
               "protocol (a): prune, then fine-tune), hand-designed ones fresh",
}


def _controls_text(settings) -> str:
    if not settings.baselines:
        return ""
    items = [CONTROLS[name].format(draws=settings.random_draws) for name in settings.baselines]
    return ("\n- **Controls** at the same budget, cut from the teacher with the search's units "
            "and constraints (those that remove no blocks without its width floor), counted "
            "by the same MAC counter: " + "; ".join(items) + ".")


def _given_text(settings) -> str:
    if not settings.students:
        return ""
    return (f"\n- **Given** students (your own student.json files, compared with "
            f"{settings.against[0]}): " + ", ".join(f"`{path}`" for path in settings.students)
            + ".")


def _versus_controls(rows: list[dict]) -> list[str]:
    """Searched minus each control at the same budget (random: pooled over the draws), and
    the searched student's rank among the random draws."""
    searched = {r["budget"]: r for r in rows if r["kind"] == "searched"}
    pooled: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["kind"] not in ("searched", "hand-designed", "given") and r["budget"] in searched:
            pooled.setdefault((r["kind"], r["budget"]), []).append(r)
    if not pooled:
        return []
    lines = ["", "Searched minus each control at the same budget (random: all draws and seeds "
             "pooled; spread over the draws' means; rank: the searched mean among the draw "
             "means, 1 = best):", "",
             "| control | budget | control best acc (%) | min – max | Δ best | p best "
             "| Δ last | p last | searched rank |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (kind, budget), group in pooled.items():
        s = searched[budget]
        best_runs = [v for r in group for v in r["best_acc_runs"]]
        last_runs = [v for r in group for v in r["last_acc_runs"]]
        means = [r["best_acc_mean"] for r in group]
        level = spread(means) if len(means) > 1 else spread(best_runs)
        best, last = welch(s["best_acc_runs"], best_runs), welch(s["last_acc_runs"], last_runs)
        rank = (f"{1 + sum(m > s['best_acc_mean'] for m in means)} of {len(means) + 1}"
                if len(means) > 1 else "")
        lines.append(f"| {kind} | {budget} | {_pm(level.mean, level.std)} "
                     f"| {min(means):.2f} – {max(means):.2f} | {_signed(best.diff)} "
                     f"| {_p(best.p_value)} | {_signed(last.diff)} | {_p(last.p_value)} "
                     f"| {rank} |")
    return lines


def _pm(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}"


def _p(value: float | None, compared: bool = True) -> str:
    """A p-value; n/a where a comparison could not be tested, empty where there is none."""
    if value is not None:
        return f"{value:.3g}"
    return "n/a" if compared else ""


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _count(n: int) -> str:
    return f"{n / 1e6:.3f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


