"""Figures of kdsearch runs: ``compute the data`` (:mod:`.data`, :mod:`.trials`; no display
needed) is kept apart from ``draw it`` (:mod:`.draw`, :mod:`.curves`; matplotlib);
:func:`show_run` does both for a run directory and writes its ``index.html``
(:mod:`.index`)."""

from kdsearch.show.data import (
    GateCurves,
    GraphLayout,
    LayerWidth,
    LayoutNode,
    Speed,
    StageMacs,
    TrainingCurves,
    gate_curves,
    graph_layout,
    layer_widths,
    speed,
    stage_macs,
    training_curves,
)
from kdsearch.show.run import show_run
from kdsearch.show.trials import TuneFront, tune_front

__all__ = [
    "GateCurves",
    "GraphLayout",
    "LayerWidth",
    "LayoutNode",
    "Speed",
    "StageMacs",
    "TrainingCurves",
    "TuneFront",
    "gate_curves",
    "graph_layout",
    "layer_widths",
    "show_run",
    "speed",
    "stage_macs",
    "training_curves",
    "tune_front",
]
