"""l1 against fisher at one pair, protocol (b): the last-epoch test accuracy of each seed.

Reads the l1 runs from runs/search-quality/l1/PAIR (made by run.sh), the fisher runs from
the committed ../floor/PAIR/state/b (the same constraints, schedule and seeds) and the
hand-designed PAIR's from the run directory. Prints a markdown table and Welch's t-test;
then the controls on seeds 0-1: the 5 random subgraphs cut under the same constraints
(channels and blocks, so they sample depth; ../floor/PAIR/state/b, a cut depends on the
constraints, the budget and the draw, not on the selector), tested at the level of draws
(each draw's mean over the seeds against the searched student's: a one-sample t-test,
df = draws - 1, and its rank), and L1, uniform and DepGraph (cut without the floor, as
compare cuts controls that remove no blocks: the pair's committed runs).
Usage: python3 results/search-quality/l1/table.py PAIR
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from scipy import stats

pair = sys.argv[1]
runs = Path("runs/search-quality/l1") / pair / "train"
fisher = Path("results/search-quality/floor") / pair / "state/b/train"
own = Path("results/search-quality") / {"resnet20": "state", "resnet8": "resnet8/state"}[pair]


def accuracies(folder: Path) -> dict[int, float]:
    found = {}
    for summary in sorted(folder.glob("seed*/summary.json")):
        found[int(summary.parent.name[4:])] = json.loads(summary.read_text())["last_test_acc"]
    return found


rows = {"l1": accuracies(runs / f"searched_like_{pair}"),
        "fisher": accuracies(fisher / f"searched_like_{pair}"),
        f"hand-designed {pair}": accuracies(runs / f"hand-designed_{pair}")}
seeds = sorted(set.intersection(*(set(r) for r in rows.values())))
print(f"| student (resnet56 searched at {pair}'s MACs) | "
      + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |")
print("|---|" + "---|" * (len(seeds) + 1))
for name, accs in rows.items():
    values = [accs[s] for s in seeds]
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values)
          + f" | {statistics.mean(values):.2f} ± {spread:.2f} |")
if len(seeds) > 1:
    for other in ("fisher", f"hand-designed {pair}"):
        a, b = [rows["l1"][s] for s in seeds], [rows[other][s] for s in seeds]
        test = stats.ttest_ind(a, b, equal_var=False)
        print(f"\nl1 - {other}: {statistics.mean(a) - statistics.mean(b):+.2f} points, Welch "
              f"p = {test.pvalue:.3f} ({len(seeds)} seeds each)")


searched = [rows["l1"][s] for s in (0, 1)]
draws = [statistics.mean(accuracies(d).values())
         for d in sorted(fisher.glob(f"random_like_{pair}_draw*"))]
level = statistics.mean(searched)
test = stats.ttest_1samp(draws, level)
rank = 1 + sum(d > level for d in draws)
print(f"\nControls, seeds 0-1 (l1 {level:.2f}):\n")
print("| control | mean ± std | l1 - control |")
print("|---|---|---|")
print(f"| random, {len(draws)} draws (draw means) | {statistics.mean(draws):.2f} ± "
      f"{statistics.stdev(draws):.2f} | {level - statistics.mean(draws):+.2f} (draws: p = "
      f"{test.pvalue:.4f}, df {len(draws) - 1}; l1 ranks {rank} of {len(draws) + 1}) |")
for control in ("l1", "uniform", "depgraph"):
    accs = accuracies(own / "b/train" / f"{control}_like_{pair}")
    values = [accs[s] for s in (0, 1)]
    print(f"| {control} (pruning) | {statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
          f" | {level - statistics.mean(values):+.2f} |")
