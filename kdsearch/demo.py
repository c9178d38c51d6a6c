"""``kdsearch demo``: the whole story on the embedded digits data, on CPU, in minutes.

It is ``kdsearch run --config search_spaces/pipeline_demo.yaml``:

1. train a teacher (``digits_resnet14``) with cross-entropy;
2. search students inside it at two budgets and distil each from scratch with Hinton KD;
3. compare: search a student at the MACs of the hand-designed ``digits_resnet8`` and train
   both with the same KD recipe (``compare/comparison.csv``, ``comparison.md``);
4. draw the figures of the whole run directory (``figures/``);
5. print (and write ``results.md``/``results.json``) a table: MACs, params, test accuracy.

Each step is skipped when its outputs exist, so an interrupted demo continues where it
stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdsearch.pipeline import check_config, load_config, results_table, run_pipeline
from kdsearch.pipeline.report import headline
from kdsearch.presets import search_spaces_dir

DEMO_CONFIG = "pipeline_demo.yaml"


def demo_config() -> dict[str, Any]:
    """The demo's pipeline config (``search_spaces/pipeline_demo.yaml``), as a mapping."""
    return load_config(search_spaces_dir() / DEMO_CONFIG)


def run_demo(out_dir: str | Path, quiet: bool = False,
             config: dict[str, Any] | None = None, threads: int | None = None
             ) -> dict[str, Any]:
    """Run (or continue) the demo into ``out_dir``; print the table; return the results
    (see :func:`~kdsearch.pipeline.run_pipeline`). ``config`` replaces the demo's config;
    ``threads`` its ``threads: 1``."""
    config = config if config is not None else demo_config()
    results = run_pipeline(config, out_dir, quiet=quiet, threads=threads)
    print("\n" + results_table(results) + "\n" + describe(check_config(config)))
    out = Path(results["out"])
    if results["comparison"]:
        print(headline(results))
    print(f"table: {out / 'results.md'}")
    if results["comparison"]:
        print(f"comparison: {out / 'compare' / 'comparison.md'}, "
              f"{out / 'compare' / 'comparison.png'}")
    if results["figures"]:
        print(f"figures: {out / 'figures'}")
    return results


def describe(config: dict[str, Any]) -> str:
    """What the table's numbers are: the schedules, the recipe, the units."""
    teacher, distill = config["teacher"], config["distill"]
    stages = ", then ".join(
        f"{stage['method']} {stage.get('epochs', distill['settings'].get('epochs'))} epochs"
        for stage in distill["stages"])
    compare = config["compare"]
    versus = (f" The [compare] rows: {', '.join(compare['against'])} and a student searched "
              f"at its MACs, trained the same way over {compare.get('seeds', 3)} seed(s) "
              "(compare/comparison.md)." if compare else "")
    return (f"\nTeacher {teacher['model']} trained {teacher['train'].get('epochs')} epochs (CE); "
            f"searched students ({config['search']['settings'].get('steps', 'preset')} search "
            f"steps each) trained from scratch with {stages}.{versus} MACs: conv, linear and "
            f"matmul per sample. Accuracy: {config['dataset']['name']} test split.\n")
