#!/usr/bin/env bash
# The accuracy check of the CPU fast path: the same short schedule in float32 (--no-amp) and
# in bf16 + channels-last (the default on CPUs with native bf16), 2 seeds each.
# resnet20 trained with cross-entropy on a seeded 10,000-image subset of CIFAR-100, 5 epochs,
# cosine lr from 0.05, batch 64, tested on the whole 10,000-image test split, one thread.
# Usage (from the repository root): bash results/bench/accuracy.sh [DATA_DIR]
set -euo pipefail
data=${1:-../shared/data}
out=runs/bench-accuracy
for seed in 0 1; do
  for numerics in fast float32; do
    flag=$([ "$numerics" = float32 ] && echo --no-amp || true)
    kdsearch teacher --model resnet20 --dataset cifar100 --data-dir "$data" --no-download \
      --subset 10000 --epochs 5 --schedule cosine --eval-every 5 --seed "$seed" --threads 1 \
      $flag --quiet --resume --out "$out/$numerics-seed$seed"
  done
done
python - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
from scipy.stats import ttest_ind
out = Path(sys.argv[1])
rows = {}
for numerics in ("fast", "float32"):
    runs = [json.loads((out / f"{numerics}-seed{s}" / "summary.json").read_text()) for s in (0, 1)]
    rows[numerics] = runs
    accs = [r["last_test_acc"] for r in runs]
    speed = statistics.mean(r["images_per_s"] for r in runs)
    print(f"{runs[0]['numerics']:>18}: test accuracy {accs} (mean {statistics.mean(accs):.2f}), "
          f"{speed:.0f} train img/s, {runs[0]['threads']} thread")
a = [r["last_test_acc"] for r in rows["fast"]]
b = [r["last_test_acc"] for r in rows["float32"]]
print(f"fast - float32: {statistics.mean(a) - statistics.mean(b):+.2f} points, Welch p = "
      f"{ttest_ind(a, b, equal_var=False).pvalue:.3g}")
PY
