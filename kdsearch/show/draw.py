"""Draw the figure data of :mod:`kdsearch.show.data` with matplotlib, sized for a README.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg (PNG) and
SVG backends: pyplot and its global state are never touched, so no display is needed.
Each figure is 1000 px wide at :data:`DPI`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch, Rectangle
from matplotlib.path import Path as MplPath
from matplotlib.ticker import FuncFormatter, MaxNLocator

from kdsearch.io import atomic_write
from kdsearch.show.data import (
    ROW_GAP,
    GateCurves,
    GraphLayout,
    LayerWidth,
    LayoutNode,
    StageMacs,
    TrainingCurves,
)

DPI, WIDTH_IN = 100, 10.0
KEPT, CUT, TEACHER, EDGE, GHOST = "#2f6db5", "#c9c9c9", "#f4f4f4", "#333333", "#9a9a9a"
BLOCK, BUDGET = "#e07b39", "#c0392b"
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "svg.fonttype": "none",
         "axes.spines.top": False, "axes.spines.right": False}
BOX_W, BOX_H, MIN_H = 0.56, 0.42, 0.1  # graph boxes, in layout units (columns, rows)


def si(value: float) -> str:
    """``646208`` -> ``646K``, ``1648256`` -> ``1.65M``."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


MACS = FuncFormatter(lambda value, _: si(value))


