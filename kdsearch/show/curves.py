"""Draw what changes over time and over trials: the search's gates and MACs per step, the
training curves per epoch, and a tune study's trials (accuracy against MACs, the Pareto
front). The network figures are in :mod:`kdsearch.show.draw`, with the shared style."""

from __future__ import annotations

import math

import matplotlib as mpl
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from kdsearch.show.data import GateCurves, TrainingCurves, focus_range
from kdsearch.show.draw import BLOCK, BUDGET, EDGE, GHOST, KEPT, MACS, STYLE, new_figure, si
from kdsearch.show.trials import TuneFront

SAME = 1e-6  # live MACs within this fraction of the teacher's are the teacher's


# -- the search -----------------------------------------------------------------------------

def draw_gate_curves(curves: GateCurves, title: str = "") -> Figure:
    """Left: each unit's mean gate per step, coloured by depth (the colour bar). Right: live
    and target MACs, the budget. The legend is under the panels, outside the data."""
    fig = new_figure(4.8)
    with mpl.rc_context(STYLE):
        gates_ax, macs_ax = fig.subplots(1, 2)
        channels = [u for u in curves.gates if curves.kind(u) == "channels"]
        depth = ScalarMappable(Normalize(0, max(len(channels) - 1, 1)), mpl.colormaps["viridis"])
        for i, unit in enumerate(channels):
            gates_ax.plot(curves.steps, curves.gates[unit], lw=1.0, alpha=0.8,
                          color=depth.to_rgba(i))
        for unit in (u for u in curves.gates if curves.kind(u) == "blocks"):
            gates_ax.plot(curves.steps, curves.gates[unit], lw=1.4, ls="--",
                          color=BLOCK if unit in curves.removed else "#8a5a2b")
        highest = max((v for vs in curves.gates.values() for v in vs if v == v), default=1)
        # gates start at 1; one grown a little past it stays in view, a far outlier is named
        top = 1.05 * highest if 1 < highest <= 1.9 else 1.05
        gates_ax.set_ylim(-0.03, top)
        _mark_off_scale(gates_ax, curves, top)
        gates_ax.set(xlabel="step", ylabel="mean gate", title="gates per unit")
        if channels:
            bar = fig.colorbar(depth, ax=gates_ax, pad=0.01, fraction=0.05, aspect=30)
            bar.set_label("channel group depth (input → output)", fontsize=9)
            bar.set_ticks([0, len(channels) - 1], labels=[channels[0], channels[-1]])
            bar.ax.tick_params(labelsize=8)
        handles = _gate_legend(curves) + _draw_macs(macs_ax, curves)
        for ax in (gates_ax, macs_ax):
            whole_steps(ax, curves.steps)
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4),
                   frameon=False, fontsize=9)
        fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    return fig


def whole_steps(ax, xs: list[int], bins: int = 6) -> None:
    """Integer ticks on an x-axis of steps or epochs; a lone step gets its own tick (the
    locator alone would tick 0.96, 0.98 ... around it)."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=bins, integer=True))
    if len(set(xs)) == 1:
        ax.set_xticks([xs[0]])
        ax.set_xlim(xs[0] - 1, xs[0] + 1)


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
    handles = []
    blocks = {u for u in curves.gates if curves.kind(u) == "blocks"}
    if blocks - curves.removed:
        handles.append(Line2D([], [], color="#8a5a2b", ls="--", label="residual block, kept"))
    if blocks & curves.removed:
        handles.append(Line2D([], [], color=BLOCK, ls="--", label="residual block, removed"))
    return handles


def _draw_macs(ax, curves: GateCurves) -> list:
    """The MACs panel; returns its legend handles. The teacher's line is drawn under the
    live MACs, and a search whose live MACs never left the teacher's says so."""
    if curves.teacher_macs:
        ax.axhline(curves.teacher_macs, color=GHOST, lw=2.4, ls="-", zorder=1,
                   label="teacher's MACs")
    ax.plot(curves.steps, curves.live_macs, color=KEPT, lw=1.6, zorder=3,
            label="live MACs (gates > 0)")
    if curves.soft_macs:
        ax.plot(curves.steps, curves.soft_macs, color=KEPT, lw=1.2, ls=":", zorder=3,
                label="soft MACs (gates as fractions)")
    ax.plot(curves.steps, curves.target_macs, color=EDGE, lw=1.2, ls="--", zorder=2,
            label="target")
    if curves.budget_macs:
        ax.axhline(curves.budget_macs, color=BUDGET, lw=1.2, ls=":", label="budget")
    if stayed_at_teacher(curves):
        ax.text(0.5, 0.5, f"live MACs stayed at the teacher's ({si(curves.teacher_macs)})\n"
                f"for all {len(curves.steps)} logged steps: no gate reached 0",
                transform=ax.transAxes, ha="center", va="center", fontsize=10, color=BUDGET,
                gid="stayed", bbox={"facecolor": "white", "edgecolor": BUDGET, "pad": 4})
    ax.set_ylim(0, 1.08 * max([v for v in [*curves.live_macs, *curves.target_macs,
                                            curves.teacher_macs or 0] if v == v], default=1))
    ax.yaxis.set_major_formatter(MACS)
    ax.set(xlabel="step", ylabel="MACs per sample", title="MACs during the search")
    return ax.get_legend_handles_labels()[0]


