#!/usr/bin/env bash
# The default search with a width floor (preset.yaml: search_spaces/resnet_cifar.yaml plus
# min_fraction 0.5, every channel group keeps at least half its channels): resnet56
# (results/teachers/resnet56-cifar100) searched at the MACs of resnet20, against the
# hand-designed resnet20 and DRAWS random subgraphs under the same constraints (0: none),
# protocol (b) exactly as ../run.sh: KD from scratch, 10 epochs on the seeded 10,000-image
# subset, cosine lr from 0.05, batch 64, seeds 0 .. SEEDS-1. resnet20's runs are carried
# in from ../state/b and ../seeds/resnet20/state (seeds 0-4).
# Usage (from the repository root):
#   bash results/search-quality/floor/run.sh SEEDS DRAWS [DATA_DIR] [THREADS] [JOBS]
set -euo pipefail
seeds=${1:?usage: run.sh SEEDS DRAWS [DATA_DIR] [THREADS] [JOBS]}
draws=${2:?usage: run.sh SEEDS DRAWS [DATA_DIR] [THREADS] [JOBS]}
data=${3:-../shared/data}
threads=${4:-1}
jobs=${5:-1}
sq=results/search-quality
here=$sq/floor
out=runs/search-quality/floor
if [ ! -d "$out" ]; then
  mkdir -p "$out/train"
  cp -r $sq/state/b/teacher "$out/"
  cp -r $sq/state/b/train/hand-designed_resnet20 "$out/train/"
  cp -r $sq/seeds/resnet20/state/train/hand-designed_resnet20/. "$out/train/hand-designed_resnet20/"
  if [ -d "$here/state" ]; then cp -r "$here/state/." "$out/"; fi
fi
baselines=()
if [ "$draws" -gt 0 ]; then baselines=(--baselines random --random-draws "$draws"); fi
kdsearch compare --teacher resnet56 --teacher-weights results/teachers/resnet56-cifar100/teacher.pt \
  --dataset cifar100 --data-dir "$data" --no-download --subset 10000 --against resnet20 \
  --method kd --seeds "$seeds" --search-steps 781 --preset $here/preset.yaml "${baselines[@]}" \
  --init fresh --epochs 10 --lr 0.05 --schedule cosine --threads "$threads" --jobs "$jobs" \
  --quiet --out "$out"
cp "$out"/comparison.{md,csv,png} "$here/"
cp "$out/search/like_resnet20/summary.json" "$here/search_summary.json"
