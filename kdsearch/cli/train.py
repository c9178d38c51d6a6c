"""``kdsearch train``: distil a teacher into a student with one method or a stages file."""

from __future__ import annotations

import argparse
import dataclasses

import torch

from kdsearch.cli.common import (
    MODEL_HELP,
    TEACHER_WEIGHTS_HELP,
    add_data_args,
    add_numerics_args,
    dataset_from_args,
    positive_int,
)
from kdsearch.cli.registry import register_command
from kdsearch.distill.chain import train_dgkd_chain
from kdsearch.distill.config import SCHEDULES, TrainConfig
from kdsearch.distill.method import build_method, get_method, method_names
from kdsearch.distill.stages import load_stages, run_stages
from kdsearch.distill.trainer import refuse_finished, train
from kdsearch.errors import KdsearchError
from kdsearch.presets import load_preset
from kdsearch.student.resolve import family_of, model_for_dataset, warn_untrained_teacher

OUTPUT_HELP = """\
Printed: one line with the setup (method, device, student size, lr schedule), then a
progress bar over epochs on a terminal (one line per epoch otherwise; nothing with
--quiet), then the best and last test accuracy. Written into --out:
  metrics.jsonl   one JSON line per epoch: epoch, loss and each named loss (epoch means),
                  lr, train_acc, test_acc (%; null when not tested), test_images (how
                  many were tested), test_subset (true on a --test-subset), epoch_time_s,
                  train_time_s, images_per_s
  checkpoint.pt   everything --resume needs (every --checkpoint-every epochs, and at the end)
  summary.json    best test accuracy (over epochs tested on the whole test split) and its
                  epoch, last-epoch accuracy, time, images/s, the network's params and
                  MACs, the numerics (bf16+channels_last or float32) and threads it ran
                  with, the method and every setting
  {weights}      the trained network's state_dict (torch.load(..., weights_only=True))
Ctrl-C (SIGINT) or SIGTERM stops after the current step, keeps the last completed epoch in
checkpoint.pt and exits with code 130; run the same command with --resume to continue.
Several GPUs: torchrun --nproc_per_node=N -m kdsearch ... trains with DistributedDataParallel;
--batch-size is the global batch (divisible by N) and the result is the one-process run's.
"""

DESCRIPTION = f"""\
Distil TEACHER into STUDENT on a dataset with one method (--method, default kd) or a
stages file (--stages). Defaults are the CIFAR-100 distillation recipe: SGD lr 0.05,
momentum 0.9, weight decay 5e-4, batch 64, 240 epochs, lr x0.1 after epochs 150/180/210
(scaled proportionally for another --epochs). Methods: {", ".join(method_names())}.

{OUTPUT_HELP.format(weights="student.pt")}
With --stages FILE, stage i runs in OUT/stage<i>_<method>/ from the previous stage's
student; finished stages are skipped on a re-run; OUT/summary.json and OUT/student.pt
hold the stages' summaries and the final student.

With --method dgkd, the DGKD chain runs: assistants (--assistants, or searched by kdsearch
at --assistant-budgets, nested: each inside the previous trained model; default 2 budgets
spaced geometrically between the teacher's and the student's MACs) are trained in turn,
each from the teacher and every larger assistant, then the student from all of them (with
stochastic guide dropping, --option keep_prob=0.75). Each run goes in OUT/<role>/ (search
runs in OUT/assistant<i>_search/); finished ones are skipped on a re-run; OUT/summary.json
and OUT/student.pt hold the chain and the final student."""


