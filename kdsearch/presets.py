"""Search presets: YAML files in ``search_spaces/``, one per teacher family.

A preset holds ``constraints`` (:class:`~kdsearch.graph.units.Constraints`) and ``search``
(:class:`~kdsearch.search.config.SearchConfig`) values. The preset is chosen by the teacher's
family (``resnet_cifar.yaml`` for resnet56) and falls back to ``generic.yaml``; ``--preset``
takes a family name or a path. Unknown keys and wrong types are errors naming the key.
"""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

from kdsearch.errors import KdsearchError
from kdsearch.graph.units import UNIT_KINDS, Constraints
from kdsearch.io import read_yaml
from kdsearch.registry import unknown_name_message
from kdsearch.search.config import SearchConfig
from kdsearch.settings import from_mapping


@dataclass
class Preset:
    """A preset file: which family it is for, and the values it sets."""

    family: str | None = None
    description: str | None = None
    constraints: Constraints = field(default_factory=Constraints)
    search: SearchConfig = field(default_factory=SearchConfig)


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
    if candidate.is_file():
        return candidate
    if name_or_path not in model_families():  # a typo must not search with another preset
        raise KdsearchError(unknown_name_message("preset", name_or_path, preset_names()))
    return search_spaces_dir() / "generic.yaml"  # a family without a preset of its own


def preset_names() -> list[str]:
    """The presets in ``search_spaces/`` (the pipeline and tune configs beside them aside)."""
    return sorted(path.stem for path in search_spaces_dir().glob("*.yaml")
                  if not path.stem.startswith(("pipeline_", "tune_")))


def model_families() -> set[str]:
    """The families of every registered model, torchvision's and the generic one."""
    from kdsearch.models import MODELS, model_names

    return {MODELS.meta(name).get("family", "generic") for name in model_names()} | {
        "torchvision", "generic"}


def load_preset(name_or_path: str) -> tuple[Constraints, SearchConfig]:
    path = preset_path(name_or_path)
    preset = from_mapping(Preset, read_yaml(path, "preset") or {}, str(path))
    bad = set(preset.constraints.unit_kinds) - set(UNIT_KINDS)
    if bad:
        raise KdsearchError(f"{path}: unknown unit kind {sorted(bad)[0]!r}")
    return preset.constraints, preset.search
