"""``kdsearch teacher``: train a model on the labels alone (method ``ce``), to distil later."""

from __future__ import annotations

import argparse

import torch

from kdsearch.cli.common import MODEL_HELP, add_data_args, dataset_from_args
from kdsearch.cli.registry import register_command
from kdsearch.cli.train import OUTPUT_HELP, add_training_args, config_from_args
from kdsearch.distill.method import build_method
from kdsearch.distill.trainer import refuse_finished, train
from kdsearch.models.pretrained import pretrained_model
from kdsearch.student.resolve import model_for_dataset

WEIGHTS = "teacher.pt"  # what train(role="teacher") writes

DESCRIPTION = f"""\
Train MODEL with cross-entropy on a dataset (the teacher for kdsearch search / train).
Defaults are the CIFAR-100 recipe: SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch
64, 240 epochs, lr x0.1 after epochs 150/180/210 (scaled proportionally for --epochs).

With --pretrained, MODEL (torchvision:NAME) starts from torchvision's published weights
(read from torchvision's cache, $TORCH_HOME/hub/checkpoints, downloaded there when absent)
with a new classifier for the dataset's classes: a fine-tuning, for which a smaller
--lr (e.g. 0.01), fewer --epochs and --schedule cosine suit better than the defaults.

{OUTPUT_HELP.format(weights=WEIGHTS)}
Use it with: kdsearch train --teacher MODEL --teacher-weights OUT/{WEIGHTS} ..."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help=MODEL_HELP + ", built for the dataset's classes")
    parser.add_argument("--pretrained", action="store_true",
                        help="fine-tune torchvision's published weights of a torchvision:NAME "
                             "model, with a new head for the dataset's classes")
    add_data_args(parser, default=None)
    add_training_args(parser)


def run(args: argparse.Namespace) -> int:
    refuse_finished(args.out)  # before the data loads
    dataset = dataset_from_args(args)
    torch.manual_seed(args.seed)  # model initialisation (with --pretrained: the new head)
    if args.pretrained:
        model = pretrained_model(args.model, dataset.num_classes, dataset.input_size[0])
    else:
        model = model_for_dataset(args.model, None, dataset, "model")
    method = build_method("ce", model, None, {}, dataset.input_size)
    info = {"model": args.model, **({"pretrained": "torchvision"} if args.pretrained else {})}
    train(method, dataset, config_from_args(args), args.out, resume=args.resume,
          quiet=args.quiet, role="teacher", info=info)
    return 0


register_command("teacher", "train a teacher with cross-entropy", configure, run, DESCRIPTION,
                 multi_process=True)
