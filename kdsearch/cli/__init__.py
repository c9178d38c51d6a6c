"""The ``kdsearch`` command line.

Each subcommand lives in its own module and registers itself with :func:`command`. User
errors (:class:`~kdsearch.errors.KdsearchError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from kdsearch.cli.registry import COMMANDS
from kdsearch.errors import KdsearchError

COMMAND_MODULES = (
    "flops", "graph", "search", "teacher", "train", "compare", "show", "run", "tune", "demo",
)

DESCRIPTION = """\
Find a small student network inside a large teacher network and distil it.

Numbers kdsearch prints, per input sample: MACs = multiply-accumulates of conv and linear
layers (what KD papers call FLOPs); FLOPs = what torch.utils.flop_counter counts (2 per MAC
for plain CNNs); params = learnable parameter elements (BatchNorm buffers excluded)."""


def build_parser() -> argparse.ArgumentParser:
    for name in COMMAND_MODULES:
        importlib.import_module(f"kdsearch.cli.{name}")
    parser = argparse.ArgumentParser(
        prog="kdsearch", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        cmd = COMMANDS.get(name)
        sub = subparsers.add_parser(
            name, help=cmd.help, description=cmd.description or cmd.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.configure(sub)
        sub.set_defaults(run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except KdsearchError as err:
        print(f"kdsearch: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