def stayed_at_teacher(curves: GateCurves) -> bool:
    """Whether every logged live MAC count is the teacher's (the search removed nothing)."""
    live = [v for v in curves.live_macs if v == v]
    return bool(curves.teacher_macs and live) and all(
        abs(v - curves.teacher_macs) <= SAME * curves.teacher_macs for v in live)


# -- training -------------------------------------------------------------------------------

def draw_training_curves(curves: TrainingCurves, title: str = "") -> Figure:
    """Accuracy, losses and learning rate per epoch, side by side; the accuracy axis is
    zoomed to the later epochs when the early ones would flatten their differences."""
    fig = new_figure(3.8)
    marker = "o" if len(curves.epochs) <= 30 else None
    with mpl.rc_context(STYLE):
        acc_ax, loss_ax, lr_ax = fig.subplots(1, 3, width_ratios=[1.2, 1.2, 0.8])
        for key, values in curves.accuracy.items():
            acc_ax.plot(curves.epochs, values, marker=marker, ms=3,
                        label=key.removesuffix("_acc"))
        acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
        _focus(acc_ax, list(curves.accuracy.values()))
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
            whole_steps(ax, curves.epochs, bins)
        for ax in (acc_ax, loss_ax):
            if ax.lines:
                ax.legend(frameon=False, fontsize=9)
        fig.suptitle(title, x=0.01, ha="left", fontsize=12)
    return fig


def _focus(ax, series: list[list[float]]) -> None:
    """Zoom the y-axis to the later epochs (see :func:`~kdsearch.show.data.focus_range`)."""
    span = focus_range(series)
    if span is not None:
        ax.set_ylim(*span)
        ax.set_ylabel(ax.get_ylabel() + "\nzoomed: early epochs below")


def draw_comparison(runs: dict[str, TrainingCurves], title: str = "",
                    groups: dict[str, str] | None = None) -> Figure:
    """Test accuracy per epoch of several training runs (a demo or compare directory), one
    colour per student (``groups``: legend label -> student), one line style per seed; the
    legend is right of the axes."""
    groups = groups or {name: name for name in runs}
    colours = {g: f"C{i % 10}" for i, g in enumerate(dict.fromkeys(groups.values()))}
    styles = ("-", "--", ":", "-.")
    seen: dict[str, int] = {}
    fig = new_figure(4.4)
    with mpl.rc_context(STYLE):
        ax = fig.add_subplot()
        drawn = []
        for name, curves in runs.items():
            values = [v for v in curves.accuracy.get("test_acc", []) if not math.isnan(v)]
            if not values:
                continue
            group = groups.get(name, name)
            seen[group] = seen.get(group, -1) + 1
            ax.plot(curves.epochs, curves.accuracy["test_acc"], lw=1.5, color=colours[group],
                    ls=styles[seen[group] % len(styles)],
                    marker="o" if len(values) <= 30 else None, ms=3,
                    label=f"{name} (best {max(values):.1f}%)")
            drawn.append(curves.accuracy["test_acc"])
        ax.set(xlabel="epoch", ylabel="test accuracy (%)")
        _focus(ax, drawn)
        ax.set_title(title or "test accuracy per epoch of each training run", loc="left")
        whole_steps(ax, [e for curves in runs.values() for e in curves.epochs])
        if ax.lines:
            ax.legend(frameon=False, fontsize=9 if len(ax.lines) <= 8 else 8,
                      loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


# -- a tune study ---------------------------------------------------------------------------

def draw_tune_front(front: TuneFront, title: str = "") -> Figure:
    """Each finished trial's accuracy against its MACs (or params); the Pareto front (or
    the best trial) highlighted, joined by its staircase, and labelled with trial numbers."""
    fig = new_figure(5.0)
    with mpl.rc_context(STYLE):
        ax = fig.add_subplot()
        others = [t for t in front.finished if t.number not in front.front]
        best = sorted((t for t in front.finished if t.number in front.front),
                      key=lambda t: t.cost)
        ax.scatter([t.cost for t in others], [t.accuracy for t in others], s=28, color=GHOST,
                   edgecolor=EDGE, lw=0.5, zorder=2, label="trial")
        if len(best) > 1:
            ax.step([t.cost for t in best], [t.accuracy for t in best], where="post",
                    color=KEPT, lw=1.2, alpha=0.6, zorder=2)
        ax.scatter([t.cost for t in best], [t.accuracy for t in best], s=70, color=KEPT,
                   edgecolor=EDGE, lw=0.8, zorder=3, label=front.front_name)
        for t in best:
            ax.annotate(t.label, (t.cost, t.accuracy), xytext=(5, 5), textcoords="offset points",
                        fontsize=9, color=KEPT, gid="front-label")
        costs = [t.cost for t in front.finished]
        if costs and min(costs) > 0 and max(costs) / min(costs) > 20:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_formatter(MACS)
        ax.margins(x=0.08, y=0.1)
        ax.set_xlabel(f"{front.cost_name} per sample" if front.cost == "macs"
                      else front.cost_name)
        ax.set_ylabel(f"{front.accuracy} test accuracy (%)")
        ax.set_title(title or front.summary(), loc="left")
        ax.grid(True, alpha=0.3)
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig
