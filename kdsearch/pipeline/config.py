"""The pipeline config: typed sections, checked, defaults filled in, input paths absolute.

Every section is checked before anything runs, so a typo fails in a second with one line
naming the key, not after the teacher trained. Types and unknown keys are checked by
:func:`kdsearch.settings.from_mapping` against the dataclasses below; what it cannot know
(names that exist, budgets that parse, files that exist) is checked here. The format is
in :mod:`kdsearch.pipeline`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdsearch.distill.config import TrainConfig
from kdsearch.distill.stages import STAGE_SETTINGS, Stage, load_stages
from kdsearch.errors import KdsearchError
from kdsearch.graph.units import Constraints
from kdsearch.io import read_yaml
from kdsearch.search.config import SearchConfig
from kdsearch.settings import check_values, from_mapping, given

DEFAULT_OUT = "runs/pipeline"
# Comparison settings the pipeline gives (from its teacher, dataset and device)
COMPARE_GIVEN = frozenset({"teacher", "dataset", "teacher_weights", "data_dir", "subset",
                           "device", "quiet"})


@dataclass
class DatasetSection:
    name: str
    data_dir: str | None = None  # relative to the config file
    subset: int | None = None
    input_size: list[int] | None = None  # [C, H, W], for datasets of any size (imagefolder)

    @property
    def input_tuple(self) -> tuple[int, int, int] | None:
        return None if self.input_size is None else tuple(self.input_size)

    def to_dict(self) -> dict[str, Any]:
        """The section as recorded; ``input_size`` only when given, so the runs recorded
        before it existed still match (their steps are skipped, not redone)."""
        record = dataclasses.asdict(self)
        if self.input_size is None:
            del record["input_size"]
        return record


@dataclass
class TeacherSection:
    model: str  # zoo name or torchvision:NAME
    # the teacher's cross-entropy training (a stage's settings: epochs, lr, ...)
    train: dict[str, Any] = field(default_factory=dict,
                                  metadata=given(TrainConfig, only=STAGE_SETTINGS))
    weights: str | None = None  # load these instead of training (relative to the config)


@dataclass
class SearchSection:
    budgets: list[str]
    preset: str | None = None  # a family or a YAML file; default: the teacher's family
    # SearchConfig values, written beside the keys above
    settings: dict[str, Any] = field(default_factory=dict,
                                     metadata=given(SearchConfig, inline=True))
    constraints: dict[str, Any] = field(default_factory=dict, metadata=given(Constraints))


@dataclass
class DistillSection:
    """One method (``method``, ``options``) or ``stages`` (a file or a list); once checked,
    ``stages`` is the list of :class:`Stage` and ``method``/``options`` are folded in."""

    init: Literal["fresh", "search"] = "fresh"  # search: start from the search's weights
    # a stage's settings (epochs, lr, ...), written beside the keys above
    settings: dict[str, Any] = field(default_factory=dict,
                                     metadata=given(TrainConfig, only=STAGE_SETTINGS,
                                                    inline=True))
    stages: list[Stage] | str | None = None
    method: str | None = None
    options: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"init": self.init, "settings": self.settings,
                "stages": [stage.to_dict() for stage in self.stages]}


@dataclass(kw_only=True)
class PipelineConfig:
    """A pipeline config; :meth:`to_dict` is what ``config.json`` holds."""

    dataset: DatasetSection = field(default_factory=lambda: DatasetSection("digits"))
    teacher: TeacherSection
    search: SearchSection
    distill: DistillSection = field(default_factory=DistillSection)
    show: bool = True
    seed: int = 0
    device: str = "auto"
    # CPU threads (None: --threads, OMP_NUM_THREADS or the idle cores); results are
    # bit-exact for one thread count
    threads: int | None = None
    out: str = DEFAULT_OUT
    # Comparison settings (None: no comparison); the pipeline's defaults filled in
    compare: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The checked config, JSON-ready."""
        return json_ready({f.name: _plain(getattr(self, f.name))
                           for f in dataclasses.fields(self)})


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; :class:`KdsearchError` naming the file when it is not one."""
    content = read_yaml(path, "config")
    if not isinstance(content, dict):
        raise KdsearchError(f"{path}: a config is a mapping of keys to values")
    return content


def check_config(raw: dict[str, Any], base_dir: str | Path | None = None,
                 where: str = "config") -> dict[str, Any]:
    """The checked config as a JSON-ready mapping (:meth:`PipelineConfig.to_dict`)."""
    return parse_config(raw, base_dir, where).to_dict()


def parse_config(raw: dict[str, Any], base_dir: str | Path | None = None,
                 where: str = "config") -> PipelineConfig:
    """The checked config: defaults filled in, input paths absolute (relative ones resolve
    in ``base_dir``, default the current directory).

    Unknown keys and wrong types are :class:`KdsearchError` naming the key
    (``where: search.steps: expected int, got 'x'``).
    """
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    config = from_mapping(PipelineConfig, _shorthands(raw), where)
    _check_dataset(config.dataset, base, f"{where}: dataset")
    _check_teacher(config.teacher, base, f"{where}: teacher")
    _check_search(config.search, config.teacher.model, base, f"{where}: search")
    _check_distill(config.distill, base, f"{where}: distill")
    if config.threads is not None and config.threads < 1:
        raise KdsearchError(f"{where}: threads: expected a positive number of threads, "
                            f"got {config.threads}")
    config.compare = _compare(config, where)
    return config


def _shorthands(raw: Any) -> Any:
    """``dataset: NAME``, ``compare: false``, one budget, budgets as numbers."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    if isinstance(raw.get("dataset"), str):
        raw["dataset"] = {"name": raw["dataset"]}
    if raw.get("compare") is False:
        raw["compare"] = None
    search = raw.get("search")
    if isinstance(search, dict) and search.get("budgets") is not None:
        budgets = search["budgets"]
        budgets = budgets if isinstance(budgets, list) else [budgets]
        raw["search"] = {**search, "budgets": [
            str(b) if isinstance(b, int | float) and not isinstance(b, bool) else b
            for b in budgets]}
    return raw


