"""The tune space: a YAML file naming a base pipeline config and the parameters to vary.

::

    base: pipeline.yaml            # a pipeline config (kdsearch run), or the mapping inline
    params:                        # dotted paths into the base config
      search.options.decay: {type: float, low: 0.5, high: 0.98}   # the selector's option
      distill.options.temperature: {type: float, low: 1, high: 8}
      distill.epochs: {type: int, low: 2, high: 6}
      distill.method: {type: categorical, choices: [kd, kdfm]}
      budget: {type: categorical, choices: [0.3x, 0.5x]}     # = search.budgets: [VALUE]
      distill.stages:                # choices may be named values: the name is the parameter
        type: categorical
        choices: {kd_only: [{method: kd}], kd_then_review: [{method: kd}, {method: reviewkd}]}
    objectives: [accuracy, macs]   # or [accuracy]; also params
    accuracy: last                 # the student's last-epoch test accuracy, or best
    sampler: tpe                   # tpe, random or nsga2
    sampler_seed: null            # fixed for a reproducible single worker only
    study: digits-tune             # default: the file's stem
    storage: null                  # default: sqlite:///OUT/study.db
    trials_dir: null               # default: OUT/trials
    out: runs/tune

A trial is the pipeline (teacher -> search -> distill) at one budget, in
``trials_dir/trial_N``; the base's ``compare`` and ``show`` are off in trials. Unless the
base gives ``teacher.weights`` (or a parameter changes the teacher), the teacher is trained
once, in ``OUT/teacher``, and shared by every trial. Relative paths in the space and in an
inline base resolve beside the space file; ``out`` and ``trials_dir`` from the current
directory. Nothing here imports optuna: :mod:`kdsearch.tune.study` does.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdsearch.errors import KdsearchError
from kdsearch.pipeline import check_config, load_config

SPACE_KEYS = ("base", "params", "objectives", "accuracy", "sampler", "sampler_seed", "study",
              "storage", "trials_dir", "out")
PARAM_KEYS = {"float": ("type", "low", "high", "log", "step"),
              "int": ("type", "low", "high", "log", "step"),
              "categorical": ("type", "choices")}
OBJECTIVES = {"accuracy": "maximize", "macs": "minimize", "params": "minimize"}
SAMPLERS = ("tpe", "random", "nsga2")
ACCURACIES = ("last", "best")
BUDGET_PARAM = "budget"  # shorthand for search.budgets: [VALUE]


@dataclass
class Param:
    """One tuned parameter: a float/int range or categorical choices (label -> value)."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: dict[str, Any] = field(default_factory=dict)

    def examples(self) -> list[Any]:
        """Values the base config must accept: every choice, or both ends of the range."""
        return list(self.choices.values()) if self.type == "categorical" else [self.low,
                                                                                self.high]


@dataclass
class TuneSpace:
    base: dict[str, Any]  # the raw pipeline config the parameters are applied to
    base_dir: Path  # relative input paths of ``base`` resolve here
    params: list[Param]
    objectives: list[str] = field(default_factory=lambda: ["accuracy"])
    accuracy: str = "last"
    sampler: str = "tpe"
    sampler_seed: int | None = None
    study: str = "tune"
    storage: str | None = None
    trials_dir: str | None = None
    out: str = "runs/tune"

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]

    def trial_config(self, values: dict[str, Any]) -> dict[str, Any]:
        """The raw pipeline config of one trial: ``values`` (name -> value) over the base."""
        config = copy.deepcopy(self.base)
        for name, value in values.items():
            set_path(config, name, value)
        config["compare"], config["show"] = None, False
        return config


def load_space(path: str | Path) -> TuneSpace:
    """Read and check a tune space file (:class:`KdsearchError` naming the key on error)."""
    path = Path(path)
    raw = load_config(path)
    return check_space(raw, path.resolve().parent, str(path), default_study=path.stem)


def check_space(raw: dict[str, Any], base_dir: Path, where: str = "tune space",
                default_study: str = "tune") -> TuneSpace:
    unknown = [key for key in raw if key not in SPACE_KEYS]
    if unknown:
        raise KdsearchError(f"{where}: unknown key {unknown[0]!r} (allowed: "
                            f"{', '.join(SPACE_KEYS)})")
    base, base_dir = _base(raw.get("base"), base_dir, where)
    check_config(base, base_dir, f"{where}: base")  # its compare and show are off in trials
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise KdsearchError(f"{where}: params: expected a mapping of parameter names to ranges")
    space = TuneSpace(
        base=base, base_dir=base_dir,
        params=[_param(name, spec, f"{where}: params.{name}") for name, spec in params.items()],
        objectives=_objectives(raw.get("objectives", ["accuracy"]), f"{where}: objectives"),
        accuracy=_choice(raw.get("accuracy", "last"), ACCURACIES, f"{where}: accuracy"),
        sampler=_choice(raw.get("sampler", "tpe"), SAMPLERS, f"{where}: sampler"),
        sampler_seed=_optional(raw.get("sampler_seed"), int, f"{where}: sampler_seed"),
        study=_optional(raw.get("study"), str, f"{where}: study") or default_study,
        storage=_optional(raw.get("storage"), str, f"{where}: storage"),
        trials_dir=_optional(raw.get("trials_dir"), str, f"{where}: trials_dir"),
        out=_optional(raw.get("out"), str, f"{where}: out") or "runs/tune",
    )
    check_trials(space, where)
    return space


