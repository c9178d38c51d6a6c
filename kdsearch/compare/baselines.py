"""Control students at a MAC budget: what a searched student has to beat.

Every control is cut from the same teacher, with the same units and constraints as the
search, landed in [97%, 100%] of the budget by the same selection code
(:func:`~kdsearch.search.select.select_to_budget`) and counted by the same MAC counter:

* ``l1``: keep the filters with the largest L1 norm (:mod:`kdsearch.compare.pruning`;
  channels only, a global ranking);
* ``random``: a random subgraph: every searchable unit (channels and residual blocks) gets
  a random score from a seeded generator, and the selection removes the lowest first. Draw
  ``i`` of a comparison uses seed ``i``; this is the control a reviewer asks for first;
* ``uniform``: every searchable channel unit keeps the same fraction of its channels (the
  ones of largest L1 norm), the largest fraction that fits the budget: the practitioner's
  first try, at no cost;
* ``depgraph``: DepGraph group-norm pruning by the Torch-Pruning library
  (``pip install "kdsearch[pruning]"``), see :mod:`kdsearch.compare.depgraph`.

Each writes ``student.json``, ``student.pt`` (the teacher's weights, sliced) and
``summary.json`` into its folder, as ``kdsearch search`` does.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from kdsearch.compare.pruning import l1_channel_scores
from kdsearch.errors import KdsearchError
from kdsearch.graph.counting import count_model
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Constraints, Selection, Units
from kdsearch.io import ensure_out_dir, save_torch, write_json
from kdsearch.registry import Registry
from kdsearch.search.budget import parse_budget
from kdsearch.search.cost import MacModel
from kdsearch.search.select import SelectionReport, select_to_budget, smallest_macs
from kdsearch.student.extract import extract_student
from kdsearch.student.spec import make_spec, student_state

CONTROLS: Registry[Callable[..., tuple[Selection, SelectionReport]]] = Registry(
    "control", builtins="kdsearch.compare.depgraph")  # the others are defined below


def register_control(name: str, unit_kinds: tuple[str, ...], criterion: str):
    """Register ``choose(topology, mac_model, budget, constraints, seed) -> (selection,
    report)`` under ``name``: it may remove ``unit_kinds``; ``criterion`` says how it chooses."""
    return CONTROLS.register(name, unit_kinds=unit_kinds, criterion=criterion)


@register_control("l1", ("channels",), "L1 norm of producing filters, normalised by the "
                                       "unit mean, ranked globally")
def choose_l1(topology: TopologyGraph, mac_model: MacModel, budget: int,
              constraints: Constraints, seed: int) -> tuple[Selection, SelectionReport]:
    scores = l1_channel_scores(topology.gm, topology.units)
    return select_to_budget(topology.units, mac_model, scores, budget, constraints,
                            per_mac=False)


@register_control("random", ("channels", "blocks"), "random scores for every channel and "
                                                    "block, lowest removed first")
def choose_random(topology: TopologyGraph, mac_model: MacModel, budget: int,
                  constraints: Constraints, seed: int) -> tuple[Selection, SelectionReport]:
    generator = torch.Generator().manual_seed(seed)
    scores = {unit.id: torch.rand(unit.size, generator=generator) + 1e-6
              for unit in topology.units.searchable()}  # above 0: all alive, then ranked
    return select_to_budget(topology.units, mac_model, scores, budget, constraints,
                            per_mac=False)


@register_control("uniform", ("channels",), "every channel unit keeps the same fraction "
                                            "(largest L1 norms), the largest that fits")
def choose_uniform(topology: TopologyGraph, mac_model: MacModel, budget: int,
                   constraints: Constraints, seed: int) -> tuple[Selection, SelectionReport]:
    units = topology.units
    sizes = {u.id: u.size for u in units.channels if u.searchable}
    step = max(1, constraints.channel_multiple)

    def kept_at(fraction: float) -> dict[str, int]:
        return {uid: min(size, max(constraints.fewest(size),
                                   step * math.ceil(fraction * size / step)))
                for uid, size in sizes.items()}

    low, high = 0.0, 1.0  # the MACs grow with the fraction: bisect for the largest that fits
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if mac_model.macs(kept_at(middle), set()) <= budget else (
            low, middle)
    kept = kept_at(low)
    order = {uid: torch.argsort(-score, stable=True)
             for uid, score in l1_channel_scores(topology.gm, units).items()}
    selection = Selection(kept={uid: sorted(order[uid][:k].tolist())
                                for uid, k in kept.items() if k < sizes[uid]})
    macs = mac_model.macs(kept, set())
    return selection, SelectionReport(macs=macs, budget=budget, from_gates_macs=macs)


def control_names() -> list[str]:
    return CONTROLS.names()


def control_constraints(name: str, constraints: Constraints) -> Constraints:
    """The constraints control ``name`` is cut under: the search's, on the unit kinds the
    control removes. A control that removes no blocks (l1, uniform, depgraph) is cut
    without the width floor (``min_fraction``): the floor makes a search remove blocks
    rather than thin every layer, a choice such a control does not have; under it,
    channels alone could not reach budgets below about the floor squared of the teacher's
    MACs (a quarter at 0.5)."""
    kinds = CONTROLS.meta(name)["unit_kinds"]
    floor = constraints.min_fraction if "blocks" in kinds else 0.0
    return dataclasses.replace(constraints, min_fraction=floor, unit_kinds=tuple(
        k for k in constraints.unit_kinds if k in kinds))


def control_student(name: str, teacher: nn.Module, teacher_name: str, num_classes: int,
                    input_size: tuple[int, int, int], budget: str, constraints: Constraints,
                    out_dir: str | Path, seed: int = 0) -> dict:
    """Cut control ``name`` from ``teacher`` at ``budget`` (``like:NAME``, ``0.5x``, ``41M``);
    write ``student.json``, ``student.pt`` and ``summary.json`` into ``out_dir``; return the
    summary."""
    choose, meta = CONTROLS.get(name), CONTROLS.meta(name)
    out = ensure_out_dir(out_dir)
    start = time.perf_counter()
    constraints = control_constraints(name, constraints)
    topology = TopologyGraph(teacher.cpu().eval(), input_size, constraints)
    units, mac_model = topology.units, MacModel(topology.units, topology.macs_per_node)
    budget_macs = parse_budget(budget, topology.macs, _macs_of_zoo(num_classes, input_size))
    _check_reachable(name, units, mac_model, constraints, budget_macs, topology.macs)
    selection, report = choose(topology, mac_model, budget_macs, constraints, seed)
    student = extract_student(topology.gm, units, selection).eval()
    counted = count_model(student, input_size)
    if counted.macs != report.macs:
        raise RuntimeError(f"internal error: predicted {report.macs} MACs, counted "
                           f"{counted.macs}")
    info = {"model": teacher_name, "num_classes": num_classes, "input_size": list(input_size)}
    spec = make_spec(info, units, selection, counted.macs, counted.params)
    summary = {
        "control": name, "criterion": meta["criterion"], "seed": seed,
        "teacher": {"macs": topology.macs},
        "student": {"macs": counted.macs, "params": counted.params},
        "budget": budget, "budget_macs": budget_macs,
        "budget_fraction": round(counted.macs / budget_macs, 6),
        "channels_kept": {uid: len(k) for uid, k in selection.kept.items()},
        "blocks_removed": sorted(selection.removed_blocks),
        "constraints": dataclasses.asdict(constraints),
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_json(out / "student.json", spec)
    save_torch(out / "student.pt", student_state(student))
    write_json(out / "summary.json", summary)
    return summary


def _macs_of_zoo(num_classes: int, input_size: tuple[int, int, int]):
    def macs_of_model(model_name: str) -> int:
        from kdsearch.models import build_model

        model = build_model(model_name, num_classes, input_size[0])
        return count_model(model, input_size).macs
    return macs_of_model


def _check_reachable(name: str, units: Units, mac_model: MacModel, constraints: Constraints,
                     budget: int, teacher_macs: int) -> None:
    if not units.searchable():
        raise KdsearchError(f"the {name} control has no unit to remove under these constraints")
    floor = smallest_macs(units, mac_model, constraints)
    if not floor <= budget < teacher_macs:
        raise KdsearchError(f"budget {budget / 1e6:.3f}M MACs is outside what the {name} "
                            f"control reaches ({floor / 1e6:.3f}M to "
                            f"{teacher_macs / 1e6:.3f}M MACs)")


def prune_student(teacher: nn.Module, teacher_name: str, num_classes: int,
                  input_size: tuple[int, int, int], budget: str, constraints: Constraints,
                  out_dir: str | Path) -> dict:
    """The ``l1`` control (filter L1-norm pruning) written into ``out_dir``, as
    :func:`control_student` writes it."""
    return control_student("l1", teacher, teacher_name, num_classes, input_size, budget,
                           constraints, out_dir)
