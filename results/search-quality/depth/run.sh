#!/usr/bin/env bash
# Depth only: resnet56 (results/teachers/resnet56-cifar100) searched with whole blocks as the
# only units (search_spaces/resnet_cifar_depth.yaml: every channel kept) at the MACs of
# resnet20, against 3 random depth allocations (random blocks under the same preset, landed
# by the same selection code) and the hand-designed resnet20, protocol (b) as in ../run.sh:
# KD from scratch, 10 epochs on the seeded 10,000-image subset, cosine lr from 0.05, 2 seeds.
# The hand-designed resnet20's trainings are protocol (b)'s own (copied from state/b); the
# search, the controls and the trainings carried over in state/depth are skipped.
# Usage (from the repository root):
#   bash results/search-quality/depth/run.sh [DATA_DIR] [THREADS] [JOBS]
set -euo pipefail
data=${1:-../shared/data}
threads=${2:-1}
jobs=${3:-1}
out=runs/search-quality/depth
if [ ! -d "$out" ]; then
  mkdir -p "$out/train"
  cp -r results/search-quality/state/b/teacher "$out/"
  cp -r results/search-quality/state/b/train/hand-designed_resnet20 "$out/train/"
  cp -r results/search-quality/state/depth/. "$out/"
fi
kdsearch compare --teacher resnet56 --teacher-weights results/teachers/resnet56-cifar100/teacher.pt \
  --dataset cifar100 --data-dir "$data" --no-download --subset 10000 --against resnet20 \
  --method kd --seeds 3 --search-steps 781 --preset search_spaces/resnet_cifar_depth.yaml \
  --baselines random --random-draws 3 --init fresh --epochs 10 --lr 0.05 --schedule cosine \
  --threads "$threads" --jobs "$jobs" --quiet --out "$out"
cp "$out"/comparison.{md,csv,png} results/search-quality/depth/
cp "$out/search/like_resnet20/summary.json" results/search-quality/depth/search_summary.json
