"""The teacher's topology: a traced graph with shapes, MACs and searchable units."""

from kdsearch.graph.channels import register_passthrough_module
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.trace import TraceFailure, register_leaf_module
from kdsearch.graph.units import Constraints

__all__ = [
    "Constraints",
    "TopologyGraph",
    "TraceFailure",
    "register_leaf_module",
    "register_passthrough_module",
]
