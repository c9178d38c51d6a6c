"""The Pareto figure: test accuracy against MACs, one panel per accuracy (best, last epoch),
or one panel when the best epoch is the last for every student.

:func:`pareto_data` computes everything the figure shows from the comparison rows (tested
without drawing): the points, their sideways dodge where students share MACs, the labels
and where they go, the axis ranges and scale. :func:`pareto_figure` only draws it, with
matplotlib's Agg canvas (no display, no pyplot state); :func:`draw_pareto` saves it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kdsearch.io import atomic_write

KIND_ORDER = ("searched", "l1", "depgraph", "uniform", "random", "given", "hand-designed")
STYLE = {  # kind -> (colour, marker, connect points with a line)
    "searched": ("#1f77b4", "o", True),
    "l1": ("#ff7f0e", "s", False),
    "depgraph": ("#d62728", "v", False),
    "uniform": ("#9467bd", "^", False),
    "random": ("#7f7f7f", "x", False),
    "given": ("#8c564b", "P", False),
    "hand-designed": ("#2ca02c", "D", False),
}
PANELS = {"best": "best-epoch test accuracy", "last": "last-epoch test accuracy"}
ONE_PANEL = "test accuracy (the best epoch is the last for every student)"
WIDE = 20  # a log MACs axis when the largest MACs are more than this many times the least
SAME = 0.02  # points closer than this fraction of the x-axis share MACs: dodged sideways
DODGE = 0.012  # fraction of the x-axis between dodged columns
SPREAD = 0.04  # the widest a group of dodged columns spans, as a fraction of the x-axis
LABEL_GAP = 0.06  # least distance between labels beside one group, as a fraction of the y-axis
PAD = 0.08  # room around the data (fraction of each axis): the teacher's star is not clipped


@dataclass(frozen=True)
class Point:
    macs: float  # millions
    mean: float
    std: float  # 0 when only one seed
    label: str  # budget, or the student of a hand-designed point
    x: float | None = None  # where it is drawn: macs dodged from points at the same MACs

    @property
    def at(self) -> float:
        return self.macs if self.x is None else self.x


@dataclass(frozen=True)
class Label:
    text: str
    kind: str
    x: float  # the rightmost point of its group (the text starts right of it)
    y: float  # where the text is (moved apart from its neighbours)
    point_y: float  # the accuracy it names


@dataclass
class Panel:
    title: str
    series: dict[str, list[Point]] = field(default_factory=dict)  # kind -> points by MACs
    teacher: Point | None = None
    labels: list[Label] = field(default_factory=list)
    shared: list[float] = field(default_factory=list)  # MACs of groups spread sideways
    ylim: tuple[float, float] = (0.0, 100.0)


@dataclass
class ParetoData:
    title: str
    panels: list[Panel]
    log_x: bool = False
    several_seeds: bool = True
    xlim: tuple[float, float] = (0.0, 1.0)
    dodged: bool = False  # some points moved sideways from others at the same MACs

    @property
    def x_label(self) -> str:
        """The scale on one line, how equal MACs are drawn on a second: on one line the
        label was wider than its panel and ran into the next panel's."""
        scale = "MACs per sample (millions" + ("; log scale)" if self.log_x else ")")
        return scale + ("\n(equal MACs spread sideways around a dotted line)" if self.dodged
                        else "")

    @property
    def y_label(self) -> str:
        return ("test accuracy (%), mean ± std over seeds" if self.several_seeds
                else "test accuracy (%), one seed")


def pareto_data(rows: Sequence[dict], title: str, teacher: dict | None = None) -> ParetoData:
    """Points per kind and panel; ``teacher`` (``macs``, ``acc``) adds a reference point."""
    one = bool(rows) and all(_same_epochs(row) for row in rows)
    prefixes = {"best": ONE_PANEL} if one else PANELS
    several = any(_seeds(row) > 1 for row in rows)
    panels = []
    for prefix, panel_title in prefixes.items():
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
    data = ParetoData(title, panels, several_seeds=several)
    _place(data)
    return data


def _same_epochs(row: dict) -> bool:
    return (row["best_acc_mean"] == row["last_acc_mean"]
            and (row["best_acc_std"] or 0.0) == (row["last_acc_std"] or 0.0))


