"""Do protocol (b) at CPU scale and the published 240-epoch runs rank depth allocations alike?

``python rank.py [comparison.csv]`` reads the comparison ``run.sh`` wrote, pairs each
allocation with its published accuracy (KD at resnet20's MACs, 240 epochs, exps/s1-gt-kd.txt
of the DisWOT CVPR 2023 repository; (3,3,3) there is resnet20) and prints both rankings and
their Spearman correlation (scipy.stats.spearmanr) with its exact one-sided p-value (the
share of all orderings that agree at least as well) over the allocations with a published
figure: the hand-designed resnet20 as (3,3,3) (with the (3,3,3) cut beside it) and the given
allocations.
"""

import csv
import itertools
import sys
from pathlib import Path

from scipy.stats import spearmanr

PUBLISHED = {(1, 3, 5): 72.77, (1, 1, 7): 72.36, (3, 3, 3): 70.76, (5, 3, 1): 66.97,
             (7, 1, 1): 65.39, (3, 1, 5): 72.27, (1, 5, 3): 71.91, (1, 7, 1): 69.22,
             (3, 5, 1): 68.71, (5, 1, 3): 70.45}


def allocation(row: dict) -> tuple[int, int, int] | None:
    if row["kind"] == "hand-designed" and row["student"] == "resnet20":
        return (3, 3, 3)
    if row["kind"] == "given" and row["student"].startswith("alloc_"):
        return tuple(int(d) for d in row["student"].removeprefix("alloc_").split("_"))
    return None


def main(path: str) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    print(f"{'student':<40} {'allocation':<10} {'CPU (b) best acc':>16} {'240 epochs':>10}")
    pairs = []
    for row in sorted(rows, key=lambda r: -float(r["best_acc_mean"])):
        depths = allocation(row)
        published = PUBLISHED.get(depths) if depths else None
        std = f" ± {float(row['best_acc_std']):.2f}" if row["best_acc_std"] else ""
        print(f"{row['kind'] + ' ' + row['student']:<40.40} {','.join(map(str, depths or ())):<10} "
              f"{float(row['best_acc_mean']):>9.2f}{std:<7} "
              f"{'' if published is None else f'{published:.2f}':>10}")
        if published is not None and row["kind"] == "given":
            pairs.append((float(row["best_acc_mean"]), published))
    if len(pairs) >= 3:
        cpu, full = [c for c, _ in pairs], [f for _, f in pairs]
        rho = spearmanr(cpu, full).statistic
        orders = [spearmanr(cpu, order).statistic for order in itertools.permutations(full)]
        p = sum(r >= rho - 1e-12 for r in orders) / len(orders)
        print(f"Spearman over the {len(pairs)} given allocations: {rho:+.2f} "
              f"(exact one-sided p {p:.3g})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent / "comparison.csv"))
