"""``kdsearch run``: the whole pipeline from one config file, into one run directory."""

from __future__ import annotations

import argparse

from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Run teacher (train or load) -> search (one student per budget) -> distill (a method or
refinement stages) -> compare (searched vs hand-designed students) -> show (figures),
every step writing into one run directory and skipped when its outputs exist: running the
same command again continues where it stopped.

The config (YAML): dataset, teacher {model, weights?, train?}, search {budgets, preset?,
steps?, constraints?, ...}, distill {method, options?, epochs?, stages?, init?},
compare {against, seeds?, epochs?, ...}?, show, seed, device, out. See kdsearch.pipeline
for every key. Written to the run directory: config.json, teacher/, search/BUDGET/,
distill/BUDGET/, compare/, figures/, results.json and results.md (the table printed)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="pipeline config (YAML)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: the config's out)")
    parser.add_argument("--quiet", action="store_true", help="print only the result table")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run; the default anyway: finished steps "
                             "are skipped and the interrupted one resumes")


def run(args: argparse.Namespace) -> int:
    from kdsearch.pipeline import results_table, run_pipeline

    results = run_pipeline(args.config, args.out, quiet=args.quiet, threads=args.threads)
    print(results_table(results))
    print(f"run directory: {results['out']}")
    return 0


register_command("run", "teacher -> search -> distill -> compare -> show, from one config",
                 configure, run, DESCRIPTION)
