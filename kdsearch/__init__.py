"""kdsearch: find a small student network inside a large teacher network and distil it.

The pipeline reads as the user thinks of it: teacher -> :class:`TopologyGraph` -> gates ->
:func:`search_student` -> student (``student.json`` + ``student.pt``) -> distillation.
Public names are imported on first use, so ``import kdsearch`` (and ``kdsearch --help``)
stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Constraints": "kdsearch.graph",
    "KdsearchError": "kdsearch.errors",
    "SearchConfig": "kdsearch.search.config",
    "TopologyGraph": "kdsearch.graph",
    "build_model": "kdsearch.models",
    "build_student": "kdsearch.student.spec",
    "count_model": "kdsearch.graph.counting",
    "evaluate": "kdsearch.evaluation",
    "load_preset": "kdsearch.presets",
    "load_student": "kdsearch.student.spec",
    "register_leaf_module": "kdsearch.graph",
    "search_student": "kdsearch.student.run",
    "set_threads": "kdsearch.numerics",
    "train_student": "kdsearch.distill",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kdsearch' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})

