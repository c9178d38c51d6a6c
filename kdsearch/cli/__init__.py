"""The ``kdsearch`` command line.

Each subcommand lives in its own module and registers itself with :func:`command`. User
errors (:class:`~kdsearch.errors.KdsearchError`), errors the system reports (a full disk, a
denied permission) and running out of memory print one line and exit with code 2;
``KDSEARCH_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from kdsearch import __version__
from kdsearch.cli.common import add_threads_arg
from kdsearch.cli.registry import COMMANDS
from kdsearch.distill.distributed import launched, shutdown
from kdsearch.errors import KdsearchError, first_line

NO_COMPUTE = ("show",)  # every other command takes --threads

DESCRIPTION = """\
Find a small student network inside a large teacher network and distil it.

Numbers kdsearch prints, per input sample: MACs = multiply-accumulates of convolutions,
linear layers and matrix products, attention's included (what KD papers call FLOPs and
torchvision's tables GFLOPS); FLOPs = what torch.utils.flop_counter counts (2 per MAC);
params = learnable parameter elements (BatchNorm buffers excluded)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdsearch", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kdsearch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        cmd = COMMANDS.get(name)
        sub = subparsers.add_parser(
            name, help=cmd.help, description=cmd.description or cmd.help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.configure(sub)
        if name not in NO_COMPUTE:
            add_threads_arg(sub)
        sub.set_defaults(run=cmd.run, multi_process=cmd.multi_process)
    return parser


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings():  # the caller's warning settings come back afterwards
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
        warnings.showwarning = one_line_warning
        return run_main(argv)


def run_main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(negative_values_attached(sys.argv[1:] if argv is None else argv))
    try:
        if not args.multi_process and launched():
            raise KdsearchError(f"kdsearch {args.command} runs as one process; under torchrun "
                                "only train and teacher run (with DistributedDataParallel)")
        if name_computes(args):
            from kdsearch.numerics import set_threads

            set_threads(args.threads)  # a pipeline config's `threads` may change it later
        code = args.run(args) or 0
        if launched():
            shutdown()  # every process finished: leave the process group together
        return code
    except KdsearchError as err:
        return fail(str(err))
    except BrokenPipeError:  # `kdsearch graph ... | head`: the reader left, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except OSError as err:  # the machine's answer (disk full, permission): one line too
        return fail(os_error_text(err))
    except RuntimeError as err:
        if not is_out_of_memory(err):
            raise
        return fail(f"out of memory ({first_line(err)}); lower --batch-size or free the "
                    "device, then rerun with --resume where the command has it: the last "
                    "checkpoint is kept")
    except KeyboardInterrupt as err:  # the search, training and tuning checkpoint first
        detail = f": {err}" if str(err) else ""
        print(f"kdsearch: interrupted{detail}", file=sys.stderr, flush=True)
        return 130


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as the command line shows it: ``kdsearch: warning: MESSAGE``, one line, no
    source line (those are for the Python API, where ``warnings`` keeps its own format)."""
    print(f"kdsearch: warning: {first_line(str(message))}", file=file or sys.stderr,
          flush=True)


def negative_values_attached(argv: list[str]) -> list[str]:
    """``--budget -5M`` -> ``--budget=-5M``: argparse takes a value starting with ``-`` for
    an option, so the user would read "expected one argument" instead of what is wrong."""
    fixed, index = [], 0
    while index < len(argv):
        item = argv[index]
        following = argv[index + 1] if index + 1 < len(argv) else None
        if (item.startswith("--") and "=" not in item and following is not None
                and following[:1] == "-" and following[1:2].isdigit()):
            fixed.append(f"{item}={following}")
            index += 2
        else:
            fixed.append(item)
            index += 1
    return fixed


def name_computes(args: argparse.Namespace) -> bool:
    return args.command not in NO_COMPUTE


def fail(message: str) -> int:
    """Print a user-facing error on one line and return exit code 2 (``KDSEARCH_DEBUG=1``
    re-raises instead, for the whole traceback)."""
    if os.environ.get("KDSEARCH_DEBUG"):
        raise
    print(f"kdsearch: error: {message}", file=sys.stderr)
    return 2


def os_error_text(err: OSError) -> str:
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or first_line(err)}"


def is_out_of_memory(err: RuntimeError) -> bool:
    import torch

    text = str(err)
    return (isinstance(err, torch.cuda.OutOfMemoryError)
            or "out of memory" in text or "not enough memory" in text)


if __name__ == "__main__":
    sys.exit(main())
