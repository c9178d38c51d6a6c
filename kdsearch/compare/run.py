"""``kdsearch compare``: searched students against hand-designed ones and controls at the
same MACs.

For each hand-designed student, search a student inside the teacher at its MAC budget
(``like:NAME``), cut the chosen controls at that budget (L1, random draws, uniform, DepGraph:
:mod:`kdsearch.compare.baselines`), then train every student with one recipe and one method
over the same seeds (from scratch, or from the weights each kept with ``init="inherit"``),
and write ``comparison.csv``, ``comparison.md`` and ``comparison.png`` into the output
directory.

Layout of the output directory (each step is skipped when its ``summary.json`` exists,
so a re-run continues where the last one stopped; a step finished with other settings is
an error naming its folder)::

    teacher/summary.json                 the teacher's MACs, params and test accuracy
    search/<budget>/                     one search per budget (kdsearch search files)
    controls/<control>_<budget>[_draw<i>]/  the controls (kdsearch.compare.baselines)
    train/<kind>_<student>/seed<N>/      one training run (kdsearch train files)

``students`` adds students of your own (``student.json`` files, e.g. a cut made by hand or
found elsewhere): kind ``given``, trained with the same schedule and seeds and compared
with the first hand-designed student.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from kdsearch.compare.baselines import control_constraints, control_names, control_student
from kdsearch.compare.plots import draw_pareto, pareto_data
from kdsearch.compare.report import csv_text, markdown_report, plural, safe_name
from kdsearch.compare.stats import comparison_row
from kdsearch.data.base import ImageDataset
from kdsearch.deploy.latency import Latency, measure_latency
from kdsearch.distill.config import RECIPE_EPOCHS, TrainConfig, resolve_device
from kdsearch.errors import KdsearchError
from kdsearch.graph.units import Constraints
from kdsearch.io import ensure_out_dir, read_json, write_json, write_text
from kdsearch.models.checkpoint import load_weights
from kdsearch.registry import unknown_name_message
from kdsearch.search.config import SearchConfig
from kdsearch.steps import run_step, setting_changes
from kdsearch.student.resolve import warn_untrained_teacher

SUMMARY = "summary.json"
INITS = ("fresh", "inherit")
GIVEN = "given"  # the kind of a student of the user's own (Comparison.students)


@dataclass
class Comparison:
    """What to compare and how to train (defaults: the CIFAR-100 KD recipe, 3 seeds)."""

    teacher: str  # zoo name or torchvision:NAME
    dataset: str
    against: tuple[str, ...]  # hand-designed students (zoo names)
    teacher_weights: str | None = None  # None: an untrained teacher (a warning is printed)
    method: str = "kd"
    seeds: int = 3  # runs per student, seeds first_seed .. first_seed + seeds - 1
    first_seed: int = 0  # also the seed of every search
    epochs: int = RECIPE_EPOCHS
    lr: float | None = None  # None: TrainConfig's default (0.05)
    schedule: str = "step"  # TrainConfig.schedule: "step" (the recipe's milestones), "cosine"
    batch_size: int | None = None  # None: TrainConfig's default (64)
    budgets: tuple[str, ...] = ()  # extra searched budgets for the Pareto plot (0.5x, 41M)
    pruning_baseline: bool = False  # the same as "l1" in baselines
    # controls at every budget of --against (kdsearch.compare.baselines): l1, random,
    # uniform, depgraph; random is drawn random_draws times (draw i with seed i)
    baselines: tuple[str, ...] = ()
    random_draws: int = 5
    # your own students: student.json files (or folders holding one), kind "given", each
    # compared with the first hand-designed student; a <name>.pt beside <name>.json is the
    # weights it inherits with init "inherit"
    students: tuple[str, ...] = ()
    # "fresh": every student trained from a fresh initialisation (protocol (b), the paper's);
    # "inherit": searched and control students start from their student.pt (the teacher's
    # weights they kept; the search's after its settling steps), hand-designed ones fresh
    init: str = "fresh"
    search_steps: int | None = None  # None: the preset's
    selector: str | None = None  # None: the preset's (another starts from its own options)
    preset: str | None = None  # None: chosen by the teacher's family
    data_options: dict = field(default_factory=dict)  # load_dataset's: data_dir, subset ...
    device: str = "auto"
    quiet: bool = False
    # trainings at once, in worker processes (several small students share one GPU, or
    # several cores better than threads share one student); the results do not depend on it
    jobs: int = 1
    # bf16 autocast and channels-last where the device has them (kdsearch.numerics)
    amp: bool = True
    channels_last: bool = True
    # the latency column: median wall time per batch of this many inputs, float32 eager on
    # the comparison's device, timed for latency_time seconds per model when the report is
    # written (kdsearch.deploy.latency)
    latency_batch_size: int = 1
    latency_time: float = 0.2

    def __post_init__(self) -> None:
        self.against, self.budgets = tuple(self.against), tuple(self.budgets)
        self.students = tuple(str(_spec_file(path)) for path in self.students)
        if not self.against:
            raise KdsearchError("compare needs at least one hand-designed student (--against)")
        if min(self.seeds, self.epochs, self.random_draws, self.jobs,
               self.latency_batch_size) < 1:
            raise KdsearchError("seeds, epochs, random draws, jobs and the latency batch size "
                                "must be at least 1")
        if not self.latency_time > 0:
            raise KdsearchError(f"latency_time must be positive, not {self.latency_time}")
        self.baselines = tuple(dict.fromkeys(
            (*(("l1",) if self.pruning_baseline else ()), *self.baselines)))
        known = control_names()
        for name in self.baselines:
            if name not in known:
                raise KdsearchError(unknown_name_message("baseline", name, known))
        if self.init not in INITS:
            raise KdsearchError(f"init must be one of {', '.join(INITS)}, not {self.init!r}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))


@dataclass
class Setup:
    """Everything loaded once and shared by every step of a comparison."""

    settings: Comparison
    out: Path
    dataset: ImageDataset
    teacher: nn.Module
    teacher_info: dict  # model, weights, macs, params, acc
    constraints: Constraints
    search: SearchConfig
    train: TrainConfig
    preset: str
    latency: Latency | None = None  # the teacher's, timed when the report is written


@dataclass
class Candidate:
    """One student to train over the seeds: how to build it fresh, and where it runs."""

    kind: str  # hand-designed, searched, a control (l1, random, uniform, depgraph), given
    student: str
    budget: str
    source: str  # a zoo name (hand-designed), the folder of its student.json/.pt, or a
    # given student's .json file
    reference: str = ""  # the hand-designed student it is compared with
    runs: list[dict] = field(default_factory=list)  # training summaries, one per seed
    draw: int | None = None  # which random draw

    def build(self, dataset: ImageDataset) -> nn.Module:
        """The student, freshly initialised (from the current torch seed)."""
        if self.kind == "hand-designed":
            from kdsearch.models import build_model

            return build_model(self.source, dataset.num_classes, dataset.input_size[0])
        from kdsearch.student.spec import build_student

        return build_student(read_json(self.spec))

    @property
    def spec(self) -> Path:
        source = Path(self.source)
        return source if self.kind == GIVEN else source / "student.json"

    @property
    def weights(self) -> Path | None:
        """The weights it inherits with init "inherit" (None: hand-designed, or a given
        student without a .pt beside its .json)."""
        if self.kind == "hand-designed":
            return None
        weights = self.spec.with_suffix(".pt")
        return weights if self.kind != GIVEN or weights.exists() else None

    @property
    def folder(self) -> str:
        name = self.student if self.kind in ("hand-designed", GIVEN) else self.budget
        draw = f"_draw{self.draw}" if self.draw is not None else ""
        return safe_name(f"{self.kind}_{name}{draw}")


def run_comparison(settings: Comparison, out_dir: str | Path) -> list[dict]:
    """Run (or continue) the comparison; write the report files; return the table's rows
    (one dict per kind and student, keys :data:`~kdsearch.compare.stats.COLUMNS`)."""
    warn_untrained_teacher(settings.teacher, settings.teacher_weights)
    setup = _setup(settings, ensure_out_dir(out_dir))
    candidates = _candidates(setup)
    tasks = [(candidate, seed) for candidate in candidates for seed in settings.seed_list]
    summaries = _train_all(setup, tasks)
    for index, candidate in enumerate(candidates):
        seeds = len(settings.seed_list)
        candidate.runs = summaries[index * seeds:(index + 1) * seeds]
    hand = {c.student: c.runs for c in candidates if c.kind == "hand-designed"}
    rows = [comparison_row(c.kind, c.student, c.budget, c.runs, c.reference,
                           hand.get(c.reference, ())) for c in candidates]
    _time_students(setup, candidates, rows)
    _write_report(setup, rows)
    return rows


def _time_students(setup: Setup, candidates: list[Candidate], rows: list[dict]) -> None:
    """Fill each row's ``latency_ms`` (median per batch) and ``speedup`` (the teacher's
    median over it), timing the teacher and every student now, on this machine; a student
    is built with fresh weights, which do not change its speed."""
    settings = setup.settings
    time = partial(measure_latency, input_size=setup.dataset.input_size,
                   batch_size=settings.latency_batch_size, device=setup.train.device,
                   min_run_time=settings.latency_time)
    setup.latency = time(setup.teacher)
    for candidate, row in zip(candidates, rows, strict=True):
        row["latency_ms"] = time(candidate.build(setup.dataset)).median_ms
        row["speedup"] = setup.latency.median_ms / row["latency_ms"]


# -- set-up -----------------------------------------------------------------------------------
def _setup(settings: Comparison, out: Path) -> Setup:
    from kdsearch.data import load_dataset
    from kdsearch.distill import get_method
    from kdsearch.models import MODELS, model_family, model_names
    from kdsearch.presets import load_preset
    from kdsearch.student.resolve import resolve_model

    model_names()  # imports the zoo: unknown names fail before any work starts
    for name in settings.against:
        MODELS.get(name)
    get_method(settings.method)
    device = str(resolve_device(settings.device))
    dataset = load_dataset(settings.dataset, **{"seed": settings.first_seed,
                                                **settings.data_options})
    teacher = resolve_model(settings.teacher, dataset.num_classes, dataset.input_size,
                            weights=settings.teacher_weights).model.eval()
    preset = settings.preset or model_family(settings.teacher)
    constraints, search = load_preset(preset)
    search.device, search.amp = device, search.amp and settings.amp
    search.channels_last = search.channels_last and settings.channels_last
    if settings.search_steps:
        search.steps, search.epochs = settings.search_steps, 0.0
    if settings.selector:
        search = search.overridden(selector=settings.selector)
    given = {"lr": settings.lr, "batch_size": settings.batch_size}
    train = TrainConfig(epochs=settings.epochs, device=device, schedule=settings.schedule,
                        amp=settings.amp, channels_last=settings.channels_last,
                        **{k: v for k, v in given.items() if v is not None})
    info = _teacher_info(settings, teacher, dataset, device, out / "teacher")
    return Setup(settings, out, dataset, teacher, info, constraints, search, train, preset)


def _teacher_info(settings: Comparison, teacher: nn.Module, dataset: ImageDataset,
                  device: str, run: Path) -> dict:
    """MACs, params and test accuracy (%) of the teacher, cached in ``run/summary.json``;
    a cached summary of another teacher or other weights is an error (every result in the
    directory depends on them)."""
    identity = {"model": settings.teacher, "weights": settings.teacher_weights}
    if (run / SUMMARY).exists():
        saved = read_json(run / SUMMARY)
        if {k: saved.get(k) for k in identity} != identity:
            raise KdsearchError(f"{run.parent} holds a comparison with teacher "
                                f"{saved.get('model')} (weights {saved.get('weights')}); "
                                "use another output directory")
        return saved
    from kdsearch.evaluation import evaluate
    from kdsearch.graph.counting import count_model

    counted = count_model(teacher, dataset.input_size)
    accuracy = evaluate(teacher, dataset, device=device)["accuracy"]
    summary = {**identity, "macs": counted.macs, "params": counted.params, "acc": accuracy}
    write_json(ensure_out_dir(run) / SUMMARY, summary)
    return summary


# -- students ---------------------------------------------------------------------------------
def _candidates(setup: Setup) -> list[Candidate]:
    """Per hand-designed student: it, the searched one and the controls at its MACs; then
    the searched students at the extra budgets; the given students last (checked first).
    Runs the searches and cuts the controls."""
    teacher, given = setup.settings.teacher, _given(setup)
    candidates = []
    for name in setup.settings.against:
        budget = f"like:{name}"
        candidates.append(Candidate("hand-designed", name, budget, name))
        run = _search(setup, budget)
        candidates.append(_found("searched", f"{teacher} searched @ {budget}", budget, run,
                                 reference=name))
        for control in setup.settings.baselines:
            draws = range(setup.settings.random_draws) if control == "random" else [None]
            for draw in draws:
                run = _control(setup, control, budget, draw)
                label = f"{teacher} {control}{'' if draw is None else f' #{draw}'} @ {budget}"
                candidates.append(_found(control, label, budget, run, reference=name,
                                         draw=draw))
    searched = {c.budget for c in candidates if c.kind == "searched"}
    for budget in dict.fromkeys(b for b in setup.settings.budgets if b not in searched):
        run = _search(setup, budget)
        candidates.append(_found("searched", f"{teacher} searched @ {budget}", budget, run))
    return candidates + given


def _given(setup: Setup) -> list[Candidate]:
    """The user's own students, each built once here so that a bad spec fails before any
    search or training."""
    reference = setup.settings.against[0]
    candidates = [Candidate(GIVEN, _given_name(Path(path)), f"like:{reference}", path,
                            reference=reference) for path in setup.settings.students]
    names = [c.student for c in candidates]
    for candidate in candidates:
        if names.count(candidate.student) > 1:
            raise KdsearchError(f"two given students are named {candidate.student!r} "
                                "(the folder of a student.json, else the file's name): "
                                "rename one")
        _check_given(candidate, setup.dataset)
    return candidates


def _given_name(spec: Path) -> str:
    return spec.parent.name if spec.name == "student.json" else spec.stem


def _check_given(candidate: Candidate, dataset: ImageDataset) -> None:
    from kdsearch.student.spec import load_student

    loaded = load_student(candidate.spec)  # one line naming the file when it does not build
    made_for = (loaded.num_classes, loaded.input_size)
    if made_for != (dataset.num_classes, dataset.input_size):
        raise KdsearchError(f"given student {candidate.spec} is for {loaded.num_classes} "
                            f"classes at input {list(loaded.input_size)}, the data has "
                            f"{dataset.num_classes} at {list(dataset.input_size)}")


def _spec_file(path: str | Path) -> Path:
    """A given student's spec: ``path`` itself (a .json file) or ``path/student.json``."""
    path = Path(path)
    spec = path / "student.json" if path.is_dir() else path
    if not spec.is_file() or spec.suffix != ".json":
        raise KdsearchError(f"given student {path}: no such student.json (the spec a search "
                            "or a control writes, or a folder holding one)")
    return spec