def new_figure(height: float, width: float = WIDTH_IN) -> Figure:
    with mpl.rc_context(STYLE):
        return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg``; return both paths."""
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    with mpl.rc_context(STYLE):
        atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=DPI, facecolor="white"))
        atomic_write(svg, lambda f: fig.savefig(f, format="svg", facecolor="white",
                                                metadata={"Date": None}))
    return [png, svg]


# -- 1. the teacher graph ------------------------------------------------------------------

def draw_graph(layout: GraphLayout, title: str = "") -> Figure:
    """One row per stage, layers left to right; box height ∝ channels, blue = kept."""
    columns = max((n.x for n in layout.nodes), default=0) + 1
    longest = max(map(len, title.splitlines()), default=0)
    # a short network is not stretched, but its title fits (about 0.075 in per character)
    width = min(WIDTH_IN, max(6.0, 1.6 + 0.6 * columns, 0.4 + 0.075 * longest))
    margin = 0.9 + 60 * (columns + 1.5) / (0.95 * DPI * width)  # room for "16×16"
    fig = new_figure(0.9 + 1.5 * len(layout.rows), width=width)
    with mpl.rc_context(STYLE):
        ax = fig.add_subplot()
        tallest = max((n.width for n in layout.nodes if n.kind == "conv"), default=1)
        by_name = {n.name: n for n in layout.nodes}
        for source, target in layout.edges:
            _draw_edge(ax, by_name[source], by_name[target])
        for node in layout.nodes:
            _draw_node(ax, node, tallest)
        _label_graph(ax, layout, 0.95 * DPI * width / (columns + margin))
        ax.set_xlim(-margin, columns - 0.3)
        top = max((n.y for n in layout.nodes), default=0) + BOX_H / 2 + 0.05
        ax.set_ylim(-ROW_GAP * (len(layout.rows) - 1) - 0.55, max(top, 0.4))
        ax.axis("off")
        ax.set_title(title, loc="left")
        handles = _graph_legend(layout)
        fig.legend(handles=handles, loc="outside lower center", frameon=False,
                   ncol=len(handles) if width >= 8 else 3, title_fontsize=9,
                   title="rows: stages (output resolution) · box height ∝ channels")
    return fig


def _draw_node(ax, node: LayoutNode, tallest: int) -> None:
    if node.kind in ("input", "merge"):
        face = "white" if not node.removed else TEACHER
        marker = {"input": ">", "merge": "o"}[node.kind]
        ax.plot(node.x, node.y, marker=marker, ms=8, mfc=face, zorder=3, ls="none",
                mec=GHOST if node.removed else EDGE)
        if node.kind == "merge":
            ax.plot(node.x, node.y, marker="x" if node.label == "cat" else "+", ms=5, zorder=4,
                    color=GHOST if node.removed else EDGE, ls="none")
        return
    height = max(MIN_H, BOX_H * min(node.width / tallest, 1.0))
    left, bottom = node.x - BOX_W / 2, node.y - height / 2
    if node.removed:
        ax.add_patch(Rectangle((left, bottom), BOX_W, height, facecolor=TEACHER,
                               edgecolor=GHOST, linestyle=(0, (2, 1.5)), lw=1.0, zorder=3))
        return
    kept = height * node.kept_fraction
    ax.add_patch(Rectangle((left, bottom + kept), BOX_W, height - kept, facecolor=CUT,
                           lw=0, zorder=3))
    ax.add_patch(Rectangle((left, bottom), BOX_W, kept, facecolor=KEPT, lw=0, zorder=3))
    ax.add_patch(Rectangle((left, bottom), BOX_W, height, facecolor="none", edgecolor=EDGE,
                           lw=0.8, zorder=4))


def _draw_edge(ax, source: LayoutNode, target: LayoutNode) -> None:
    style = {"color": GHOST if target.removed or source.removed else "#777777", "lw": 0.9,
             "zorder": 1}
    if source.row != target.row:  # down to the next row: along the gap, then in from the left
        y_gap = -ROW_GAP * source.row - ROW_GAP / 2.6
        xs = [source.x, source.x + 0.5, source.x + 0.5, target.x - 0.5, target.x - 0.5,
              target.x]
        ys = [source.y, source.y, y_gap, y_gap, target.y, target.y]
        ax.plot(xs, ys, **style)
    elif target.x - source.x <= 1 or source.y != target.y:
        ax.plot([source.x, target.x], [source.y, target.y], **style)
    else:  # a skip connection: an arc above the row
        lift = BOX_H + 0.16  # the curve peaks at half the lift: just above the tallest box
        mid = ((source.x + target.x) / 2, max(source.y, target.y) + lift)
        path = MplPath([(source.x, source.y), mid, (target.x, target.y)],
                       [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
        ax.add_patch(PathPatch(path, facecolor="none", edgecolor=style["color"],
                               lw=style["lw"], zorder=1))


def _label_graph(ax, layout: GraphLayout, column_px: float) -> None:
    """Stage names left of the rows, module names under their nodes."""
    texts, prefixes = _group_texts(layout, column_px)
    for row, stage in enumerate(layout.rows):
        ax.text(-0.7, -ROW_GAP * row, stage, ha="right", va="center", fontsize=11,
                fontweight="bold")
        if prefixes.get(row):
            ax.text(-0.7, -ROW_GAP * row - BOX_H / 2 - 0.08, f"{prefixes[row]}.", ha="right",
                    va="top", fontsize=8, color="#444444")
    for group, text in zip(layout.groups, texts, strict=True):
        ax.text((group.x0 + group.x1) / 2, -ROW_GAP * group.row - BOX_H / 2 - 0.08, text,
                ha="center", va="top", fontsize=8, color=GHOST if group.removed else "#444444",
                zorder=2, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6})


def _group_texts(layout: GraphLayout, column_px: float) -> tuple[list[str], dict[int, str]]:
    """The label of each group, as long as it fits, and the prefix dropped in each row: in
    a row whose blocks do not all fit in full, blocks drop their first part (``layer1.10``
    -> ``10``, with ``layer1.`` left of the row); a lone layer keeps only its first part
    (``conv1.0`` -> ``conv1``)."""
    groups = layout.groups
    last_in_row = {g.row: i for i, g in enumerate(groups)}  # its label may spill right

    def fits(text: str, i: int) -> bool:
        extra = 1.2 if last_in_row[groups[i].row] == i else 0.0
        return bool(text) and len(text) * 6.0 <= (groups[i].x1 - groups[i].x0 + 0.8 + extra) \
            * column_px

    blocks = [i for i, g in enumerate(groups) if g.x1 > g.x0]
    short_rows = {groups[i].row for i in blocks if not fits(groups[i].label, i)}
    texts = []
    for i, group in enumerate(groups):
        parts = group.label.split(".")
        if i not in blocks:
            options = [group.label, parts[0]]
        else:
            options = [".".join(parts[1:])] if group.row in short_rows else [group.label]
        texts.append(next((t for t in options if fits(t, i)), ""))
    prefixes = {}
    for row in short_rows:
        firsts = {groups[i].label.split(".")[0] for i in blocks if groups[i].row == row}
        prefixes[row] = firsts.pop() if len(firsts) == 1 else ""
    return texts, prefixes


def _graph_legend(layout: GraphLayout) -> list:
    handles = [Patch(facecolor=KEPT, edgecolor=EDGE, label="kept channels"),
               Patch(facecolor=CUT, edgecolor=EDGE, label="removed channels")]
    if any(n.removed for n in layout.nodes):
        handles.append(Patch(facecolor=TEACHER, edgecolor=GHOST, linestyle="--",
                             label="removed block"))
    merges = {n.label for n in layout.nodes if n.kind == "merge"}
    for name, marker in (("add", r"$\oplus$"), ("cat", r"$\otimes$")):
        if name in merges:
            handles.append(Line2D([], [], marker=marker, color=EDGE, ls="none", ms=9,
                                  label="concat" if name == "cat" else name))
    return handles


# -- 2. widths per layer -------------------------------------------------------------------

def draw_layer_widths(widths: list[LayerWidth], title: str = "") -> Figure:
    """Kept output channels per layer (filled) inside the teacher's width (outline)."""
    fig = new_figure(4.2 if len(widths) > 40 else 4.8)
    with mpl.rc_context(STYLE):
        ax = fig.add_subplot()
        xs = range(len(widths))
        kept = [w for w in widths if not w.removed]
        removed = [w for w in widths if w.removed]
        ax.bar(xs, [w.teacher for w in widths], width=0.8, facecolor=TEACHER, edgecolor=EDGE,
               lw=0.7, label="teacher")
        ax.bar([i for i, w in enumerate(widths) if not w.removed], [w.kept for w in kept],
               width=0.8, color=KEPT, label="student (kept)")
        if removed:
            ax.bar([i for i, w in enumerate(widths) if w.removed], [w.teacher for w in removed],
                   width=0.8, facecolor="none", edgecolor=GHOST, hatch="///", lw=0,
                   label="in a removed block")
        _stage_marks(ax, [w.stage for w in widths])
        if len(widths) <= 40:
            ax.set_xticks(list(xs), [w.name for w in widths], rotation=90, fontsize=8)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("conv / linear layer (graph order)")
        ax.set_xlim(-0.7, len(widths) - 0.3)
        ax.set_ylabel("output channels")
        ax.set_title(title, loc="left", pad=20)
        ax.legend(loc="upper left", frameon=False)
    return fig


