#!/usr/bin/env bash
# The second pair: resnet56 (results/teachers/resnet56-cifar100) searched at the MACs of
# resnet8, against the same controls as ../run.sh (5 random subgraphs, uniform width
# scaling, L1, DepGraph) and the hand-designed resnet8, both protocols, the same schedules:
#   (b) KD from scratch, 10 epochs on the seeded 10,000-image subset, cosine lr from 0.05;
#   (a) from the weights each kept, KD fine-tune 2 epochs, cosine lr from 0.01;
# KD (T=4), batch 64, the whole 10,000-image test split, 2 seeds, 781 search steps.
# The teacher's evaluation is protocol (b)'s of ../run.sh (copied from ../state/b); finished
# runs are skipped: rerun to continue.
# Usage (from the repository root):
#   bash results/search-quality/resnet8/run.sh [DATA_DIR] [THREADS] [JOBS]
set -euo pipefail
data=${1:-../shared/data}
threads=${2:-1}
jobs=${3:-1}
here=results/search-quality/resnet8
out=runs/search-quality/resnet8
common=(--teacher resnet56 --teacher-weights results/teachers/resnet56-cifar100/teacher.pt
        --dataset cifar100 --data-dir "$data" --no-download --subset 10000 --against resnet8
        --method kd --seeds 2 --baselines l1,random,uniform,depgraph --random-draws 5
        --search-steps 781 --preset results/search-quality/preset.yaml  # no width floor
        --threads "$threads" --jobs "$jobs" --quiet)
for protocol in a b; do
  if [ -d "$here/state/$protocol" ] && [ ! -d "$out/$protocol" ]; then
    mkdir -p "$out" && cp -r "$here/state/$protocol" "$out/$protocol"
  fi
done
if [ ! -d "$out/b/teacher" ]; then
  mkdir -p "$out/b" && cp -r results/search-quality/state/b/teacher "$out/b/"
fi
kdsearch compare "${common[@]}" --init fresh --epochs 10 --lr 0.05 --schedule cosine --out "$out/b"
mkdir -p "$out/a"
for part in teacher search controls; do
  [ -e "$out/a/$part" ] || cp -r "$out/b/$part" "$out/a/"
done
kdsearch compare "${common[@]}" --init inherit --epochs 2 --lr 0.01 --schedule cosine --out "$out/a"
for protocol in a b; do
  mkdir -p "$here/$protocol"
  cp "$out/$protocol"/comparison.{md,csv,png} "$here/$protocol/"
done
cp "$out/b/search/like_resnet8/summary.json" "$here/search_summary.json"
