"""Draw the network figures of :mod:`kdsearch.show.data` with matplotlib: the teacher graph,
widths per layer, MACs per stage (the curves over steps and epochs are in
:mod:`kdsearch.show.curves`).

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg (PNG) and
SVG backends: pyplot and its global state are never touched, so no display is needed.
Figures are 1000 px wide at :data:`DPI` (README-sized); the graph is drawn at
:data:`GRAPH_DPI` and at least :data:`GRAPH_PX` wide, so that its channel counts stay
legible when zoomed.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, PathPatch, Rectangle
from matplotlib.path import Path as MplPath
from matplotlib.ticker import FuncFormatter

from kdsearch.io import atomic_write
from kdsearch.show.data import (
    HEAD,
    ROW_GAP,
    GraphLayout,
    LayerWidth,
    LayoutNode,
    StageMacs,
)

DPI, WIDTH_IN = 100, 10.0
GRAPH_PX, GRAPH_DPI = 1600, 150  # the graph's PNG: the smallest width, the least dpi
KEPT, CUT, TEACHER, EDGE, GHOST = "#2f6db5", "#c9c9c9", "#f4f4f4", "#333333", "#9a9a9a"
BLOCK, BUDGET = "#e07b39", "#c0392b"
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
         "xtick.labelsize": 10, "ytick.labelsize": 10, "svg.fonttype": "none",
         "axes.spines.top": False, "axes.spines.right": False}
BOX_W, BOX_H, MIN_H = 0.56, 0.42, 0.12  # graph boxes, in layout units (columns, rows)
SLIVER = 0.045  # the least height of a box's kept part: 1 of 64 channels stays visible
NEARLY_REMOVED = 0.1  # a layer keeping less than this fraction is outlined in red
COUNT_PT, LEAST_COUNT_PT = 6.5, 4.5  # font size of the channel counts on the graph


def si(value: float) -> str:
    """``646208`` -> ``646K``, ``1648256`` -> ``1.65M``."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def percent(share: float) -> str:
    """A fraction as a percentage that never rounds a kept part to nothing: ``0.002`` ->
    ``0.2 %``, ``0.0004`` -> ``<0.1 %``, ``0.32`` -> ``32 %``, ``0.9996`` -> ``>99.9 %``."""
    if share <= 0 or share >= 1:
        return f"{share:.0%}".replace("%", " %")
    if share < 0.001:
        return "<0.1 %"
    if share > 0.999:
        return ">99.9 %"
    return f"{100 * share:.1f} %" if share < 0.1 or share > 0.99 else f"{100 * share:.0f} %"


MACS = FuncFormatter(lambda value, _: si(value))


def new_figure(height: float, width: float = WIDTH_IN) -> Figure:
    with mpl.rc_context(STYLE):
        return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, stem: Path, min_px: int = 0, dpi: float = DPI) -> list[Path]:
    """Write ``stem.png`` (at ``dpi``, and at least ``min_px`` wide) and ``stem.svg``;
    return both paths."""
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    dpi = max(dpi, min_px / fig.get_figwidth())
    with mpl.rc_context(STYLE):
        atomic_write(png, lambda f: fig.savefig(f, format="png", dpi=dpi, facecolor="white"))
        atomic_write(svg, lambda f: fig.savefig(f, format="svg", facecolor="white",
                                                metadata={"Date": None}))
    return [png, svg]


# -- 1. the teacher graph ------------------------------------------------------------------

def count_text(node: LayoutNode) -> str:
    """The channel count written on a layer's box: teacher -> student (``64→23``)."""
    return f"{node.width}→{node.kept}"


def draw_graph(layout: GraphLayout, title: str = "") -> Figure:
    """One row per stage, layers left to right; box height ∝ channels, blue = kept, the
    channel counts (teacher→student) under each box."""
    layers = [n for n in layout.nodes if n.kind in ("conv", "linear") and not n.removed]
    columns = max((n.x for n in layout.nodes), default=0) + 1
    width, count_pt = _graph_width(columns, layers, title)
    margin = 0.9 + 43 * (columns + 1.5) / (0.95 * 72 * width)  # room for "16×16"
    fig = new_figure(1.0 + 1.6 * len(layout.rows), width=width)
    with mpl.rc_context(STYLE):
        ax = fig.add_subplot()
        tallest = max((n.width for n in layout.nodes if n.kind == "conv"), default=1)
        by_name = {n.name: n for n in layout.nodes}
        for source, target in layout.edges:
            _draw_edge(ax, by_name[source], by_name[target])
        for node in layout.nodes:
            _draw_node(ax, node, tallest, count_pt)
        _label_graph(ax, layout, 0.95 * DPI * width / (columns + margin), bool(count_pt))
        ax.set_xlim(-margin, columns - 0.3)
        top = max((n.y for n in layout.nodes), default=0) + BOX_H / 2 + 0.2
        ax.set_ylim(-ROW_GAP * (len(layout.rows) - 1) - 0.7, max(top, 0.4))
        ax.axis("off")
        ax.set_title(title, loc="left")
        handles = _graph_legend(layout)
        counts = " · numbers: teacher→student channels" if count_pt else ""
        fig.legend(handles=handles, loc="outside lower center", frameon=False,
                   ncol=len(handles) if width >= 8 else 3, title_fontsize=9,
                   title=f"rows: stages (output resolution) · box height ∝ channels{counts}")
    return fig