def _seeds(row: dict) -> int:
    """The row's seed count (``seeds``; else 2 when it has a std, 1 when not)."""
    if row.get("seeds") not in (None, ""):
        return int(row["seeds"])
    return 1 if row.get("best_acc_std") is None and row.get("last_acc_std") is None else 2


def _label(row: dict) -> str:
    return row["student"] if row["kind"] in ("hand-designed", "given") else row["budget"]


# -- where things go ----------------------------------------------------------------------------
def _place(data: ParetoData) -> None:
    """The x scale and range, the dodge of points sharing MACs, the labels, the y ranges."""
    macs = [p.macs for panel in data.panels for ps in panel.series.values() for p in ps]
    macs += [panel.teacher.macs for panel in data.panels if panel.teacher]
    if not macs:
        return
    low, high = min(macs), max(macs)
    data.log_x = low > 0 and high / low > WIDE
    scale = _Scale(data.log_x, low, high)
    for panel in data.panels:
        groups = _dodge(panel, scale)
        low, high = _ylim(panel)
        panel.labels = _labels(groups, LABEL_GAP * (high - low))
        panel.ylim = _ylim(panel)
        data.dodged = data.dodged or bool(panel.shared)
    data.xlim = (scale.back(scale.lo - PAD * scale.span),
                 scale.back(scale.hi + (PAD + 0.12) * scale.span))  # labels right of points


class _Scale:
    """Positions along the x-axis as drawn: log10 of MACs on a log axis, MACs otherwise."""

    def __init__(self, log: bool, low: float, high: float):
        self.log = log
        self.lo, self.hi = self.to(low), self.to(high)
        self.span = (self.hi - self.lo) or (0.5 if log else max(abs(self.hi) * 0.5, 1e-9))

    def to(self, macs: float) -> float:
        return math.log10(macs) if self.log else macs

    def back(self, position: float) -> float:
        return 10 ** position if self.log else position


def _dodge(panel: Panel, scale: _Scale) -> list[list[tuple[str, Point]]]:
    """Spread points whose MACs are within :data:`SAME` of the axis sideways, one slot per
    kind (per student for hand-designed and given points) in kind order: the draws of one
    kind stay in one column. Slots are :data:`DODGE` of the axis apart, closer when there
    are many, so that a group spans at most :data:`SPREAD` of the axis around its MACs
    (kept in ``panel.shared`` and drawn as a dotted line). Return the groups of points."""
    points = sorted(((kind, p) for kind, ps in panel.series.items() for p in ps),
                    key=lambda kp: (scale.to(kp[1].macs), KIND_ORDER.index(kp[0])))
    groups: list[list[tuple[str, Point]]] = []
    for kind, point in points:
        if groups and scale.to(point.macs) - scale.to(groups[-1][0][1].macs) \
                < SAME * scale.span:
            groups[-1].append((kind, point))
        else:
            groups.append([(kind, point)])
    moved: dict[int, Point] = {}
    panel.shared = []
    for group in groups:
        group.sort(key=lambda kp: KIND_ORDER.index(kp[0]))
        slots = list(dict.fromkeys(_slot(kind, point) for kind, point in group))
        centre = sum(scale.to(p.macs) for _, p in group) / len(group)
        step = min(DODGE, SPREAD / max(1, len(slots) - 1)) * scale.span
        if len(slots) > 1:
            panel.shared.append(scale.back(centre))
        for kind, point in group:
            offset = (slots.index(_slot(kind, point)) - (len(slots) - 1) / 2) * step
            moved[id(point)] = Point(point.macs, point.mean, point.std, point.label,
                                     scale.back(centre + offset) if len(slots) > 1 else None)
    for kind, ps in panel.series.items():
        panel.series[kind] = [moved[id(p)] for p in ps]
    return [[(kind, moved[id(p)]) for kind, p in group] for group in groups]


def _slot(kind: str, point: Point) -> tuple[str, str]:
    return kind, point.label if kind in ("hand-designed", "given") else ""


