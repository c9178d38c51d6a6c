"""``student.json``: the architecture of a found student, enough to rebuild it.

A spec names the teacher (zoo model, classes, input size), the channels each channel unit
keeps (indices into the teacher's channels) and the residual blocks removed. Rebuilding
traces the teacher again, finds the same units and cuts the same subgraph, so the spec
alone gives the student with fresh weights (for training from scratch) or with weights
inherited from a teacher checkpoint; ``student.pt`` holds the weights the search left.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn

from kdsearch.errors import KdsearchError
from kdsearch.graph.counting import count_macs
from kdsearch.graph.trace import example_input_for, trace_with_shapes
from kdsearch.graph.units import Constraints, Selection, Units, find_units
from kdsearch.io import read_json
from kdsearch.student.extract import extract_student

SPEC_FORMAT = "kdsearch-student/1"
# Structure only: which units *can* be cut. Search-time constraints do not matter here.
STRUCTURAL = Constraints(keep_stem=False, keep_head=False, min_channels=0)


@dataclass
class LoadedStudent:
    model: nn.Module
    num_classes: int
    input_size: tuple[int, int, int]
    spec: dict


def make_spec(teacher: dict, units: Units, selection: Selection, macs: int,
              params: int) -> dict:
    """The JSON-ready spec of ``selection`` (``teacher``: model, num_classes, input_size)."""
    by_id = units.by_id()
    return {
        "format": SPEC_FORMAT,
        "teacher": teacher,
        "channels": {uid: {"label": by_id[uid].label, "size": by_id[uid].size,
                           "kept": list(map(int, kept))}
                     for uid, kept in sorted(selection.kept.items(), key=_unit_order)},
        "removed_blocks": {uid: by_id[uid].label
                           for uid in sorted(selection.removed_blocks, key=_unit_order)},
        "macs": macs,
        "params": params,
    }


def _unit_order(item) -> tuple[str, int]:
    uid = item[0] if isinstance(item, tuple) else item
    prefix = uid.rstrip("0123456789")
    return prefix, int(uid[len(prefix):])


def build_student(spec: dict, teacher: nn.Module | None = None,
                  teacher_weights: str | None = None, fresh: bool = True) -> fx.GraphModule:
    """Rebuild the student of ``spec``.

    ``teacher`` (an architecture matching the spec) is built from the zoo when omitted (or
    from the student.json it names: a student searched inside a searched student).
    ``fresh=True`` re-initialises every layer at its new shape, as the teacher's family
    initialises a fresh model (:func:`~kdsearch.models.registry.initialise_like`: a cut of
    resnet56 starts like a zoo ResNet of its widths and depths); ``fresh=False`` keeps the
    teacher's weights (from ``teacher_weights`` if given) sliced to the kept channels.
    """
    info = _teacher_info(spec)
    if teacher is None and info["model"].endswith(".json"):  # cut from a searched student
        teacher = load_student(info["model"]).model
    if teacher is None:
        from kdsearch.models import build_model

        teacher = build_model(info["model"], num_classes=info["num_classes"],
                              in_channels=info["input_size"][0])
    if teacher_weights:
        from kdsearch.models.checkpoint import load_weights

        load_weights(teacher, teacher_weights)
    gm = trace_with_shapes(teacher, example_input_for(tuple(info["input_size"])))
    units = find_units(gm, count_macs(gm), STRUCTURAL)
    student = extract_student(gm, units, _selection(spec, units))
    if fresh:  # as a zoo model of the student's shapes would be: equal footing with them
        from kdsearch.models.registry import initialisation_of, initialise_like
        from kdsearch.student.resolve import root_model

        initialise_like(student, initialisation_of(root_model(info["model"])))
    return student


def load_student(path: Path | str, weights: str | None = None) -> LoadedStudent:
    """Read ``student.json``; with ``weights`` (a ``student.pt``) load the student's weights."""
    path = Path(path)
    spec = read_json(path)
    try:
        student = build_student(spec, fresh=weights is None)
    except KdsearchError as err:
        raise KdsearchError(f"{path}: {err}") from None
    if weights:
        from kdsearch.models.checkpoint import load_weights

        load_weights(student, weights)
    info = spec["teacher"]
    return LoadedStudent(student, info["num_classes"], tuple(info["input_size"]), spec)


def _teacher_info(spec: dict) -> dict:
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise KdsearchError(f"not a kdsearch student spec (expected format {SPEC_FORMAT!r})")
    info = spec.get("teacher")
    ok = (isinstance(info, dict) and isinstance(info.get("model"), str)
          and isinstance(info.get("num_classes"), int)
          and isinstance(info.get("input_size"), list) and len(info["input_size"]) == 3)
    if not ok:
        raise KdsearchError("spec 'teacher' needs model (str), num_classes (int), "
                            "input_size ([C, H, W])")
    return info


def _selection(spec: dict, units: Units) -> Selection:
    by_id = units.by_id()
    channels, removed = spec.get("channels", {}), spec.get("removed_blocks", {})
    if not isinstance(channels, dict) or not isinstance(removed, dict):
        raise KdsearchError("spec 'channels' and 'removed_blocks' must be objects")
    kept = {}
    for uid, entry in channels.items():
        unit = _searchable_unit(by_id, uid, "channels")
        indices = entry.get("kept") if isinstance(entry, dict) else None
        if (not isinstance(indices, list) or not indices
                or not all(isinstance(i, int) and 0 <= i < unit.size for i in indices)
                or len(set(indices)) != len(indices)):
            raise KdsearchError(f"spec unit {uid}: 'kept' must list distinct channel indices "
                                f"in [0, {unit.size})")
        _same_label(unit, entry.get("label"))
        kept[uid] = sorted(indices)
    for uid, label in removed.items():
        _same_label(_searchable_unit(by_id, uid, "blocks"), label)
    return Selection(kept=kept, removed_blocks=set(removed))


def _same_label(unit, label: str | None) -> None:
    """A spec's unit must be the unit of that id here (its layers may not have moved)."""
    if label is not None and label != unit.label:
        raise KdsearchError(f"spec unit {unit.id} is {label!r} in the spec but {unit.label!r} "
                            "in this teacher (a spec of another teacher, or of another "
                            "kdsearch version's units): search again")


def _searchable_unit(by_id: dict, uid: str, kind: str):
    unit = by_id.get(uid)
    if unit is None or unit.kind != kind:
        raise KdsearchError(f"spec names {kind} unit {uid!r}, which this teacher does not have")
    if not unit.searchable:
        raise KdsearchError(f"spec unit {uid} ({unit.label}) cannot be cut: {unit.reason}")
    return unit


def student_state(student: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in student.state_dict().items()}
