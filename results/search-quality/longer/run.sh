#!/usr/bin/env bash
# Is the searched student's gap to resnet20 in protocol (b) a property of the short
# schedule? The same comparison as ../run.sh's protocol (b) (KD from the trained resnet56,
# from scratch, the seeded 10,000-image CIFAR-100 subset, cosine lr from 0.05, batch 64,
# seeds 0 and 1, the same searched student from ../state/b) with twice the epochs: 20.
# Usage (from the repository root):
#   bash results/search-quality/longer/run.sh [DATA_DIR] [THREADS] [JOBS] [EPOCHS]
set -euo pipefail
data=${1:-../shared/data}
threads=${2:-1}
jobs=${3:-1}
epochs=${4:-20}
here=results/search-quality/longer
out=runs/search-quality/longer-$epochs
if [ ! -d "$out" ]; then
  mkdir -p "$out"
  cp -r results/search-quality/state/b/teacher results/search-quality/state/b/search "$out/"
  [ -d "$here/state-$epochs" ] && cp -r "$here/state-$epochs/." "$out/"
fi
kdsearch compare --teacher resnet56 --teacher-weights results/teachers/resnet56-cifar100/teacher.pt \
  --dataset cifar100 --data-dir "$data" --no-download --subset 10000 --against resnet20 \
  --method kd --seeds 2 --search-steps 781 --preset results/search-quality/preset.yaml \
  --init fresh --epochs "$epochs" --lr 0.05 \
  --schedule cosine --threads "$threads" --jobs "$jobs" --quiet --out "$out"
mkdir -p "$here/$epochs"
cp "$out"/comparison.{md,csv,png} "$here/$epochs/"