def _labels(groups: list[list[tuple[str, Point]]], gap: float) -> list[Label]:
    """One label per kind (per student, for hand-designed points) in each group of points,
    right of the group, at least ``gap`` apart vertically so that none covers another."""
    labels = []
    for group in groups:
        names: dict[tuple[str, str], list[Point]] = {}
        for kind, point in group:
            text = point.label if kind in ("hand-designed", "given") else kind
            names.setdefault((kind, text), []).append(point)
        right = max(p.at for _, p in group)
        wanted = sorted(((sum(p.mean for p in ps) / len(ps), kind, text)
                         for (kind, text), ps in names.items()), reverse=True)
        placed = _spread([y for y, _, _ in wanted], gap)
        labels += [Label(text, kind, right, at, y)
                   for (y, kind, text), at in zip(wanted, placed, strict=True)]
    return labels


def _spread(ys: list[float], gap: float) -> list[float]:
    """Positions for labels wanted at ``ys`` (descending), ``gap`` apart at least: labels
    that would overlap form a stack centred on where they are wanted; the others stay."""
    stacks: list[list[float]] = []
    for y in ys:
        stacks.append([y])
        while len(stacks) > 1 and _top(stacks[-1], gap) > _top(stacks[-2], gap) \
                - len(stacks[-2]) * gap:
            last = stacks.pop()
            stacks[-1] += last
    return [_top(stack, gap) - i * gap for stack in stacks for i in range(len(stack))]


def _top(stack: list[float], gap: float) -> float:
    return sum(stack) / len(stack) + (len(stack) - 1) / 2 * gap


def _ylim(panel: Panel) -> tuple[float, float]:
    values = [v for ps in panel.series.values() for p in ps for v in (p.mean - p.std,
                                                                       p.mean + p.std)]
    values += [label.y for label in panel.labels]
    if panel.teacher:
        values.append(panel.teacher.mean)
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return low - PAD * span, high + PAD * span


# -- drawing --------------------------------------------------------------------------------------
def pareto_figure(data: ParetoData):
    """The figure of ``data`` (a :class:`matplotlib.figure.Figure` on an Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width = 11 if len(data.panels) > 1 else 7.5
    fig = Figure(figsize=(width, 4.8), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(data.panels), sharey=True, squeeze=False)[0]
    for ax, panel in zip(axes, data.panels, strict=True):
        _draw_panel(ax, panel, data)
    axes[0].set_ylabel(data.y_label, fontsize=12)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center",
               ncols=min(len(labels), 4 * len(data.panels)),
               fontsize=11, frameon=False)
    fig.suptitle(data.title, fontsize=14)
    return fig


def draw_pareto(data: ParetoData, path: str | Path) -> Path:
    """Draw ``data`` into a PNG at ``path`` (legible when shown about 800 px wide)."""
    fig = pareto_figure(data)
    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def _draw_panel(ax, panel: Panel, data: ParetoData) -> None:
    if data.log_x:
        ax.set_xscale("log")
    for macs in panel.shared:  # where a group spread sideways really is
        ax.axvline(macs, color="0.55", linestyle=":", linewidth=1, zorder=0, gid="shared-macs")
    for kind, points in panel.series.items():
        colour, marker, line = STYLE[kind]
        ax.errorbar([p.at for p in points], [p.mean for p in points],
                    yerr=[p.std for p in points] if data.several_seeds else None, color=colour,
                    marker=marker, markersize=8, linestyle="-" if line else "none",
                    linewidth=2, capsize=4, label=kind)
    for label in panel.labels:
        ax.annotate(label.text, (label.x, label.point_y), xytext=(9, label.y),
                    textcoords=("offset points", "data"), va="center", fontsize=10,
                    color=STYLE[label.kind][0],
                    arrowprops={"arrowstyle": "-", "color": STYLE[label.kind][0], "lw": 0.6,
                                "shrinkA": 0, "shrinkB": 4}
                    if abs(label.y - label.point_y) > 1e-9 else None)
    if panel.teacher:
        t = panel.teacher
        ax.plot([t.macs], [t.mean], marker="*", markersize=16, color="black",
                linestyle="none", label="teacher (its weights as used)", clip_on=False)
    ax.set_xlim(*data.xlim)
    ax.set_ylim(*panel.ylim)
    ax.set_title(panel.title, fontsize=13)
    ax.set_xlabel(data.x_label, fontsize=12)
    ax.tick_params(labelsize=11)
    ax.grid(True, alpha=0.3)
