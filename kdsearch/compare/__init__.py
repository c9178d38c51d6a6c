"""Searched students against hand-designed ones (and an L1 pruning baseline) at equal MACs.

>>> from kdsearch.compare import Comparison, run_comparison
>>> rows = run_comparison(Comparison(  # doctest: +SKIP
...     teacher="resnet56", teacher_weights="teacher.pt", dataset="cifar100",
...     against=("resnet20",), seeds=3, pruning_baseline=True), "runs/compare")
"""

from kdsearch.compare.baselines import control_student, prune_student
from kdsearch.compare.plots import ParetoData, draw_pareto, pareto_data
from kdsearch.compare.pruning import PruneResult, l1_channel_scores, magnitude_prune
from kdsearch.compare.report import csv_text, markdown_report
from kdsearch.compare.run import Comparison, run_comparison
from kdsearch.compare.stats import COLUMNS, Difference, Spread, comparison_row, spread, welch

__all__ = [
    "COLUMNS",
    "Comparison",
    "Difference",
    "ParetoData",
    "PruneResult",
    "Spread",
    "comparison_row",
    "control_student",
    "csv_text",
    "draw_pareto",
    "l1_channel_scores",
    "magnitude_prune",
    "markdown_report",
    "pareto_data",
    "prune_student",
    "run_comparison",
    "spread",
    "welch",
]
