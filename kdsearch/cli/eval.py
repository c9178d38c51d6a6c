"""``kdsearch eval``: test a model or a student spec on a dataset."""

from __future__ import annotations

import argparse
import json

from kdsearch.cli.common import (
    MODEL_HELP,
    TEACHER_WEIGHTS_HELP,
    add_data_args,
    add_numerics_args,
    dataset_from_args,
)
from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Test MODEL (with --weights) on the test split of --dataset and print: top-1 accuracy (%),
its MACs and parameters (per sample: conv, linear and matmul multiply-accumulates; learnable
elements), and with --teacher the teacher's accuracy and the mean KL(teacher || model) at
T=1 in nats per test image. No augmentation, eval mode; bf16 where the machine computes it
natively (--no-amp for float32). --json prints one JSON object. A zoo model is built for the
dataset's classes and input size; a student.json made for other ones is refused."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP + ", or a student.json")
    parser.add_argument("--weights", metavar="PATH", help="its weights (e.g. student.pt)")
    parser.add_argument("--teacher", metavar="MODEL", help="also compare with this teacher")
    parser.add_argument("--teacher-weights", metavar="PATH", help=TEACHER_WEIGHTS_HELP)
    add_data_args(parser, default=None)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    add_numerics_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    import torch

    from kdsearch.errors import KdsearchError
    from kdsearch.evaluation import evaluate
    from kdsearch.graph.counting import count_model
    from kdsearch.numerics import resolve_device
    from kdsearch.student.resolve import model_for_dataset, warn_untrained, warn_untrained_teacher

    resolve_device(args.device)  # before the data loads
    if args.teacher_weights and not args.teacher:
        raise KdsearchError("--teacher-weights needs --teacher")
    dataset = dataset_from_args(args)
    warn_untrained(args.model, args.weights, f"no --weights: {args.model} is tested with "
                   "random weights (seeded by --seed; pass the student.pt of its search or "
                   "training)")
    if args.teacher:
        warn_untrained_teacher(args.teacher, args.teacher_weights)
    torch.manual_seed(args.seed)  # the initialisation of what gets no weights
    model = model_for_dataset(args.model, args.weights, dataset, "model")
    teacher = (model_for_dataset(args.teacher, args.teacher_weights, dataset, "teacher")
               if args.teacher else None)
    result = evaluate(model, dataset, teacher=teacher, device=args.device, amp=args.amp,
                      channels_last=args.channels_last)
    counts = count_model(model, dataset.input_size)
    report = {"model": args.model, "weights": args.weights, "dataset": dataset.name,
              **result, "macs": counts.macs, "params": counts.params}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.model}: test accuracy {result['accuracy']:.2f}% on {result['images']} "
          f"{dataset.name} test images ({result['numerics']}); {counts.macs / 1e6:.2f}M MACs, "
          f"{counts.params / 1e6:.3f}M params")
    if teacher is not None:
        print(f"teacher {args.teacher}: {result['teacher_accuracy']:.2f}%; KL(teacher||model) "
              f"{result['kl_to_teacher']:.4f} nats per test image at T=1")
    return 0


register_command("eval", "test a model or student on a dataset", configure, run, DESCRIPTION)
