"""Helpers shared by several test modules."""

from __future__ import annotations

import torch
import torch.nn as nn

from kdsearch.graph.counting import count_macs
from kdsearch.graph.trace import example_input_for, trace_with_shapes
from kdsearch.graph.units import Constraints, find_units
from kdsearch.models.resolve import resolve_model
from kdsearch.student.extract import Selection, extract_student

DIGITS = (1, 8, 8)


def searched_digits_student() -> nn.Module:
    """A student cut out of digits_resnet14 as a search would (an fx.GraphModule): every
    third channel of each channel unit and the last residual block removed."""
    teacher = resolve_model("digits_resnet14", 10, DIGITS).model
    gm = trace_with_shapes(teacher, example_input_for(DIGITS))
    units = find_units(gm, count_macs(gm), Constraints(keep_stem=False, min_channels=0))
    kept = {u.id: list(range(0, u.size, 3)) for u in units.channels if u.searchable}
    last_block = [u.id for u in units.blocks if u.searchable][-1]
    return extract_student(gm, units, Selection(kept=kept, removed_blocks={last_block}))


def assert_same_state(a, b, where="state") -> None:
    """Nested dicts/lists of tensors and plain values are equal, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{index}]")
    else:
        assert a == b, where
