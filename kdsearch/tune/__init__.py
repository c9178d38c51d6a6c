"""``kdsearch tune``: an Optuna study over search and distillation hyper-parameters.

>>> from kdsearch.tune import run_tune
>>> result = run_tune("search_spaces/tune_digits.yaml", trials=3)  # doctest: +SKIP
>>> result["front"]  # the Pareto front (or the best trial): accuracy, MACs, parameters

The space format is in :mod:`kdsearch.tune.space`; storage, heartbeats and retries of
crashed workers' trials in :mod:`kdsearch.tune.study`; output files in
:mod:`kdsearch.tune.run`. Only :mod:`kdsearch.tune.study` imports optuna, inside functions.
"""

from kdsearch.tune.run import TuneInterrupted, front_table, run_tune
from kdsearch.tune.space import Param, TuneSpace, check_space, load_space
from kdsearch.tune.study import fail_stale_trials, open_storage, open_study

__all__ = [
    "Param",
    "TuneInterrupted",
    "TuneSpace",
    "check_space",
    "fail_stale_trials",
    "front_table",
    "load_space",
    "open_storage",
    "open_study",
    "run_tune",
]
