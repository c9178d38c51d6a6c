"""``kdsearch tune``: an Optuna study over search and distillation hyper-parameters."""

from __future__ import annotations

import argparse

from kdsearch.cli.common import positive_int
from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Tune search and distillation hyper-parameters with Optuna. Each trial runs the pipeline
(kdsearch run: teacher -> search -> distill, at one budget) in its own folder and reports
the student's test accuracy, and its MACs with objectives: [accuracy, macs].

The space (YAML): base (a pipeline config or its path), params (dotted keys of the base,
each {type: float|int, low, high, log?, step?} or {type: categorical, choices}; 'budget'
sets search.budgets), objectives ([accuracy] or [accuracy, macs]), accuracy (last|best),
sampler (tpe|random|nsga2), study, storage, trials_dir, out.

--trials N runs N more trials in this worker: the same --storage and --study continue the
study. --total-trials M stops every worker once the study holds M trials (complete, pruned,
failed, running or waiting; a failed trial that was queued again counts once): start any
number of workers with the same --total-trials M and they run M trials together, no trial
lost or run twice. With both, a worker stops at whichever comes first.

Workers share a study through one --storage and --study: the default
sqlite:///OUT/study.db serves workers on one machine (writes wait up to 60 s for each
other); a PostgreSQL URL serves several machines. A trial of a crashed worker (stale
heartbeat) is failed and queued again. SIGINT or SIGTERM (Ctrl-C, kill) fails the running
trial and queues it again at once, prints one line and exits with code 130; the next
invocation continues it in its folder. Written to OUT: trials.csv, pareto.json, pareto.csv,
trials/trial_N/."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="tune space (YAML)")
    parser.add_argument("--trials", type=positive_int, metavar="N",
                        help="trials to run in this invocation (this worker)")
    parser.add_argument("--total-trials", type=positive_int, metavar="M",
                        help="stop once the study holds M trials, every worker's counted")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna RDB URL (default: sqlite:///OUT/study.db)")
    parser.add_argument("--study", metavar="NAME", help="study name (default: the space's)")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: the space's)")
    parser.add_argument("--quiet", action="store_true", help="print only the result")


def run(args: argparse.Namespace) -> int:
    from kdsearch.errors import KdsearchError
    from kdsearch.tune import front_table, run_tune

    if args.trials is None and args.total_trials is None:
        raise KdsearchError("tune: give --trials N (this worker) or --total-trials M (the "
                            "study), or both")
    result = run_tune(args.config, args.trials, storage=args.storage, study=args.study,
                      out_dir=args.out, quiet=args.quiet, total_trials=args.total_trials)
    print(front_table(result))
    return 0


register_command("tune", "tune search and distillation hyper-parameters (Optuna)",
                 configure, run, DESCRIPTION)
