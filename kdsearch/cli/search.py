"""``kdsearch search``: find a student inside a teacher at a MAC budget."""

from __future__ import annotations

import argparse
import math
import sys

from kdsearch.cli.common import (
    MODEL_HELP,
    TEACHER_WEIGHTS_HELP,
    add_data_args,
    add_numerics_args,
    dataset_from_args,
    positive_int,
)
from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Search a student inside the teacher: gates on every channel and residual block of a copy
trained to stay close to the teacher (KL) while the MACs of the live gates follow a target
falling to the budget over the first half of the steps. The selector decides which units
go (--selector): `l1` (the default) drives gates to exact zeros with an L1 penalty
preconditioned by each gate's Fisher information, lambda set from the MAC target; `fisher`
removes units progressively, least Fisher information per MAC first. After 3/4 of the
steps the gates' own answer is the student when it lies within [97%, 100%] of the budget
(MACs of conv, linear and matmul per sample), else a ranking lands it there; the last 1/4
settles the kept weights, so that student.pt works before any retraining (its test
accuracy is printed).

Writes to --out: summary.json (teacher/student MACs and params, budget, what was removed,
the gates' own answer before the ranking, student.pt's and the teacher's test accuracy,
search time and cost), student.json (architecture spec), student.pt (weights), graph.json
(teacher topology with units), search_log.jsonl (step, KL, live and target MACs, the
selector's numbers).

search_checkpoint.pt is written every --checkpoint-every steps; SIGINT/SIGTERM writes it and
exits with code 130; run the same command with --resume to continue (the result is the same
as an uninterrupted run's). It is removed once summary.json is written."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help=MODEL_HELP)
    parser.add_argument("--teacher-weights", metavar="PATH", help=TEACHER_WEIGHTS_HELP)
    add_data_args(parser, default=None)
    parser.add_argument("--budget", required=True,
                        help="MAC budget: 41M, 1.2G, 40800000, 0.33x (of the teacher) or "
                             "like:resnet20 (a zoo model's MACs)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--steps", type=positive_int,
                        help="search steps (default: the preset's epochs of the training "
                             "split, e.g. 1 epoch = 781 steps of 64 on CIFAR)")
    parser.add_argument("--preset", help="search preset: family name or YAML path "
                                         "(default: chosen by the teacher's family)")
    parser.add_argument("--keep", action="append", default=[], metavar="PATTERN",
                        help="keep whole every unit under these module paths (fnmatch, e.g. "
                             "'layer1.*'; repeatable)")
    parser.add_argument("--min-channels", type=positive_int,
                        help="fewest channels a group may keep (default: preset)")
    parser.add_argument("--min-fraction", type=float, metavar="F",
                        help="fewest channels a group may keep, as a fraction of its width "
                             "(a width floor, 0 to 1; default: preset)")
    parser.add_argument("--channel-multiple", type=positive_int,
                        help="round kept channels to a multiple of N (default: preset)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--selector", metavar="NAME",
                        help="what decides which units go: l1 or fisher (default: the "
                             "preset's, else l1; another selector than the preset's starts "
                             "from its own default options)")
    parser.add_argument("--freeze-weights", action="store_true",
                        help="move only the gates while selecting (the weights train only "
                             "in the settling steps)")
    parser.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                        help="write search_checkpoint.pt every N steps (default: preset, 50; "
                             "also after the last step and on SIGINT/SIGTERM)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted search in --out from "
                             "search_checkpoint.pt (the same settings; the result is the same "
                             "as an uninterrupted run's)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished search in --out (refused without it)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_numerics_args(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from kdsearch.graph.units import Constraints
    from kdsearch.numerics import resolve_device
    from kdsearch.presets import from_mapping, load_preset
    from kdsearch.search.config import SearchConfig
    from kdsearch.search.select import LANDING
    from kdsearch.student.resolve import family_of, resolve_model, warn_untrained_teacher
    from kdsearch.student.run import search_student

    if args.device:
        resolve_device(args.device)  # before the data loads
    torch.manual_seed(args.seed)
    dataset = dataset_from_args(args)
    teacher = resolve_model(args.teacher, dataset.num_classes, dataset.input_size,
                            weights=args.teacher_weights).model
    warn_untrained_teacher(args.teacher, args.teacher_weights)
    constraints, config = load_preset(args.preset or family_of(args.teacher))
    if args.selector:
        config = config.overridden(selector=args.selector)
    overrides = {"steps": args.steps, "epochs": 0.0 if args.steps else None,
                 "device": args.device,
                 "checkpoint_every": args.checkpoint_every,
                 "train_weights": False if args.freeze_weights else None,
                 "amp": False if not args.amp else None,
                 "channels_last": False if not args.channels_last else None}
    config = from_mapping(SearchConfig, {k: v for k, v in overrides.items() if v is not None},
                          "command line", base=config)
    limits = {"min_channels": args.min_channels, "min_fraction": args.min_fraction,
              "channel_multiple": args.channel_multiple,
              "keep": tuple(constraints.keep) + tuple(args.keep) if args.keep else None}
    constraints = from_mapping(Constraints, {k: v for k, v in limits.items() if v is not None},
                               "command line", base=constraints)
    result = search_student(teacher, args.teacher, dataset, args.budget, config,
                            constraints, args.out, seed=args.seed, progress=not args.quiet,
                            resume=args.resume, overwrite=args.overwrite)
    _print_summary(result.summary, args.out)
    if not result.summary["budget_reached"]:
        used = math.floor(10_000 * result.summary["budget_fraction"]) / 100  # never up to 97
        print(f"kdsearch: warning: the student uses {used:.2f}%"
              f" of the budget, short of the {100 * LANDING:.0f}% aimed for: the constraints "
              "(--min-channels, --min-fraction, --channel-multiple, --keep) or whole blocks left "
              "no closer fit",
              file=sys.stderr)
    return 0


def _print_summary(summary: dict, out: str) -> None:
    print(f"wrote {out}/summary.json, student.json, student.pt, graph.json, search_log.jsonl")


register_command("search", "search a student at a MAC budget", configure, run, DESCRIPTION)
