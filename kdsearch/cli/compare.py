"""``kdsearch compare``: searched students against hand-designed ones at the same MACs."""

from __future__ import annotations

import argparse

from kdsearch.cli.common import (
    MODEL_HELP,
    TEACHER_WEIGHTS_HELP,
    add_data_args,
    add_numerics_args,
    data_options,
    positive_int,
)
from kdsearch.cli.registry import register_command
from kdsearch.distill.config import SCHEDULES

DESCRIPTION = """\
For each hand-designed student in --against, search a student inside the teacher at its
MAC budget (like:NAME), then train both with the same recipe and method over the same
seeds (--seeds N: seeds --seed .. --seed+N-1). --baselines adds controls cut from the
teacher at the same budget and trained the same way: l1 (filter L1 norm, channels only),
random (--random-draws random subgraphs of channels and blocks), uniform (every channel
unit scaled by one factor), depgraph (Torch-Pruning's group norm). --init inherit starts
searched and control students from the weights they kept instead of from scratch.
--budgets adds searched students at other budgets to the Pareto plot.

Writes to --out: comparison.csv (one row per kind and student: MACs, params, best- and
last-epoch test accuracy as mean and sample std over seeds, the difference to the
hand-designed student at the same budget and its two-sided Welch t-test p-value, the
per-seed accuracies), comparison.md (the same table and exactly what was compared) and
comparison.png (accuracy against MACs). Every search and training run has its own folder
(search/, controls/, train/) and is skipped when its summary.json exists: run the same
command again to continue an interrupted comparison. SIGINT/SIGTERM stop every training
under way after its current step (with --jobs, in every worker process) with its last
epoch in checkpoint.pt, and exit with code 130."""


def _names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, metavar="MODEL",
                        help=MODEL_HELP)
    parser.add_argument("--teacher-weights", metavar="PATH",
                        help=TEACHER_WEIGHTS_HELP + " (without: a warning, untrained teacher)")
    add_data_args(parser, default=None)
    parser.add_argument("--against", required=True, type=_names, metavar="MODEL,...",
                        help="hand-designed students (zoo names), e.g. resnet20,wrn_16_2")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--method", default="kd", help="distillation method (default kd)")
    parser.add_argument("--seeds", type=positive_int, default=3, metavar="N",
                        help="training runs per student, one per seed (default 3)")
    parser.add_argument("--epochs", type=positive_int, default=240, metavar="N",
                        help="training epochs (default 240, the CIFAR recipe)")
    parser.add_argument("--lr", type=float, default=None, help="initial SGD lr (default 0.05)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="step",
                        help="lr schedule: step (the recipe's milestones, default) or cosine")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="training batch size (default 64)")
    parser.add_argument("--budgets", type=_names, default=(), metavar="BUDGET,...",
                        help="extra searched budgets for the Pareto plot, e.g. 0.5x,0.25x")
    parser.add_argument("--pruning-baseline", action="store_true",
                        help="the same as --baselines l1")
    parser.add_argument("--baselines", type=_names, default=(), metavar="NAME,...",
                        help="controls cut from the teacher at each budget: l1, random, "
                             "uniform, depgraph (pip install \"kdsearch[pruning]\")")
    parser.add_argument("--students", type=_names, default=(), metavar="PATH,...",
                        help="students of your own (student.json files, or folders holding "
                             "one) trained with the same schedule and seeds, compared with "
                             "the first --against student")
    parser.add_argument("--random-draws", type=positive_int, default=5, metavar="N",
                        help="random subgraphs per budget with --baselines random (default 5)")
    parser.add_argument("--init", choices=("fresh", "inherit"), default="fresh",
                        help="fresh: train every student from scratch (protocol (b), the "
                             "default); inherit: searched and control students start from "
                             "the weights they kept (protocol (a): prune, then fine-tune)")
    parser.add_argument("--search-steps", type=positive_int, metavar="N",
                        help="search steps per budget (default: the preset's)")
    parser.add_argument("--preset", help="search preset: family name or YAML path "
                                         "(default: chosen by the teacher's family)")
    parser.add_argument("--selector", metavar="NAME",
                        help="the search's selector: l1 or fisher (default: the preset's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    add_numerics_args(parser)
    parser.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                        help="trainings at once in N worker processes, sharing --threads "
                             "(default 1; the results do not depend on it)")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run; the default anyway: finished steps "
                             "are skipped and the interrupted one resumes")


def run(args: argparse.Namespace) -> int:
    from kdsearch.compare import Comparison, run_comparison

    settings = Comparison(
        teacher=args.teacher, dataset=args.dataset, against=args.against,
        teacher_weights=args.teacher_weights, method=args.method, seeds=args.seeds,
        first_seed=args.seed, epochs=args.epochs, lr=args.lr, schedule=args.schedule,
        batch_size=args.batch_size,
        budgets=args.budgets, pruning_baseline=args.pruning_baseline,
        baselines=args.baselines, random_draws=args.random_draws, init=args.init,
        students=args.students,
        jobs=args.jobs, amp=args.amp, channels_last=args.channels_last,
        search_steps=args.search_steps, selector=args.selector, preset=args.preset,
        device=args.device,
        quiet=args.quiet, data_options=data_options(args))
    run_comparison(settings, args.out)
    return 0


register_command("compare", "compare searched and hand-designed students at equal MACs",
                 configure, run, DESCRIPTION)
