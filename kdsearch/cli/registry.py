"""Registry of subcommands: each module declares its parser and its action together."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from kdsearch.registry import Registry


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    description: str = ""
    multi_process: bool = False  # may run as several processes under torchrun


COMMANDS: Registry[Command] = Registry("command", builtins="kdsearch.cli")  # its modules


def register_command(name: str, help: str, configure, run, description: str = "",
                     multi_process: bool = False) -> None:
    """Add subcommand ``name``: ``configure(parser)`` adds its arguments, ``run(args)`` acts;
    ``multi_process``: it trains with DDP when started by torchrun."""
    COMMANDS.register(name)(Command(help, configure, run, description, multi_process))
