"""``kdsearch demo``: the whole story on the embedded digits data, on CPU."""

from __future__ import annotations

import argparse

from kdsearch.cli.registry import register_command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run; the default anyway: finished steps "
                             "are skipped and the interrupted one resumes")


def run(args: argparse.Namespace) -> int:
    from kdsearch.demo import run_demo

    run_demo(args.out, threads=args.threads)
    return 0


register_command("demo", "train a digits teacher, search students, distil, compare",
                 configure, run)
