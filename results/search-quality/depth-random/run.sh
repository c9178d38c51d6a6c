#!/usr/bin/env bash
# The depth-only search against random depth allocations, both with the fair initialisation
# (the zoo's for every cut). resnet56 (results/teachers/resnet56-cifar100) at the MACs of
# resnet20 with whole blocks as the only units (search_spaces/resnet_cifar_depth.yaml, every
# channel kept): the searched allocation, DRAWS random allocations (random blocks under the
# same preset, landed by the same selection code; draw i with seed i) and the hand-designed
# resnet20, protocol (b) exactly as ../run.sh: KD from scratch, 10 epochs on the seeded
# 10,000-image subset, cosine lr from 0.05, batch 64, seeds 0 .. SEEDS-1.
# Carried in, not retrained: the search and draws 0-2's specs (../state/depth), the searched
# student's 5 seeds (../seeds/depth/state) and resnet20's (../state/b, ../seeds/resnet20/state).
# ../depth/ measured the same draws with PyTorch's default initialisation for the cuts.
# Usage (from the repository root):
#   bash results/search-quality/depth-random/run.sh SEEDS DRAWS [DATA_DIR] [THREADS] [JOBS]
set -euo pipefail
seeds=${1:?usage: run.sh SEEDS DRAWS [DATA_DIR] [THREADS] [JOBS]}
draws=${2:?usage: run.sh SEEDS DRAWS [DATA_DIR] [THREADS] [JOBS]}
data=${3:-../shared/data}
threads=${4:-1}
jobs=${5:-1}
sq=results/search-quality
here=$sq/depth-random
out=runs/search-quality/depth-random
if [ ! -d "$out" ]; then
  mkdir -p "$out/train"
  cp -r $sq/state/b/teacher $sq/state/depth/search $sq/state/depth/controls "$out/"
  cp -r $sq/state/b/train/hand-designed_resnet20 "$out/train/"
  cp -r $sq/seeds/resnet20/state/train/hand-designed_resnet20/. "$out/train/hand-designed_resnet20/"
  cp -r $sq/seeds/depth/state/train/searched_like_resnet20 "$out/train/"
  if [ -d "$here/state" ]; then cp -r "$here/state/." "$out/"; fi
fi
kdsearch compare --teacher resnet56 --teacher-weights results/teachers/resnet56-cifar100/teacher.pt \
  --dataset cifar100 --data-dir "$data" --no-download --subset 10000 --against resnet20 \
  --method kd --seeds "$seeds" --search-steps 781 --preset search_spaces/resnet_cifar_depth.yaml \
  --baselines random --random-draws "$draws" --init fresh --epochs 10 --lr 0.05 \
  --schedule cosine --threads "$threads" --jobs "$jobs" --quiet --out "$out"
cp "$out"/comparison.{md,csv,png} "$here/"
