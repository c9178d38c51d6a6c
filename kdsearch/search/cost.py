"""MACs of a candidate student, computed from kept-channel counts without building it.

A layer's MACs scale with the fraction of its input channels kept (if it consumes a
searchable group), the fraction of its output channels kept (if it produces one), and drop
to zero inside a removed residual branch. A depthwise conv or another channel-wise layer
scales with the fraction of its channels kept. This is exact for conv and linear layers,
which is what :mod:`kdsearch.graph.counting` counts on the extracted student; a test checks the
two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdsearch.graph.channels import Layout
from kdsearch.graph.units import Units


@dataclass(frozen=True)
class _LayerTerm:
    node: str
    macs: int
    in_layout: Layout | None  # consumed (dense) or sliced (channel-wise) channels
    out_space: int | None  # produced channels
    blocks: tuple[str, ...]  # residual branches containing this layer


class MacModel:
    """``macs(kept, removed_blocks)`` for kept-channel counts per channel unit."""

    def __init__(self, units: Units, macs_per_node: dict[str, int]):
        records = units.records
        self.unit_of_space = {s: u.id for s, u in units.unit_of_space().items()}
        self.sizes = {u.id: u.size for u in units.channels}
        self.searchable = {u.id for u in units.searchable()}
        blocks_of: dict[str, list[str]] = {}
        for block in units.blocks:
            for node in block.branch.nodes:
                blocks_of.setdefault(node, []).append(block.id)
        self.terms = [
            _LayerTerm(node, macs,
                       records.consumers.get(node) or records.members.get(node),
                       records.producers.get(node), tuple(blocks_of.get(node, ())))
            for node, macs in macs_per_node.items()
        ]
        self.terms_of_unit = self._index_terms()
        self.full = sum(term.macs for term in self.terms)

    def _index_terms(self) -> dict[str, list[_LayerTerm]]:
        index: dict[str, list[_LayerTerm]] = {}
        for term in self.terms:
            touched = set(term.blocks)
            if term.in_layout is not None:
                touched.update(self.unit_of_space[s] for s in term.in_layout.spaces()
                               if s in self.unit_of_space)
            if term.out_space is not None:
                touched.add(self.unit_of_space[term.out_space])
            for unit in touched:
                index.setdefault(unit, []).append(term)
        return index

    def kept_fraction(self, layout: Layout, kept: dict[str, int]) -> float:
        total = kept_total = 0
        for space, length in layout.segments:
            unit = self.unit_of_space.get(space)
            total += length
            kept_total += kept.get(unit, length) if unit in self.searchable else length
        return kept_total / total

    def term_macs(self, term: _LayerTerm, kept: dict[str, float], removed: set[str],
                  block_scale: dict[str, float] | None = None) -> float:
        if removed and any(b in removed for b in term.blocks):
            return 0.0
        macs = float(term.macs)
        for block in term.blocks if block_scale else ():
            macs *= block_scale.get(block, 1.0)
        if term.in_layout is not None:
            macs *= self.kept_fraction(term.in_layout, kept)
        if term.out_space is not None:
            unit = self.unit_of_space[term.out_space]
            if unit in self.searchable:
                macs *= kept.get(unit, self.sizes[unit]) / self.sizes[unit]
        return macs

    def macs(self, kept: dict[str, float], removed: set[str] = frozenset(),
             block_scale: dict[str, float] | None = None) -> int:
        """Total MACs with ``kept[unit]`` channels per channel unit and ``removed`` blocks.

        Fractional counts and ``block_scale`` (a factor per block) give a smooth estimate
        (the search's soft MACs); whole counts give the exact MACs of a student.
        """
        return round(sum(self.term_macs(t, kept, removed, block_scale) for t in self.terms))

    def unit_macs(self, unit: str, kept: dict[str, int], removed: set[str]) -> float:
        """MACs of the layers ``unit`` touches, in the given configuration."""
        return sum(self.term_macs(t, kept, removed) for t in self.terms_of_unit.get(unit, ()))
