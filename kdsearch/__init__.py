"""kdsearch: find a small student network inside a large teacher network and distil it.

The pipeline reads as the user thinks of it: teacher -> :class:`TopologyGraph` -> gates ->
:func:`search_student` -> student (``student.json`` + ``student.pt``) -> distillation.
"""

from kdsearch.errors import KdsearchError
from kdsearch.graph import Constraints, TopologyGraph, register_leaf_module
from kdsearch.graph.counting import count_model
from kdsearch.models import build_model
from kdsearch.search.config import SearchConfig
from kdsearch.search.run import search_student
from kdsearch.student.spec import build_student, load_student

__version__ = "0.1.0"

__all__ = [
    "Constraints",
    "KdsearchError",
    "SearchConfig",
    "TopologyGraph",
    "build_model",
    "build_student",
    "count_model",
    "load_student",
    "register_leaf_module",
    "search_student",
]