def _found(kind: str, student: str, budget: str, run: Path, **extra) -> Candidate:
    """A student found in ``run`` (student.json, student.pt): by a search or a control."""
    return Candidate(kind, student, budget, str(run), **extra)


def _search(setup: Setup, budget: str) -> Path:
    """Search at ``budget`` (or reuse the finished search); the search's folder."""
    from kdsearch.student.run import search_changes, search_student

    settings, run = setup.settings, setup.out / "search" / safe_name(budget)
    search = partial(search_student, setup.teacher, settings.teacher, setup.dataset, budget,
                     setup.search, setup.constraints, seed=settings.first_seed,
                     progress=not settings.quiet, resume=True)
    run_step(run, lambda folder: search(folder).summary,
             search_changes(setup.search, len(setup.dataset.train_labels), budget,
                            setup.constraints),
             note=partial(_note, settings), label=f"search at {budget}", made="searched")
    return run


def _control(setup: Setup, control: str, budget: str, draw: int | None) -> Path:
    """Cut control ``control`` at ``budget`` (or reuse it); its folder."""
    settings, data = setup.settings, setup.dataset
    name = safe_name(f"{control}_{budget}" + ("" if draw is None else f"_draw{draw}"))
    run = setup.out / "controls" / name
    asked = {"control": control, "budget": budget, "seed": draw or 0}
    constraints = control_constraints(control, setup.constraints)
    summary, ran = run_step(
        run, partial(control_student, control, setup.teacher, settings.teacher,
                     data.num_classes, data.input_size, budget, setup.constraints,
                     seed=draw or 0),
        lambda summary: (setting_changes(summary, asked)
                         + constraints.changes(summary.get("constraints"))),
        note=partial(_note, settings),
        label=f"{control} control at {budget}", made="cut")
    if ran:
        _note(settings, f"  {summary['student']['macs'] / 1e6:.3f}M MACs "
                        f"({100 * summary['budget_fraction']:.1f}% of the budget)")
    return run


