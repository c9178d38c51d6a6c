"""The Pareto figure: test accuracy against MACs, one panel per accuracy (best, last epoch).

:func:`pareto_data` computes everything the figure shows from the comparison rows (tested
without drawing); :func:`draw_pareto` only draws it, with matplotlib's Agg canvas (no
display, no pyplot state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kdsearch.io import atomic_write

KIND_ORDER = ("searched", "l1", "depgraph", "uniform", "random", "hand-designed")
STYLE = {  # kind -> (colour, marker, connect points with a line)
    "searched": ("#1f77b4", "o", True),
    "l1": ("#ff7f0e", "s", False),
    "depgraph": ("#d62728", "v", False),
    "uniform": ("#9467bd", "^", False),
    "random": ("#7f7f7f", "x", False),
    "hand-designed": ("#2ca02c", "D", False),
}
PANELS = {"best": "best-epoch test accuracy", "last": "last-epoch test accuracy"}


@dataclass(frozen=True)
class Point:
    macs: float  # millions
    mean: float
    std: float  # 0 when only one seed
    label: str  # shown beside hand-designed points


@dataclass
class Panel:
    title: str
    series: dict[str, list[Point]] = field(default_factory=dict)  # kind -> points by MACs
    teacher: Point | None = None


@dataclass
class ParetoData:
    title: str
    panels: list[Panel]


def pareto_data(rows: Sequence[dict], title: str, teacher: dict | None = None) -> ParetoData:
    """Points per kind and panel; ``teacher`` (``macs``, ``acc``) adds a reference point."""
    panels = []
    for prefix, panel_title in PANELS.items():
        panel = Panel(panel_title)
        for kind in KIND_ORDER:
            points = [Point(row["macs"] / 1e6, row[f"{prefix}_acc_mean"],
                            row[f"{prefix}_acc_std"] or 0.0, _label(row))
                      for row in rows if row["kind"] == kind]
            if points:
                panel.series[kind] = sorted(points, key=lambda p: p.macs)
        if teacher and teacher.get("acc") is not None:
            panel.teacher = Point(teacher["macs"] / 1e6, teacher["acc"], 0.0, "teacher")
        panels.append(panel)
    return ParetoData(title, panels)


def _label(row: dict) -> str:
    return row["student"] if row["kind"] == "hand-designed" else row["budget"]


def draw_pareto(data: ParetoData, path: str | Path) -> Path:
    """Draw ``data`` into a PNG at ``path`` (legible when shown about 800 px wide)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(data.panels), sharey=True)
    for ax, panel in zip(axes, data.panels, strict=True):
        _draw_panel(ax, panel)
    axes[0].set_ylabel("test accuracy (%), mean ± std over seeds", fontsize=12)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=12,
               frameon=False)
    fig.suptitle(data.title, fontsize=14)
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def _draw_panel(ax, panel: Panel) -> None:
    for kind, points in panel.series.items():
        colour, marker, line = STYLE[kind]
        ax.errorbar([p.macs for p in points], [p.mean for p in points],
                    yerr=[p.std for p in points], color=colour, marker=marker, markersize=8,
                    linestyle="-" if line else "none", linewidth=2, capsize=4, label=kind)
        if kind == "hand-designed":
            for p in points:
                ax.annotate(p.label, (p.macs, p.mean), textcoords="offset points",
                            xytext=(6, -14), fontsize=10, color=colour)
    if panel.teacher:
        t = panel.teacher
        ax.plot([t.macs], [t.mean], marker="*", markersize=16, color="black",
                linestyle="none", label="teacher (its weights as used)")
    ax.set_title(panel.title, fontsize=13)
    ax.set_xlabel("MACs per sample (millions)", fontsize=12)
    ax.tick_params(labelsize=11)
    ax.grid(True, alpha=0.3)