def _stage_marks(ax, stages: list[str]) -> None:
    """Dotted lines between stages and the stage names along the top."""
    starts = [i for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]]
    for start, end in zip(starts, [*starts[1:], len(stages)], strict=True):
        if start:
            ax.axvline(start - 0.5, color=GHOST, ls=":", lw=1)
        ax.text((start + end - 1) / 2, 1.0, stages[start], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9, color="#555555")


# -- 3. MACs per stage ---------------------------------------------------------------------

def draw_stage_macs(stages: list[StageMacs], title: str = "") -> Figure:
    """Teacher and student MACs per resolution level, the student's share written on top."""
    fig = new_figure(4.2)
    with mpl.rc_context(STYLE):
        ax = fig.add_subplot()
        xs = range(len(stages))
        ax.bar([x - 0.2 for x in xs], [s.teacher for s in stages], width=0.4,
               facecolor=TEACHER, edgecolor=EDGE, lw=0.8, label="teacher")
        ax.bar([x + 0.2 for x in xs], [s.student for s in stages], width=0.4, color=KEPT,
               label="student")
        for x, stage in zip(xs, stages, strict=True):
            share = stage.student / stage.teacher if stage.teacher else 0
            ax.text(x + 0.2, stage.student, f"{si(stage.student)}\n{share:.0%}", ha="center",
                    va="bottom", fontsize=9)
            ax.text(x - 0.2, stage.teacher, si(stage.teacher), ha="center", va="bottom",
                    fontsize=9, color="#555555")
        ax.set_xticks(list(xs), [s.stage if s.stage != "head" else "head\n(linear)"
                                 for s in stages])
        ax.set_ylim(0, 1.15 * max((s.teacher for s in stages), default=1))
        ax.yaxis.set_major_formatter(MACS)
        ax.set_xlabel("stage (output resolution)")
        ax.set_ylabel("MACs per sample")
        ax.set_title(title, loc="left")
        ax.legend(frameon=False, loc="best")
    return fig


# -- 4. the search -------------------------------------------------------------------------

def draw_gate_curves(curves: GateCurves, title: str = "") -> Figure:
    """Left: each unit's mean gate per step. Right: live and target MACs, the budget."""
    fig = new_figure(4.2)
    with mpl.rc_context(STYLE):
        gates_ax, macs_ax = fig.subplots(1, 2)
        channels = [u for u in curves.gates if curves.kind(u) == "channels"]
        cmap = mpl.colormaps["viridis"]
        for i, unit in enumerate(channels):
            gates_ax.plot(curves.steps, curves.gates[unit], lw=1.0, alpha=0.8,
                          color=cmap(0.9 * i / max(len(channels) - 1, 1)))
        for unit in (u for u in curves.gates if curves.kind(u) == "blocks"):
            gates_ax.plot(curves.steps, curves.gates[unit], lw=1.4, ls="--",
                          color=BLOCK if unit in curves.removed else "#8a5a2b")
        highest = max((v for vs in curves.gates.values() for v in vs if v == v), default=1)
        # gates start at 1; one grown a little past it stays in view, a far outlier is named
        top = 1.05 * highest if 1 < highest <= 1.9 else 1.05
        gates_ax.set_ylim(-0.03, top)
        _mark_off_scale(gates_ax, curves, top)
        gates_ax.set(xlabel="step", ylabel="mean gate", title="gates per unit")
        gates_ax.legend(handles=_gate_legend(curves), loc="best", frameon=False, fontsize=9)
        _draw_macs(macs_ax, curves)
        fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    return fig