def _train_all(setup: Setup, tasks: list[tuple[Candidate, int]]) -> list[dict]:
    """Every (candidate, seed) training, in order; with ``jobs`` > 1 in that many worker
    processes at once (each loads the data and the teacher once, and takes its share of
    the threads). Each run has its own folder, so the result does not depend on ``jobs``.
    SIGINT/SIGTERM reach every worker: each stops after its step with its last epoch in
    checkpoint.pt, no new training starts, and the first to stop raises here."""
    jobs = min(setup.settings.jobs, len(tasks))
    if jobs <= 1:
        return [_train(setup, candidate, seed) for candidate, seed in tasks]
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from kdsearch.signals import ForwardSignals

    threads = max(1, torch.get_num_threads() // jobs)
    context = multiprocessing.get_context("spawn")
    waiting, running, results = list(enumerate(tasks)), {}, {}
    with ForwardSignals() as signals, ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_worker_start,
            initargs=(setup.settings, setup.out, threads)) as pool:
        try:
            while (waiting and not signals.requested) or running:
                while waiting and len(running) < jobs and not signals.requested:
                    index, task = waiting.pop(0)  # never more queued than running
                    running[pool.submit(_worker_train, task)] = index
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    results[running.pop(future)] = future.result()
        except BrokenProcessPool:  # a worker the signal caught between trainings
            if not signals.requested:
                raise
    if signals.requested:  # every worker stopped between trainings
        raise KeyboardInterrupt(f"{signals.requested}; finished trainings are kept, rerun "
                                "the same command to continue")
    return [results[index] for index in range(len(tasks))]


