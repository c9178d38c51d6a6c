"""Residual branches whose removal leaves an identity path (``x + f(x)`` -> ``x``).

A residual add ``y = s + b`` qualifies when the branch ``b`` is computed from ``s`` alone:
every node on the branch reads only ``s``, other branch nodes or constants, and is used
only inside the branch (an unread item of a tuple result, such as the attention weights of
``nn.MultiheadAttention``, is no use). Removing the branch then turns the whole block into
``y = s``.
Projection shortcuts (``proj(s) + f(s)``) do not qualify: their removal would not leave an
identity.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx

from kdsearch.graph.trace import output_shape

ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
ADD_METHODS = {"add", "add_"}


@dataclass(frozen=True)
class ResidualBranch:
    add: str  # the add node
    skip: str  # the node the identity path comes from
    output: str  # the branch's last node (the add's other operand)
    nodes: tuple[str, ...]  # every node of the branch, in graph order


def find_residual_branches(gm: fx.GraphModule) -> list[ResidualBranch]:
    branches = []
    for node in gm.graph.nodes:
        if _is_tensor_add(node):
            branch = _branch_of(node)
            if branch is not None:
                branches.append(branch)
    return branches


def _is_tensor_add(node: fx.Node) -> bool:
    is_add = (node.op == "call_function" and node.target in ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in ADD_METHODS)
    if not is_add or len(node.args) < 2 or "alpha" in node.kwargs:
        return False
    a, b = node.args[:2]
    return (isinstance(a, fx.Node) and isinstance(b, fx.Node)
            and output_shape(a) is not None and output_shape(a) == output_shape(b)
            == output_shape(node))


def _branch_of(add: fx.Node) -> ResidualBranch | None:
    a, b = add.args[:2]
    for skip, out in ((a, b), (b, a)):
        nodes = _nodes_between(skip, out)
        if nodes is not None:
            return ResidualBranch(add.name, skip.name, out.name, tuple(n.name for n in nodes))
    return None


def _nodes_between(skip: fx.Node, out: fx.Node) -> list[fx.Node] | None:
    """The branch computing ``out`` from ``skip`` alone, or None if it reads anything else."""
    branch: dict[fx.Node, None] = {}
    stack = [out]
    while stack:
        node = stack.pop()
        if node is skip or node in branch:
            continue
        if node.op in ("placeholder", "output"):
            return None
        branch[node] = None
        stack.extend(n for n in node.all_input_nodes if n.op != "get_attr")
    if not branch or not _reads_skip(branch, skip):
        return None
    if len(out.users) != 1:
        return None
    if any(node is not out and not live_users(node) <= branch.keys() for node in branch):
        return None
    order = {n: i for i, n in enumerate(out.graph.nodes)}
    return sorted(branch, key=order.__getitem__)


def live_users(node: fx.Node) -> set[fx.Node]:
    """The users of ``node`` that matter: an item of its result that nothing reads (the
    ``_`` of ``x, _ = self.self_attention(x, x, x)``) does not keep it out of a branch."""
    return {user for user in node.users if user.users or not _is_getitem(user)}


def _is_getitem(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target is operator.getitem


def _reads_skip(branch: dict[fx.Node, None], skip: fx.Node) -> bool:
    return any(skip in node.all_input_nodes for node in branch)