def _mark_off_scale(ax, curves: GateCurves, top: float) -> None:
    """Name the units whose mean gate leaves the axis (a gate re-grown above 1)."""
    for unit, values in curves.gates.items():
        high = [(s, v) for s, v in zip(curves.steps, values, strict=True) if v > top]
        if high:
            step, _ = high[0]
            peak = max(v for _, v in high)
            ax.annotate(f"{unit} ↑ {peak:.3g}", (step, top), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="#555555")


def _gate_legend(curves: GateCurves) -> list:
    handles = [Line2D([], [], color=mpl.colormaps["viridis"](0.45),
                      label="channel groups (colour: depth)")]
    blocks = {u for u in curves.gates if curves.kind(u) == "blocks"}
    if blocks - curves.removed:
        handles.append(Line2D([], [], color="#8a5a2b", ls="--", label="residual blocks, kept"))
    if blocks & curves.removed:
        handles.append(Line2D([], [], color=BLOCK, ls="--", label="residual blocks, removed"))
    return handles


def _draw_macs(ax, curves: GateCurves) -> None:
    ax.plot(curves.steps, curves.live_macs, color=KEPT, lw=1.6, label="live MACs (gates > 0)")
    if curves.soft_macs:
        ax.plot(curves.steps, curves.soft_macs, color=KEPT, lw=1.2, ls=":",
                label="soft MACs (gates as fractions)")
    ax.plot(curves.steps, curves.target_macs, color=EDGE, lw=1.2, ls="--", label="target")
    if curves.budget_macs:
        ax.axhline(curves.budget_macs, color=BUDGET, lw=1.2, ls=":", label="budget")
    if curves.teacher_macs:
        ax.axhline(curves.teacher_macs, color=GHOST, lw=1.0, ls="-.", label="teacher")
    ax.set_ylim(0, None)
    ax.yaxis.set_major_formatter(MACS)
    ax.set(xlabel="step", ylabel="MACs per sample", title="MACs during the search")
    ax.legend(frameon=False, loc="best", fontsize=9)


# -- 5. training ---------------------------------------------------------------------------

def draw_training_curves(curves: TrainingCurves, title: str = "") -> Figure:
    """Accuracy, losses and learning rate per epoch, side by side."""
    fig = new_figure(3.8)
    marker = "o" if len(curves.epochs) <= 30 else None
    with mpl.rc_context(STYLE):
        acc_ax, loss_ax, lr_ax = fig.subplots(1, 3, width_ratios=[1.2, 1.2, 0.8])
        for key, values in curves.accuracy.items():
            acc_ax.plot(curves.epochs, values, marker=marker, ms=3,
                        label=key.removesuffix("_acc"))
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        for key, values in curves.losses.items():
            loss_ax.plot(curves.epochs, values, marker=marker, ms=3,
                         lw=2.0 if key == "loss" else 1.2,
                         label="total" if key == "loss" else key.removeprefix("loss_"))
        loss_ax.set(xlabel="epoch", title="loss")
        if curves.lr:
            lr_ax.step(curves.epochs, curves.lr, where="mid", color=EDGE)
            if min(curves.lr) > 0 and max(curves.lr) / min(curves.lr) > 20:
                lr_ax.set_yscale("log")
        lr_ax.set(xlabel="epoch", title="learning rate")
        for ax, bins in ((acc_ax, 6), (loss_ax, 6), (lr_ax, 4)):
            ax.xaxis.set_major_locator(MaxNLocator(nbins=bins, integer=True))
        for ax in (acc_ax, loss_ax):
            if ax.lines:
                ax.legend(frameon=False, fontsize=9)
        fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    return fig


def draw_comparison(runs: dict[str, TrainingCurves], title: str = "") -> Figure:
    """Test accuracy per epoch of several training runs (a demo or compare directory)."""
    fig = new_figure(4.2)
    with mpl.rc_context(STYLE):
        ax = fig.add_subplot()
        for name, curves in runs.items():
            values = [v for v in curves.accuracy.get("test_acc", []) if not math.isnan(v)]
            if values:
                ax.plot(curves.epochs, curves.accuracy["test_acc"], lw=1.5,
                        marker="o" if len(values) <= 30 else None, ms=3,
                        label=f"{name} (best {max(values):.1f}%)")
        ax.set(xlabel="epoch", ylabel="test accuracy (%)")
        ax.set_title(title or "test accuracy of each training run", loc="left")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(ax.lines) > 6:
            ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
        elif ax.lines:
            ax.legend(frameon=False, fontsize=9, loc="best")
    return fig