def _graph_width(columns: float, layers: list[LayoutNode], title: str) -> tuple[float, float]:
    """The figure's width (in) and the font size of the channel counts (0: no room): wide
    enough for the counts side by side (up to 30 in), the title, and boxes not squeezed."""
    longest = max((len(count_text(n)) for n in layers), default=0)
    column_pt = 0.62 * COUNT_PT * longest + 5  # a count and a gap
    counts = (columns + 0.9 + 43 / column_pt) * column_pt / (0.95 * 72)
    title_width = 0.4 + 0.075 * max(map(len, title.splitlines()), default=0)
    width = max(6.0, title_width, min(16.0, 1.6 + 0.6 * columns), min(30.0, counts))
    room = 0.95 * 72 * width / (columns + 0.9 + 43 * (columns + 1.5) / (0.95 * 72 * width))
    size = min(COUNT_PT, (room - 3) / (0.62 * max(longest, 1)))
    return width, (size if size >= LEAST_COUNT_PT else 0.0)


def _draw_node(ax, node: LayoutNode, tallest: int, count_pt: float) -> None:
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
    nearly = node.kept_fraction < NEARLY_REMOVED
    kept = height * node.kept_fraction
    kept = min(height, max(kept, SLIVER)) if node.kept else 0.0
    ax.add_patch(Rectangle((left, bottom + kept), BOX_W, height - kept, facecolor=CUT,
                           lw=0, zorder=3))
    ax.add_patch(Rectangle((left, bottom), BOX_W, kept, facecolor=KEPT, lw=0, zorder=3,
                           gid="kept"))
    ax.add_patch(Rectangle((left, bottom), BOX_W, height, facecolor="none",
                           edgecolor=BUDGET if nearly else EDGE, lw=1.4 if nearly else 0.8,
                           zorder=4))
    if count_pt:
        raised = node.y > -ROW_GAP * node.row  # a side branch: its count goes to its right
        x, y = (node.x + BOX_W / 2 + 0.04, node.y) if raised else \
            (node.x, node.y - BOX_H / 2 - 0.04)
        ax.text(x, y, count_text(node), ha="left" if raised else "center",
                va="center" if raised else "top", fontsize=count_pt,
                color=BUDGET if nearly else "#222222", fontweight="bold" if nearly else "normal",
                zorder=5, gid="count")


def _draw_edge(ax, source: LayoutNode, target: LayoutNode) -> None:
    style = {"color": GHOST if target.removed or source.removed else "#777777", "lw": 0.9,
             "zorder": 1}
    if source.row != target.row:  # down to the next row: along the gap, then in from the left
        y_gap = -ROW_GAP * source.row - ROW_GAP / 2.3
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