def add_training_args(parser: argparse.ArgumentParser) -> None:
    """Output, resume and every :class:`TrainConfig` setting (defaults: the CIFAR recipe)."""
    defaults = TrainConfig()
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint.pt")
    parser.add_argument("--quiet", action="store_true", help="print only warnings and errors")
    parser.add_argument("--epochs", type=positive_int, default=defaults.epochs,
                        help=f"training epochs (default {defaults.epochs})")
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size,
                        help=f"training batch size (default {defaults.batch_size})")
    parser.add_argument("--lr", type=float, default=defaults.lr,
                        help=f"initial SGD learning rate (default {defaults.lr})")
    parser.add_argument("--momentum", type=float, default=defaults.momentum,
                        help=f"SGD momentum (default {defaults.momentum})")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                        help=f"weight decay (default {defaults.weight_decay})")
    parser.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    parser.add_argument("--lr-milestones", type=_fractions, default=defaults.lr_milestones,
                        metavar="F,F,...", help="fractions of the epochs after which the lr "
                        "decays (default 0.625,0.75,0.875: 150/180/210 of 240)")
    parser.add_argument("--lr-decay", type=float, default=defaults.lr_decay,
                        help=f"lr factor at each milestone (default {defaults.lr_decay})")
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                        help="lr schedule: step (the milestones, default) or cosine (from "
                             "--lr towards 0 over the epochs; short runs)")
    parser.add_argument("--eval-batch-size", type=positive_int, default=defaults.eval_batch_size,
                        help=f"test batch size (default {defaults.eval_batch_size})")
    parser.add_argument("--eval-every", type=positive_int, default=defaults.eval_every,
                        metavar="N", help="test every N epochs (default 1; the last epoch is "
                                          "always tested on the whole test split)")
    parser.add_argument("--test-subset", type=positive_int, default=None, metavar="N",
                        help="test the epochs before the last on N seeded test images "
                             "(quick trials; the last epoch uses the whole test split)")
    parser.add_argument("--checkpoint-every", type=positive_int,
                        default=defaults.checkpoint_every, metavar="N",
                        help=f"write checkpoint.pt every N epochs (default "
                             f"{defaults.checkpoint_every}; always at the end)")
    parser.add_argument("--device", default=defaults.device,
                        help="auto (cuda if available), cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the student and teacher (slower start); for CUDA: "
                             "on the CPU it ran no faster than eager bf16 (results/bench)")
    add_numerics_args(parser)


