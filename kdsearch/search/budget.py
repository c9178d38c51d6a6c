"""Parse a MAC budget: ``41M``, ``1.2G``, ``40800000``, ``0.33x`` or ``like:resnet20``."""

from __future__ import annotations

import re
from collections.abc import Callable

from kdsearch.errors import KdsearchError

SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}
_NUMBER = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([KMG]?)$", re.IGNORECASE)


def parse_budget(spec: str, teacher_macs: int, macs_of_model: Callable[[str], int]) -> int:
    """The budget in MACs per sample.

    ``macs_of_model(name)`` counts a zoo model at the teacher's input size and classes
    (used by ``like:NAME``). The budget must lie strictly below the teacher's MACs.
    """
    text = spec.strip()
    if text.lower().startswith("like:"):
        budget = macs_of_model(text[5:].strip())
    elif text.lower().endswith("x"):
        budget = round(_positive_number(text[:-1], spec) * teacher_macs)
    else:
        match = _NUMBER.match(text)
        if not match:
            raise KdsearchError(
                f"budget {spec!r} is not understood; use e.g. 41M, 1.2G, 40800000, 0.33x "
                "or like:resnet20")
        budget = round(float(match.group(1)) * SUFFIXES[match.group(2).upper()])
    if budget <= 0:
        raise KdsearchError(f"budget {spec!r} must be positive")
    if budget >= teacher_macs:
        raise KdsearchError(
            f"budget {spec!r} ({budget / 1e6:.2f}M MACs) is not below the teacher's "
            f"{teacher_macs / 1e6:.2f}M MACs")
    return budget


def _positive_number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise KdsearchError(f"budget {spec!r}: the fraction must be a positive number")
    return value
