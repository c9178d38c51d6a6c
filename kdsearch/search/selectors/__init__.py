"""The selector contract and the ``SELECTORS`` registry: what decides which units go.

The gated search (:class:`~kdsearch.search.search.GatedSearch`) runs one loop for every
selector: forward the teacher and the gated copy, the KL between them, backward, a weight
step, then the selector moves the gates. A selector is one class in one file of this package,
registered where it is defined::

    @register_selector("fisher")
    class FisherSelector(Selector):
        @dataclass
        class Options:
            every: int = 5

        def after_step(self, step, gates, live, target): ...

Contract (every hook has a do-nothing default):

* ``Options``: a dataclass of the selector's own settings, typed, with defaults; a preset
  gives them under ``search.options`` and a key the selector does not read is refused.
* :meth:`observe` runs after the forward, before the backward frees the graph (a Fisher
  estimate needs it); :meth:`move_gates` after the backward and the weight step (the gates'
  ``.grad`` holds dKL/dg); :meth:`after_step` with the host copy of the gates, the live MACs
  and the target: it may change the gates and returns the host copy of what they are now.
* :meth:`state_dict` / :meth:`load_state_dict`: everything the next step reads, so that a
  resumed search is the uninterrupted one.
* :meth:`log`: the selector's numbers for the step's line of ``search_log.jsonl``.

While selecting, a gate element at exactly zero is a removed unit; the selector may not
bring it back (the loop holds it at zero). After the selection the loop trains the weights
alone and keeps every gate as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from kdsearch.registry import Registry
from kdsearch.settings import NoOptions, from_mapping

if TYPE_CHECKING:
    from kdsearch.search.search import GatedSearch

SELECTORS: Registry[type[Selector]] = Registry("selector", builtins="kdsearch.search.selectors")


def register_selector(name: str):
    """Class decorator: register a :class:`Selector` subclass as ``name``."""
    return SELECTORS.register_named(name)


def selector_options(name: str, given: dict[str, Any]) -> Any:
    """Selector ``name``'s ``Options`` with ``given`` set, checked (one-line errors)."""
    return from_mapping(SELECTORS.get(name).Options, dict(given), f"selector {name!r}",
                        kind="option")


class Selector:
    """Base class: ``Selector(search, options)``; see the module docstring."""

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions

    def __init__(self, search: GatedSearch, options: Any):
        self.search = search
        self.options = options

    def observe(self, step: int, logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
        """After the forward pass (the autograd graph is alive)."""

    def move_gates(self, step: int) -> None:
        """After the backward pass and the weight step."""

    def after_step(self, step: int, gates: dict[str, torch.Tensor], live: int,
                   target: int) -> dict[str, torch.Tensor]:
        """With the host copy of the gates; returns the host copy after any change."""
        return gates

    def log(self) -> dict[str, float | None]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
