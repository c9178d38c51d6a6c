#!/usr/bin/env bash
# Searched vs hand-designed student on CIFAR-100 at resnet20's MACs, inside the resnet56
# teacher trained by results/search-cifar100/run.sh, with the L1 pruning baseline.
# CPU schedule (said plainly): every student trains 1 epoch on a 5,000-image subset of the
# training split, 2 seeds, KD; test accuracy on the full 10,000-image test split.
# Usage: bash results/compare-cifar100/run.sh [TEACHER_WEIGHTS] [OUT]
set -euo pipefail
weights=${1:-runs/search-cifar100/teacher/teacher.pt}
out=${2:-runs/compare-cifar100}
export OMP_NUM_THREADS=1
kdsearch compare --teacher resnet56 --teacher-weights "$weights" --dataset cifar100 \
    --data-dir ../shared/data --subset 5000 --against resnet20 --method kd --seeds 2 \
    --epochs 1 --search-steps 50 --pruning-baseline --out "$out" --quiet
kdsearch show "$out"
