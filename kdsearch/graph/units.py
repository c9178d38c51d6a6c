"""Searchable units of a teacher: channel groups and residual branches, with constraints."""

from __future__ import annotations

import fnmatch
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import takewhile
from typing import Any

import torch.fx as fx

from kdsearch.errors import KdsearchError
from kdsearch.graph.blocks import ResidualBranch, find_residual_branches
from kdsearch.graph.channels import ChannelRecords, Layout, analyse_channels
from kdsearch.steps import setting_changes

UNIT_KINDS = ("channels", "blocks")


@dataclass
class Selection:
    """A student as a choice of the teacher's units: kept channel indices per channel unit
    (units not named keep all) and removed blocks."""

    kept: dict[str, list[int]] = field(default_factory=dict)
    removed_blocks: set[str] = field(default_factory=set)


@dataclass
class Constraints:
    """What the user allows the search to remove.

    ``keep`` holds fnmatch patterns on module paths (``layer1.*``, ``conv1``): a channel
    group produced there, or a residual block inside, is kept whole. ``min_channels`` is
    the fewest channels a group may keep, ``min_fraction`` the smallest fraction of its
    width (a width floor: 0.5 keeps at least half of every group, like Torch-Pruning's
    ``max_pruning_ratio`` of 0.5); ``channel_multiple`` rounds kept channels to a multiple
    (for speed on accelerators; a group smaller than the multiple keeps all).
    """

    unit_kinds: tuple[str, ...] = UNIT_KINDS
    keep_stem: bool = True
    keep_head: bool = False
    keep: tuple[str, ...] = ()
    min_channels: int = 1
    min_fraction: float = 0.0
    channel_multiple: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_fraction <= 1.0:
            raise KdsearchError(f"min_fraction is a fraction of a group's channels, from 0 to "
                                f"1, not {self.min_fraction}")

    def fewest(self, size: int) -> int:
        """The fewest channels a group of ``size`` channels may keep (at least 1)."""
        return min(size, max(1, self.min_channels, math.ceil(self.min_fraction * size)))

    def changes(self, saved: Mapping[str, Any] | None) -> list[str]:
        """``"constraints.NAME: saved -> now"`` for each constraint that differs from
        ``saved`` (the ``asdict`` a summary recorded); a constraint newer than the summary
        counts at its default, which is how that summary was made. None (a summary that
        recorded none): no check."""
        if saved is None:
            return []
        recorded = {**asdict(Constraints()), **saved}
        return [f"constraints.{change}" for change in setting_changes(recorded, asdict(self))]


@dataclass
class ChannelUnit:
    id: str
    label: str  # module path of the first layer producing these channels
    size: int
    spaces: list[int]
    producers: list[str]
    consumers: list[str]
    members: list[str]
    macs: int = 0  # MACs of every layer these channels touch, at full width
    searchable: bool = True
    reason: str = ""
    kind: str = "channels"


@dataclass
class BlockUnit:
    id: str
    label: str  # module path of the block
    branch: ResidualBranch
    macs: int = 0  # MACs of the branch
    searchable: bool = True
    reason: str = ""
    kind: str = "blocks"
    size: int = 1


@dataclass
class Units:
    channels: list[ChannelUnit] = field(default_factory=list)
    blocks: list[BlockUnit] = field(default_factory=list)
    records: ChannelRecords | None = None

    def searchable(self) -> list[ChannelUnit | BlockUnit]:
        return [u for u in [*self.channels, *self.blocks] if u.searchable]

    def by_id(self) -> dict[str, ChannelUnit | BlockUnit]:
        return {u.id: u for u in [*self.channels, *self.blocks]}

    def unit_of_space(self) -> dict[int, ChannelUnit]:
        return {space: unit for unit in self.channels for space in unit.spaces}


def find_units(gm: fx.GraphModule, macs: dict[str, int],
               constraints: Constraints | None = None) -> Units:
    """Analyse a shape-propagated GraphModule into units, applying ``constraints``."""
    constraints = constraints or Constraints()
    records = analyse_channels(gm)
    units = Units(_channel_units(gm, records, macs), _block_units(gm, macs), records)
    _apply_constraints(gm, units, constraints)
    return units