def _check_dataset(dataset: DatasetSection, base: Path, where: str) -> None:
    from kdsearch.data import DATASETS, dataset_names

    dataset_names()  # imports the loaders
    _named(lambda: DATASETS.get(dataset.name), f"{where}.name")
    dataset.data_dir = _path(dataset.data_dir, base)
    if dataset.input_size is not None:
        if len(dataset.input_size) != 3 or min(dataset.input_size) < 1:
            raise KdsearchError(f"{where}.input_size: expected [C, H, W], positive, got "
                                f"{dataset.input_size}")
        from kdsearch.data.registry import loader_arguments

        _named(lambda: loader_arguments(dataset.name, {"input_size": dataset.input_size}),
               where)


def _check_teacher(teacher: TeacherSection, base: Path, where: str) -> None:
    _named(lambda: _model_exists(teacher.model), f"{where}.model")
    teacher.weights = _path(teacher.weights, base, must_exist=True, where=f"{where}.weights")


def _check_search(search: SearchSection, teacher_model: str, base: Path, where: str) -> None:
    from kdsearch.presets import load_preset, preset_path
    from kdsearch.search.budget import parse_budget

    if not search.budgets:
        raise KdsearchError(f"{where}.budgets: expected a list of budgets (e.g. [0.5x, 41M])")
    for index, budget in enumerate(search.budgets):
        _named(lambda b=budget: parse_budget(b, 10**30, _model_exists),
               f"{where}.budgets[{index}]")
    if len(set(map(tag, search.budgets))) < len(search.budgets):
        raise KdsearchError(f"{where}.budgets: a budget is given twice")
    preset = search.preset
    if preset and Path(preset).suffix in (".yaml", ".yml"):
        preset = _named(lambda: str(preset_path(str(base / preset))), f"{where}.preset")
    search.preset = preset or _family(teacher_model)
    _, config = _named(lambda: load_preset(search.preset), f"{where}.preset")
    _named(lambda: config.overridden(**search.settings), where)  # now, not later


def _check_distill(distill: DistillSection, base: Path, where: str) -> None:
    if distill.stages is not None and (distill.method, distill.options) != (None, None):
        raise KdsearchError(f"{where}: 'stages' sets the methods and options; "
                            "drop 'method'/'options'")
    if distill.stages is None:
        one = {"method": distill.method or "kd", "options": distill.options or {}}
        distill.stages = [from_mapping(Stage, one, where)]
    elif isinstance(distill.stages, str):
        distill.stages = load_stages(_path(distill.stages, base, must_exist=True,
                                           where=f"{where}.stages"))
    elif not distill.stages:
        raise KdsearchError(f"{where}.stages: expected a stages file or a non-empty list")
    distill.method = distill.options = None  # folded into the stages


def _compare(config: PipelineConfig, where: str) -> dict[str, Any] | None:
    """``compare`` is off (absent, null, false) or :class:`~kdsearch.compare.Comparison`
    settings; what the pipeline knows (teacher, data, device) is filled in, and the method,
    epochs, lr, batch size, preset and search steps default to those of the pipeline."""
    if config.compare is None:
        return None
    from kdsearch.compare import Comparison

    allowed = [f.name for f in dataclasses.fields(Comparison) if f.name not in COMPARE_GIVEN]
    section = {**_compare_defaults(config),
               **check_values(Comparison, config.compare, where, path="compare", only=allowed)}
    from_mapping(Comparison, {"teacher": config.teacher.model,
                              "dataset": config.dataset.name, **section}, f"{where}: compare")
    return json_ready(section)


def _compare_defaults(config: PipelineConfig) -> dict[str, Any]:
    search, stages = config.search, config.distill.stages
    defaults = {"first_seed": config.seed, "preset": search.preset,
                "search_steps": search.settings.get("steps")}
    if len(stages) == 1:
        settings = {**config.distill.settings, **stages[0].settings}
        defaults.update(method=stages[0].method, epochs=settings.get("epochs"),
                        lr=settings.get("lr"), batch_size=settings.get("batch_size"))
    return {key: value for key, value in defaults.items() if value is not None}


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