def _label_graph(ax, layout: GraphLayout, column_px: float, counts: bool) -> None:
    """Stage names left of the rows, module names under their nodes (below the counts)."""
    texts, prefixes = _group_texts(layout, column_px)
    below = BOX_H / 2 + (0.2 if counts else 0.08)
    for row, stage in enumerate(layout.rows):
        ax.text(-0.7, -ROW_GAP * row, stage, ha="right", va="center", fontsize=11,
                fontweight="bold")
        if prefixes.get(row):
            ax.text(-0.7, -ROW_GAP * row - below, f"{prefixes[row]}.", ha="right",
                    va="top", fontsize=8, color="#444444")
    for group, text in zip(layout.groups, texts, strict=True):
        ax.text((group.x0 + group.x1) / 2, -ROW_GAP * group.row - below, text,
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
    if any(n.kind in ("conv", "linear") and not n.removed and n.kept_fraction < NEARLY_REMOVED
           for n in layout.nodes):
        handles.append(Patch(facecolor=KEPT, edgecolor=BUDGET, lw=1.4,
                             label=f"under {NEARLY_REMOVED:.0%} kept"))
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
    """Kept output channels per layer (filled) inside the teacher's width (outline), each
    layer named by its module path under the axis."""
    names = _NameTicks(len(widths))
    longest = max((len(widths[i].name) for i in names.ticks), default=0)
    fig = new_figure(3.6 + 0.6 * names.size * longest / 72, width=names.width)
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
        ax.set_xticks(names.ticks, [widths[i].name for i in names.ticks], rotation=90,
                      fontsize=names.size)
        every = f", one in {names.step} named" if names.step > 1 else ""
        ax.set_xlabel(f"conv / linear layer (module path{every})")
        ax.set_xlim(-0.7, len(widths) - 0.3)
        ax.set_ylabel("output channels")
        ax.set_title(title, loc="left", pad=20)
        ax.legend(loc="upper left", frameon=False)
    return fig


class _NameTicks:
    """Which layers the x-axis names, at what font size, on how wide a figure: every layer
    while the names fit at 5.5 pt or more on a figure up to 20 in wide; else every step-th."""

    def __init__(self, count: int):
        self.width = min(20.0, max(WIDTH_IN, 1.0 + 0.13 * count))
        room = 0.9 * 72 * self.width / max(count, 1)  # points per layer along the axis
        self.size = min(8.0, room / 1.3)
        self.step = 1
        if self.size < 5.5:
            self.size, self.step = 5.5, math.ceil(5.5 * 1.3 / room)
        self.ticks = list(range(0, count, self.step))


def _stage_marks(ax, stages: list[str]) -> None:
    """Dotted lines between stages and the stage names along the top."""
    starts = [i for i, s in enumerate(stages) if i == 0 or s != stages[i - 1]]
    for start, end in zip(starts, [*starts[1:], len(stages)], strict=True):
        if start:
            ax.axvline(start - 0.5, color=GHOST, ls=":", lw=1)
        ax.text((start + end - 1) / 2, 1.0, stages[start], transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9, color="#555555")


# -- 3. MACs per stage ---------------------------------------------------------------------

HEAD_APART = 0.05  # a head under this fraction of the largest stage gets its own panel


def draw_stage_macs(stages: list[StageMacs], title: str = "") -> Figure:
    """Teacher and student MACs per resolution level, the student's share written on top;
    a head too small to see beside the stages is drawn in its own panel, on its own scale."""
    largest = max((s.teacher for s in stages), default=1)
    apart = [s for s in stages if s.stage == HEAD and s.teacher < HEAD_APART * largest]
    body = [s for s in stages if s not in apart]
    fig = new_figure(4.2)
    with mpl.rc_context(STYLE):
        if apart and body:
            ax, head_ax = fig.subplots(1, 2, width_ratios=[len(body), 0.9])
            _stage_bars(head_ax, apart)
            head_ax.set_title("head (own scale)", fontsize=10)
            axes = (ax, head_ax)
        else:
            ax = fig.add_subplot()
            body, axes = stages, (ax,)
        _stage_bars(ax, body)
        ax.set_xlabel("stage (output resolution)")
        ax.set_ylabel("MACs per sample")
        ax.set_title(title, loc="left")
        ax.legend(handles=axes[0].containers[:2], frameon=False, loc="best")
    return fig


def _stage_bars(ax, stages: list[StageMacs]) -> None:
    xs = range(len(stages))
    ax.bar([x - 0.2 for x in xs], [s.teacher for s in stages], width=0.4,
           facecolor=TEACHER, edgecolor=EDGE, lw=0.8, label="teacher")
    ax.bar([x + 0.2 for x in xs], [s.student for s in stages], width=0.4, color=KEPT,
           label="student")
    for x, stage in zip(xs, stages, strict=True):
        share = stage.student / stage.teacher if stage.teacher else 0
        ax.text(x + 0.2, stage.student, f"{si(stage.student)}\n{percent(share)}", ha="center",
                va="bottom", fontsize=9, gid="share")
        ax.text(x - 0.2, stage.teacher, si(stage.teacher), ha="center", va="bottom",
                fontsize=9, color="#555555")
    ax.set_xticks(list(xs), [s.stage if s.stage != HEAD else "head\n(linear)" for s in stages])
    ax.set_xlim(-0.6, len(stages) - 0.4)
    ax.set_ylim(0, 1.2 * max((s.teacher for s in stages), default=1))
    ax.yaxis.set_major_formatter(MACS)