def _channel_units(gm: fx.GraphModule, records: ChannelRecords,
                   macs: dict[str, int]) -> list[ChannelUnit]:
    groups: dict[int, list[int]] = {}
    for space in range(len(records.sizes)):
        groups.setdefault(records.root(space), []).append(space)
    touching = _nodes_touching_spaces(records)
    units = []
    for root, spaces in groups.items():
        producers = [n for n, s in records.producers.items() if records.root(s) == root]
        if not producers:
            continue  # the network input, or channels nothing produces
        nodes = touching.get(root, {})
        consumers = [n for n, role in nodes.items() if role == "consumer"]
        members = [n for n, role in nodes.items() if role == "member"]
        unit = ChannelUnit(
            id=f"ch{len(units)}", label=_module_path(gm, producers[0]),
            size=records.sizes[root], spaces=spaces, producers=producers,
            consumers=consumers, members=members,
            macs=sum(macs.get(n, 0) for n in {*producers, *consumers, *members}),
        )
        if records.is_fixed(root):
            unit.searchable, unit.reason = False, records.fixed[records.root(root)]
        units.append(unit)
    return units


def _nodes_touching_spaces(records: ChannelRecords) -> dict[int, dict[str, str]]:
    touching: dict[int, dict[str, str]] = {}

    def add(layout: Layout, node: str, role: str) -> None:
        for space in layout.spaces():
            touching.setdefault(records.root(space), {}).setdefault(node, role)

    for node, layout in records.consumers.items():
        add(layout, node, "consumer")
    for node, layout in records.members.items():
        add(layout, node, "member")
    for node, (_, layout) in records.param_members.items():
        add(layout, node, "member")
    return touching


def _block_units(gm: fx.GraphModule, macs: dict[str, int]) -> list[BlockUnit]:
    units = []
    for branch in find_residual_branches(gm):
        cost = sum(macs.get(n, 0) for n in branch.nodes)
        if cost == 0:
            continue  # removing a branch without layers saves nothing
        units.append(BlockUnit(f"blk{len(units)}", _block_path(gm, branch), branch, cost))
    labels = Counter(unit.label for unit in units)
    for unit in units:  # e.g. a transformer layer's attention and MLP branches
        if labels[unit.label] > 1:
            unit.label += f" ({', '.join(_branch_parts(gm, unit.branch, unit.label))})"
    return units


def _branch_parts(gm: fx.GraphModule, branch: ResidualBranch, path: str) -> list[str]:
    """The modules directly under ``path`` that the branch's layers belong to, in order."""
    parts = [_module_path(gm, n).removeprefix(path + ".").split(".")[0] for n in branch.nodes
             if _module_path(gm, n).startswith(path + ".")]
    return list(dict.fromkeys(parts)) or [branch.output]


def _apply_constraints(gm: fx.GraphModule, units: Units, constraints: Constraints) -> None:
    dense = [n.name for n in gm.graph.nodes if n.name in (units.records.producers or {})]
    for unit in units.channels:
        reason = _channel_keep_reason(gm, unit, constraints, dense)
        if reason and unit.searchable:
            unit.searchable, unit.reason = False, reason
        elif unit.searchable and unit.size <= max(
                constraints.min_channels, math.ceil(constraints.min_fraction * unit.size)):
            unit.searchable, unit.reason = False, f"only {unit.size} channels"
    for unit in units.blocks:
        if "blocks" not in constraints.unit_kinds:
            unit.searchable, unit.reason = False, "block search disabled"
        elif _matches(unit.label, constraints.keep):
            unit.searchable, unit.reason = False, "kept by constraint"


def _channel_keep_reason(gm, unit: ChannelUnit, constraints: Constraints,
                         dense: list[str]) -> str:
    if "channels" not in constraints.unit_kinds:
        return "channel search disabled"
    if constraints.keep_stem and dense and dense[0] in unit.producers:
        return "stem kept by constraint"
    if constraints.keep_head and dense and dense[-1] in unit.consumers:
        return "head input kept by constraint"
    if any(_matches(_module_path(gm, p), constraints.keep) for p in unit.producers):
        return "kept by constraint"
    return ""


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def _module_path(gm: fx.GraphModule, node_name: str) -> str:
    node = next(n for n in gm.graph.nodes if n.name == node_name)
    return node.target if node.op == "call_module" else node.name


def _block_path(gm: fx.GraphModule, branch: ResidualBranch) -> str:
    """The longest module path shared by the branch's layers (e.g. ``layer1.0``)."""
    paths = [_module_path(gm, n).split(".") for n in branch.nodes]
    paths = [p for p in paths if len(p) > 1] or paths
    shared = takewhile(lambda parts: len(set(parts)) == 1, zip(*paths, strict=False))
    common = [parts[0] for parts in shared]
    return ".".join(common) or branch.add