_WORKER: dict[str, Setup] = {}  # the set-up of a worker process


def _worker_start(settings: Comparison, out: Path, threads: int) -> None:
    from kdsearch.numerics import set_threads
    from kdsearch.signals import tie_to_parent

    tie_to_parent()
    set_threads(threads)
    _WORKER["setup"] = _setup(settings, out)


def _worker_train(task: tuple[Candidate, int]) -> dict:
    return _train(_WORKER["setup"], *task)


def _train(setup: Setup, candidate: Candidate, seed: int) -> dict:
    """Train ``candidate`` from scratch with ``seed`` (or reuse the finished run)."""
    from kdsearch.distill.stages import stage_changes

    config = setup.train.replace(seed=seed)
    summary, _ = run_step(setup.out / "train" / candidate.folder / f"seed{seed}",
                          partial(_train_run, setup, candidate, config), stage_changes(config),
                          note=partial(_note, setup.settings), made="trained",
                          label=f"{candidate.kind} {candidate.student}, seed {config.seed}")
    return summary


def _train_run(setup: Setup, candidate: Candidate, config, run: Path) -> dict:
    from kdsearch.distill import build_method, get_method, train

    settings = setup.settings
    torch.manual_seed(config.seed)  # the student's initialisation
    student = candidate.build(setup.dataset)
    if settings.init == "inherit" and candidate.weights is not None:
        load_weights(student, candidate.weights, candidate.student)
    teacher = setup.teacher if get_method(settings.method).needs_teacher else None
    method = build_method(settings.method, student, teacher, input_size=setup.dataset.input_size)
    info = {"student": candidate.student, "kind": candidate.kind, "teacher": settings.teacher,
            "teacher_weights": settings.teacher_weights,
            "init": "inherited" if settings.init == "inherit" and candidate.weights else "fresh"}
    return train(method, setup.dataset, config, run, resume=True, quiet=settings.quiet,
                 info=info, brief=True)  # many trainings: their result lines only


# -- report -----------------------------------------------------------------------------------
def _write_report(setup: Setup, rows: list[dict]) -> None:
    settings, out = setup.settings, setup.out
    write_text(out / "comparison.csv", csv_text(rows))
    markdown = markdown_report(setup, rows)
    write_text(out / "comparison.md", markdown)
    title = (f"{settings.teacher} on {setup.dataset.name}: {settings.method}, "
             f"{plural(settings.epochs, 'epoch')}, {plural(settings.seeds, 'seed')}")
    draw_pareto(pareto_data(rows, title, setup.teacher_info), out / "comparison.png")
    if not settings.quiet:
        print(markdown)
        print(f"wrote {out}/comparison.csv, comparison.md, comparison.png")


def _note(settings: Comparison, text: str) -> None:
    if not settings.quiet:
        print(text, flush=True)