def config_from_args(args: argparse.Namespace, method_options: dict | None = None) -> TrainConfig:
    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        weight_decay=args.weight_decay, nesterov=args.nesterov, lr_milestones=args.lr_milestones,
        lr_decay=args.lr_decay, schedule=args.schedule, eval_batch_size=args.eval_batch_size,
        eval_every=args.eval_every, test_subset=args.test_subset, seed=args.seed,
        device=args.device, checkpoint_every=args.checkpoint_every, compile=args.compile,
        amp=args.amp, channels_last=args.channels_last, method_options=method_options or {},
        cache_teacher=getattr(args, "cache_teacher", False),  # kdsearch train only
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--student", required=True, metavar="MODEL",
                        help=MODEL_HELP + ", or a student.json from the search")
    parser.add_argument("--student-weights", metavar="PATH",
                        help="initial student weights (default: fresh initialisation)")
    parser.add_argument("--teacher", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--teacher-weights", metavar="PATH", help=TEACHER_WEIGHTS_HELP)
    parser.add_argument("--method", default=None, help="distillation method (default kd)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option, e.g. --option temperature=4 (repeatable)")
    parser.add_argument("--stages", metavar="FILE", help="YAML list of stages (see above)")
    parser.add_argument("--assistants", type=_names, metavar="MODEL,...",
                        help="dgkd: the teacher assistants (zoo names, student.json), trained "
                             "in the chain; 'none' for the teacher alone (default: searched)")
    parser.add_argument("--assistant-budgets", type=_names, metavar="BUDGET,...",
                        help="dgkd: MAC budgets of the searched assistants, e.g. 0.6x,0.35x "
                             "(default: 2, geometric between teacher and student)")
    parser.add_argument("--assistant-search-steps", type=positive_int, metavar="N",
                        help="dgkd: search steps per assistant (default: the preset's)")
    parser.add_argument("--cache-teacher", action="store_true",
                        help="reuse the teacher's logits of augmented views seen in earlier "
                             "epochs (exact; for methods using only the teacher's logits, "
                             "e.g. kd; memory: images x views x classes x 4 bytes; "
                             "metrics.jsonl gains teacher_cache_hit_pct)")
    add_data_args(parser, default=None)
    add_training_args(parser)


def run(args: argparse.Namespace) -> int:
    stages = load_stages(args.stages) if args.stages else None
    if stages and (args.method or args.option):
        raise KdsearchError("--stages sets the methods and options; drop --method/--option")
    method = args.method or "kd"
    options = parse_options(args.option)
    needs_teacher = any(get_method(name).needs_teacher
                        for name in ([s.method for s in stages] if stages else [method]))
    chain = get_method(method).trains_a_chain and not stages
    if not (stages or chain):  # a stages file or a chain skips its finished runs instead
        refuse_finished(args.out)  # before the data loads
    dataset = dataset_from_args(args)
    torch.manual_seed(args.seed)  # model initialisation
    student = model_for_dataset(args.student, args.student_weights, dataset, "student")
    teacher = build_teacher(args, dataset) if needs_teacher else None
    config = config_from_args(args, options)
    info = {"student": args.student, "teacher": args.teacher,
            "teacher_weights": args.teacher_weights}
    if not chain and (args.assistants is not None or args.assistant_budgets is not None
                      or args.assistant_search_steps is not None):
        raise KdsearchError("--assistants, --assistant-budgets and --assistant-search-steps "
                            "are for --method dgkd")
    if stages:
        run_stages(stages, student, teacher, dataset, config, args.out,
                   resume=args.resume, quiet=args.quiet, info=info)
    elif chain:
        run_chain(args, student, teacher, dataset, config, info)
    else:
        built = build_method(method, student, teacher, options, dataset.input_size)
        info.update(built.run_info())  # what the method changed (a recurrent student's tying)
        train(built, dataset, config, args.out, resume=args.resume, quiet=args.quiet,
              info=info)
    return 0


def run_chain(args: argparse.Namespace, student, teacher, dataset, config, info) -> None:
    """``--method dgkd``: the DGKD chain (assistants given, or searched at budgets)."""
    assistants = args.assistants
    if assistants == ["none"]:
        assistants = []
    search_config = constraints = None
    if assistants is None:
        constraints, search_config = load_preset(family_of(args.teacher))
        if args.assistant_search_steps:  # else the preset's epochs of this run's data
            search_config = dataclasses.replace(search_config, epochs=0.0,
                                                steps=args.assistant_search_steps)
        search_config = dataclasses.replace(search_config, device=args.device)
    train_dgkd_chain(teacher, student, dataset, config, args.out, assistants,
                     args.assistant_budgets, teacher_name=args.teacher,
                     search_config=search_config, constraints=constraints,
                     resume=args.resume, quiet=args.quiet, info=info, method=args.method)


def build_teacher(args: argparse.Namespace, dataset) -> torch.nn.Module:
    """The teacher (``--teacher``, required here), warning when it has no weights."""
    if not args.teacher:
        raise KdsearchError("this method needs a teacher: pass --teacher MODEL "
                            "(and --teacher-weights PATH)")
    warn_untrained_teacher(args.teacher, args.teacher_weights)
    return model_for_dataset(args.teacher, args.teacher_weights, dataset, "teacher")


def parse_options(pairs: list[str]) -> dict[str, str]:
    """``["temperature=4"]`` -> ``{"temperature": "4"}`` (the method coerces the types)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise KdsearchError(f"--option expects KEY=VALUE, not {pair!r}")
        options[key.strip()] = value.strip()
    return options


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return names


def _fractions(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        message = f"expected fractions like 0.5,0.75, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


register_command("train", "distil a teacher into a student (kd, ce, ... or a stages file)",
                 configure, run, DESCRIPTION, multi_process=True)
