"""The pipeline config: checked, defaults filled in, input paths made absolute.

Every section is checked before anything runs, so a typo fails in a second with one line
naming the key, not after the teacher trained. The format is in :mod:`kdsearch.pipeline`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from kdsearch.errors import KdsearchError
from kdsearch.io import read_yaml

TOP_KEYS = ("dataset", "teacher", "search", "distill", "compare", "show", "seed", "device",
            "threads", "out")
DATASET_KEYS = ("name", "data_dir", "subset")
TEACHER_KEYS = ("model", "weights", "train")
SEARCH_KEYS = ("budgets", "preset", "constraints")  # and every SearchConfig field
DISTILL_KEYS = ("method", "options", "stages", "init")  # and every stage setting
INITS = ("fresh", "search")
DEFAULT_OUT = "runs/pipeline"
# Comparison settings the pipeline gives (from its teacher, dataset and device)
COMPARE_GIVEN = frozenset({"teacher", "dataset", "teacher_weights", "data_dir", "subset",
                           "device", "quiet"})


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; :class:`KdsearchError` naming the file when it is not one."""
    content = read_yaml(path, "config")
    if not isinstance(content, dict):
        raise KdsearchError(f"{path}: a config is a mapping of keys to values")
    return content


def check_config(raw: dict[str, Any], base_dir: str | Path | None = None,
                 where: str = "config") -> dict[str, Any]:
    """The checked config: defaults filled in, input paths absolute, JSON-ready.

    Unknown keys and wrong types are :class:`KdsearchError` naming the key
    (``where: search.steps: expected int, got 'x'``).
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    _mapping(raw, where)
    _known(raw, TOP_KEYS, where)
    for key in ("teacher", "search"):
        if raw.get(key) is None:
            raise KdsearchError(f"{where}: {key!r} is required")
    teacher = _teacher(raw["teacher"], base, f"{where}: teacher")
    config = {
        "dataset": _dataset(raw.get("dataset", "digits"), base, f"{where}: dataset"),
        "teacher": teacher,
        "search": _search(raw["search"], teacher["model"], base, f"{where}: search"),
        "distill": _distill(raw.get("distill") or {}, base, f"{where}: distill"),
        "show": _typed(raw.get("show", True), bool, f"{where}: show"),
        "seed": _typed(raw.get("seed", 0), int, f"{where}: seed"),
        "device": _typed(raw.get("device", "auto"), str, f"{where}: device"),
        # CPU threads (None: --threads, OMP_NUM_THREADS or the idle cores); results are
        # bit-exact for one thread count
        "threads": _threads(raw.get("threads"), f"{where}: threads"),
        "out": _typed(raw.get("out", DEFAULT_OUT), str, f"{where}: out"),
    }
    config["compare"] = _compare(raw.get("compare"), config, f"{where}: compare")
    return config


def _threads(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise KdsearchError(f"{where}: expected a positive number of threads, got {value!r}")
    return value


def _dataset(value: Any, base: Path, where: str) -> dict[str, Any]:
    from kdsearch.data import DATASETS, dataset_names

    section = {"name": value} if isinstance(value, str) else _mapping(value, where)
    _known(section, DATASET_KEYS, where)
    name = _typed(section.get("name"), str, f"{where}.name")
    dataset_names()  # imports the loaders
    _named(lambda: DATASETS.get(name), f"{where}.name")
    data_dir = _optional(section.get("data_dir"), str, f"{where}.data_dir")
    subset = _optional(section.get("subset"), int, f"{where}.subset")
    return {"name": name, "data_dir": _path(data_dir, base), "subset": subset}


def _teacher(value: Any, base: Path, where: str) -> dict[str, Any]:
    section = _mapping(value, where)
    _known(section, TEACHER_KEYS, where)
    model = _typed(section.get("model"), str, f"{where}.model")
    _named(lambda: _model_exists(model), f"{where}.model")
    weights = _optional(section.get("weights"), str, f"{where}.weights")
    train = _settings(_mapping(section.get("train") or {}, f"{where}.train"), f"{where}.train")
    return {"model": model, "train": train,
            "weights": _path(weights, base, must_exist=True, where=f"{where}.weights")}


def _search(value: Any, teacher_model: str, base: Path, where: str) -> dict[str, Any]:
    from kdsearch.graph.units import Constraints
    from kdsearch.presets import from_mapping, load_preset, preset_path
    from kdsearch.search.config import SearchConfig

    section = dict(_mapping(value, where))
    settings_keys = [f.name for f in dataclasses.fields(SearchConfig)]
    _known(section, (*SEARCH_KEYS, *settings_keys), where)
    budgets = _budgets(section.pop("budgets", None), f"{where}.budgets")
    preset = _optional(section.pop("preset", None), str, f"{where}.preset")
    if preset and Path(preset).suffix in (".yaml", ".yml"):
        preset = _named(lambda: str(preset_path(str(base / preset))), f"{where}.preset")
    preset = preset or _family(teacher_model)
    _named(lambda: load_preset(preset), f"{where}.preset")  # fails now, not after training
    constraints = section.pop("constraints", None) or {}
    from_mapping(Constraints, constraints, f"{where}.constraints")
    from_mapping(SearchConfig, section, where)
    return {"budgets": budgets, "preset": preset, "settings": section,
            "constraints": json_ready(constraints)}


def _distill(value: Any, base: Path, where: str) -> dict[str, Any]:
    from kdsearch.distill.stages import STAGE_SETTINGS, load_stages

    section = dict(_mapping(value, where))
    _known(section, (*DISTILL_KEYS, *STAGE_SETTINGS), where)
    init = section.pop("init", "fresh")
    if init not in INITS:
        raise KdsearchError(f"{where}.init: expected one of {', '.join(INITS)}, got {init!r}")
    stages = section.pop("stages", None)
    if stages is not None and ("method" in section or "options" in section):
        raise KdsearchError(f"{where}: 'stages' sets the methods and options; "
                            "drop 'method'/'options'")
    if stages is None:
        one = {"method": section.pop("method", "kd"), "options": section.pop("options", {})}
        stages = [_stage_dict(one, f"{where}")]
    elif isinstance(stages, str):
        path = _path(stages, base, must_exist=True, where=f"{where}.stages")
        stages = [_stage_dict(_stage_mapping(s), f"{path}") for s in load_stages(path)]
    elif isinstance(stages, list) and stages:
        stages = [_stage_dict(s, f"{where}.stages[{i}]") for i, s in enumerate(stages)]
    else:
        raise KdsearchError(f"{where}.stages: expected a stages file or a non-empty list")
    return {"init": init, "settings": _settings(section, where), "stages": stages}


def _settings(section: dict[str, Any], where: str) -> dict[str, Any]:
    """Training settings (epochs, lr, ...: the keys of a stage besides method and options)."""
    settings = _stage_dict({"method": "ce", **section}, where)
    settings.pop("method")
    settings.pop("options")
    return settings


def _stage_dict(entry: Any, where: str) -> dict[str, Any]:
    """A checked stage (method, options and settings) as a JSON-ready mapping."""
    from kdsearch.distill.method import get_method, resolve_options
    from kdsearch.distill.stages import parse_stage

    stage = parse_stage(entry, where)
    try:
        resolve_options(get_method(stage.method), stage.options)
    except KdsearchError as err:
        raise KdsearchError(f"{where}: {err}") from None
    return _stage_mapping(stage)


def _stage_mapping(stage) -> dict[str, Any]:
    return json_ready({"method": stage.method, "options": stage.options, **stage.settings})


def _compare(value: Any, config: dict[str, Any], where: str) -> dict[str, Any] | None:
    """``compare`` is off (absent, null, false) or :class:`~kdsearch.compare.Comparison`
    settings; what the pipeline knows (teacher, data, device) is filled in, and the method,
    epochs, lr, batch size, preset and search steps default to those of the pipeline."""
    if value is None or value is False:
        return None
    from kdsearch.compare import Comparison

    section = dict(_mapping(value, where))
    if isinstance(section.get("against"), str):
        section["against"] = [section["against"]]
    allowed = [f.name for f in dataclasses.fields(Comparison) if f.name not in COMPARE_GIVEN]
    _known(section, allowed, where)
    hints = get_type_hints(Comparison)
    for key, given in section.items():
        section[key] = _field_value(given, hints[key], f"{where}.{key}")
    section = {**_compare_defaults(config), **section}
    try:
        Comparison(teacher=config["teacher"]["model"], dataset=config["dataset"]["name"],
                   **section)
    except (KdsearchError, TypeError) as err:
        raise KdsearchError(f"{where}: {err}") from None
    return json_ready(section)


def _compare_defaults(config: dict[str, Any]) -> dict[str, Any]:
    search, distill = config["search"], config["distill"]
    defaults = {"first_seed": config["seed"], "preset": search["preset"],
                "search_steps": search["settings"].get("steps")}
    if len(distill["stages"]) == 1:
        stage = {**distill["settings"], **distill["stages"][0]}
        defaults.update(method=stage["method"], epochs=stage.get("epochs"),
                        lr=stage.get("lr"), batch_size=stage.get("batch_size"))
    return {key: value for key, value in defaults.items() if value is not None}


def _field_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against a dataclass field's type (``X | None``, tuple[str, ...])."""
    optional = type(None) in get_args(hint)
    kind = next(k for k in get_args(hint) if k is not type(None)) if optional else hint
    if value is None and optional:
        return None
    if get_origin(kind) is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise KdsearchError(f"{where}: expected a list of names, got {value!r}")
        return list(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return _typed(value, kind, where)


def _budgets(value: Any, where: str) -> list[str]:
    from kdsearch.search.budget import parse_budget

    if isinstance(value, str | int | float) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise KdsearchError(f"{where}: expected a list of budgets (e.g. [0.5x, 41M])")
    budgets = []
    for index, budget in enumerate(value):
        if isinstance(budget, bool) or not isinstance(budget, str | int | float):
            raise KdsearchError(f"{where}[{index}]: expected a budget, got {budget!r}")
        budget = str(budget)
        _named(lambda b=budget: parse_budget(b, 10**30, _model_exists), f"{where}[{index}]")
        budgets.append(budget)
    if len(set(map(tag, budgets))) < len(budgets):
        raise KdsearchError(f"{where}: a budget is given twice")
    return budgets


def _model_exists(name: str) -> int:
    from kdsearch.models import model_family

    model_family(name)
    return 1


def _family(model: str) -> str:
    from kdsearch.models import model_family

    try:
        return model_family(model)
    except KdsearchError:
        return "generic"


def _named(check, where: str) -> Any:
    """``check()``, its :class:`KdsearchError` prefixed with ``where``."""
    try:
        return check()
    except KdsearchError as err:
        raise KdsearchError(f"{where}: {err}") from None


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise KdsearchError(f"{where}: expected a mapping, got {value!r}")
    return value


def _known(section: dict[str, Any], allowed, where: str) -> None:
    for key in section:
        if key not in allowed:
            raise KdsearchError(f"{where}: unknown key {key!r} (allowed: "
                                f"{', '.join(sorted(allowed))})")


def _typed(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
        raise KdsearchError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _optional(value: Any, kind: type, where: str) -> Any:
    return None if value is None else _typed(value, kind, where)


def _path(value: str | None, base: Path, must_exist: bool = False, where: str = "") -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if must_exist and not path.exists():
        raise KdsearchError(f"{where}: {path}: no such file")
    return str(path)


def json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def tag(budget: str) -> str:
    return budget.replace(":", "_").replace("/", "_")
