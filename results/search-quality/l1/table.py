"""l1 against fisher at one pair, protocol (b): the last-epoch test accuracy of each seed.

Reads the l1 runs from runs/search-quality/l1/PAIR (made by run.sh), the fisher runs from
the committed ../floor/PAIR/state/b (the same constraints, schedule and seeds) and the
hand-designed PAIR's from the run directory. Prints a markdown table and Welch's t-test.
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
