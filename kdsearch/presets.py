"""Search presets: YAML files in ``search_spaces/``, one per teacher family.

A preset holds ``constraints`` (:class:`~kdsearch.graph.units.Constraints`) and ``search``
(:class:`~kdsearch.search.config.SearchConfig`) values. The preset is chosen by the teacher's
family (``resnet_cifar.yaml`` for resnet56) and falls back to ``generic.yaml``; ``--preset``
takes a family name or a path. Unknown keys and wrong types are errors naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import sysconfig
from pathlib import Path
from typing import Any, get_type_hints

from kdsearch.errors import KdsearchError
from kdsearch.graph.units import UNIT_KINDS, Constraints
from kdsearch.io import read_yaml
from kdsearch.search.config import SearchConfig

PRESET_KEYS = {"family", "description", "constraints", "search"}


def search_spaces_dir() -> Path:
    """``$KDSEARCH_SEARCH_SPACES``; else ``search_spaces/`` beside the package (a checkout or
    an editable install); else where a wheel installs them, ``PREFIX/share/kdsearch``."""
    env = os.environ.get("KDSEARCH_SEARCH_SPACES")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parents[1] / "search_spaces"
    if beside.is_dir():
        return beside
    return Path(sysconfig.get_path("data")) / "share" / "kdsearch" / "search_spaces"


def preset_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise KdsearchError(f"{path}: no such preset file")
        return path
    candidate = search_spaces_dir() / f"{name_or_path}.yaml"
    return candidate if candidate.is_file() else search_spaces_dir() / "generic.yaml"


def load_preset(name_or_path: str) -> tuple[Constraints, SearchConfig]:
    path = preset_path(name_or_path)
    data = read_yaml(path, "preset") or {}
    if not isinstance(data, dict):
        raise KdsearchError(f"{path}: a preset is a mapping")
    unknown = set(data) - PRESET_KEYS
    if unknown:
        raise KdsearchError(f"{path}: unknown key {sorted(unknown)[0]!r} "
                            f"(allowed: {', '.join(sorted(PRESET_KEYS))})")
    constraints = from_mapping(Constraints, data.get("constraints") or {}, f"{path}: constraints")
    config = from_mapping(SearchConfig, data.get("search") or {}, f"{path}: search")
    bad = set(constraints.unit_kinds) - set(UNIT_KINDS)
    if bad:
        raise KdsearchError(f"{path}: unknown unit kind {sorted(bad)[0]!r}")
    return constraints, config


def from_mapping(cls, values: dict[str, Any], where: str, base=None):
    """``cls(**values)`` over ``base`` (or the defaults), checking every key and type."""
    if not isinstance(values, dict):
        raise KdsearchError(f"{where}: expected a mapping")
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise KdsearchError(f"{where}: unknown key {key!r} (allowed: "
                                f"{', '.join(sorted(fields))})")
        checked[key] = _coerce(value, hints[key], f"{where}.{key}")
    return dataclasses.replace(base or cls(), **checked)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    text = str(hint)
    if hint is bool or text == "bool":
        ok = isinstance(value, bool)
    elif hint is int or text == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float or text == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str or text == "str":
        ok = isinstance(value, str)
    else:  # tuple[str, ...]
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise KdsearchError(f"{where}: expected {getattr(hint, '__name__', text)}, "
                            f"got {value!r}")
    return value
