"""Resumable steps: a folder whose ``summary.json`` marks it finished, and one policy for the
settings a finished step may be reused with.

Every orchestrator (``kdsearch run``'s pipeline, ``kdsearch compare``, stages files and the
DGKD chain) runs its steps through :func:`run_step`: a step whose ``summary.json`` exists is
skipped after its recorded settings are checked against the ones asked for now, and any
difference outside what the step's config dataclass lists in ``RESUMABLE`` (settings that do
not change the result: the device, how often to checkpoint) is an error naming the setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from kdsearch.errors import KdsearchError
from kdsearch.io import ensure_out_dir, read_json

SUMMARY = "summary.json"


def setting_changes(saved: Mapping[str, Any], now: Mapping[str, Any],
                    may_change: Collection[str] = ()) -> list[str]:
    """``"name: saved -> now"`` for each setting of ``now`` that differs from ``saved``
    (lists and tuples compare equal, as JSON keeps no tuples), except ``may_change``."""
    changes = []
    for name, value in now.items():
        before = saved.get(name)
        if isinstance(value, tuple) and isinstance(before, list):
            before = tuple(before)
        if name not in may_change and before != value:
            changes.append(f"{name}: {before!r} -> {value!r}")
    return changes


def config_changes(saved: Mapping[str, Any], config: Any) -> list[str]:
    """:func:`setting_changes` of a config dataclass against its recorded ``asdict``; the
    dataclass names what may change in its ``RESUMABLE`` class attribute. A setting newer
    than the record counts at its default (the record was made before it existed)."""
    now = config.as_dict() if hasattr(config, "as_dict") else dataclasses.asdict(config)
    defaults = {f.name: _default(f) for f in dataclasses.fields(config)}
    saved = {**{name: value for name, value in defaults.items() if name not in saved}, **saved}
    return setting_changes(saved, now, getattr(type(config), "RESUMABLE", ()))


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def finished_step(folder: Path, changes: Callable[[dict[str, Any]], list[str]], *,
                  made: str = "made", advice: str = "use another output directory or "
                  "delete that folder", done: str = SUMMARY) -> dict[str, Any] | None:
    """The summary of the finished step in ``folder`` (None when unfinished): its ``done``
    file, ``summary.json`` unless the step says otherwise (a file that is not ``.json``
    only marks the step finished: its summary is empty).
    :class:`KdsearchError` when ``changes(summary)`` names a setting that differs:
    ``"FOLDER was MADE with other settings (...); ADVICE"``."""
    if not (folder / done).exists():
        return None
    summary = read_json(folder / done) if done.endswith(".json") else {}  # else: a marker
    found = changes(summary)
    if found:
        raise KdsearchError(f"{folder} was {made} with other settings ({'; '.join(found)}); "
                            f"{advice}")
    return summary


def run_step(folder: Path, action: Callable[[Path], dict[str, Any] | None],
             changes: Callable[[dict[str, Any]], list[str]], *,
             note: Callable[[str], None], label: str, made: str = "made",
             advice: str = "use another output directory or delete that folder",
             done: str = SUMMARY) -> tuple[dict[str, Any], bool]:
    """``(summary, ran)``: the finished step's summary (checked by :func:`finished_step`,
    noted as skipped), or ``action(folder)`` run into the created folder and the summary it
    returned (or, returning None, wrote)."""
    summary = finished_step(folder, changes, made=made, advice=advice, done=done)
    if summary is not None:
        note(f"{label}: finished, skipped ({folder})")
        return summary, False
    note(f"{label} -> {folder}")
    summary = action(ensure_out_dir(folder))
    if summary is None:
        summary = read_json(folder / done) if done.endswith(".json") else {}
    return summary, True