def check_trials(space: TuneSpace, where: str) -> None:
    """Every parameter must fit the base config, and a trial must have one budget."""
    for param in space.params:
        for value in param.examples():
            try:
                check_config(space.trial_config({param.name: value}), space.base_dir)
            except KdsearchError as err:
                raise KdsearchError(f"{where}: params.{param.name} = {value!r}: {err}") from None
    example = check_config(space.trial_config({p.name: p.examples()[0] for p in space.params}),
                           space.base_dir, f"{where}: base")
    if len(example["search"]["budgets"]) != 1:
        raise KdsearchError(f"{where}: a trial distils one student: give base.search.budgets "
                            f"one budget, or tune '{BUDGET_PARAM}'")


def set_path(config: dict[str, Any], name: str, value: Any) -> None:
    """Set the dotted key ``name`` (``distill.options.temperature``) in ``config``."""
    if name == BUDGET_PARAM:
        name, value = "search.budgets", [value]
    *parents, leaf = name.split(".")
    node = config
    for index, key in enumerate(parents):
        child = node.setdefault(key, {})
        if isinstance(child, str) and key == "dataset" and index == 0:
            child = node[key] = {"name": child}
        if not isinstance(child, dict):
            raise KdsearchError(f"{'.'.join(parents[:index + 1])} is not a mapping")
        node = child
    node[leaf] = copy.deepcopy(value)


def _base(value: Any, base_dir: Path, where: str) -> tuple[dict[str, Any], Path]:
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else base_dir / value
        return load_config(path), path.resolve().parent
    if not isinstance(value, dict):
        raise KdsearchError(f"{where}: base: expected a pipeline config (mapping) or its path")
    return copy.deepcopy(value), base_dir


def _param(name: Any, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict) or spec.get("type") not in PARAM_KEYS:
        raise KdsearchError(f"{where}: expected a mapping with type: "
                            f"{' | '.join(PARAM_KEYS)}")
    kind = spec["type"]
    unknown = [key for key in spec if key not in PARAM_KEYS[kind]]
    if unknown:
        raise KdsearchError(f"{where}: unknown key {unknown[0]!r} for a {kind} parameter "
                            f"(allowed: {', '.join(PARAM_KEYS[kind])})")
    if kind == "categorical":
        return Param(str(name), kind, choices=_choices(spec.get("choices"), where))
    number = int if kind == "int" else (int, float)
    low, high = (_number(spec.get(key), number, f"{where}.{key}") for key in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise KdsearchError(f"{where}.log: expected true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, number, f"{where}.step")
    if not low < high or (log and low <= 0) or (step is not None and (step <= 0 or log)):
        raise KdsearchError(f"{where}: need low < high (low > 0 with log: true; a positive "
                            f"step, not with log), got low={low}, high={high}, step={step}")
    return Param(str(name), kind, low, high, log, step)


def _choices(value: Any, where: str) -> dict[str, Any]:
    """``[a, b]`` (scalars) or ``{label: value}``: always label -> value."""
    if isinstance(value, dict) and value:
        return {str(label): choice for label, choice in value.items()}
    if isinstance(value, list) and value:
        scalars = all(v is None or isinstance(v, bool | int | float | str) for v in value)
        if not scalars:
            raise KdsearchError(f"{where}.choices: list choices must be scalars; name "
                                "structured ones ({label: value, ...})")
        return {str(v): v for v in value}
    raise KdsearchError(f"{where}.choices: expected a non-empty list or mapping")


def _objectives(value: Any, where: str) -> list[str]:
    value = [value] if isinstance(value, str) else value
    if (not isinstance(value, list) or not value or len(set(value)) != len(value)
            or any(v not in OBJECTIVES for v in value) or "accuracy" not in value):
        raise KdsearchError(f"{where}: expected [accuracy] or accuracy with any of "
                            f"{', '.join(o for o in OBJECTIVES if o != 'accuracy')} "
                            f"(e.g. [accuracy, macs]), got {value!r}")
    return list(value)


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise KdsearchError(f"{where}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def _number(value: Any, kinds, where: str):
    if isinstance(value, bool) or not isinstance(value, kinds):
        expected = "an integer" if kinds is int else "a number"
        raise KdsearchError(f"{where}: expected {expected}, got {value!r}")
    return value


def _optional(value: Any, kind: type, where: str) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise KdsearchError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value
