#!/usr/bin/env bash
# A real search on CIFAR-100: a resnet56 teacher trained here on CPU (short schedule), and
# the student kdsearch finds inside it at the MACs of the hand-designed resnet20.
# Usage: bash results/search-cifar100/run.sh [OUT]   (run from the repository root)
set -euo pipefail
out=${1:-runs/search-cifar100}
data=../shared/data
export OMP_NUM_THREADS=1
kdsearch teacher --model resnet56 --dataset cifar100 --data-dir "$data" --subset 10000 \
    --epochs 2 --lr-milestones 0.99 --out "$out/teacher" --resume
kdsearch search --teacher resnet56 --teacher-weights "$out/teacher/teacher.pt" \
    --dataset cifar100 --data-dir "$data" --budget like:resnet20 --steps 100 \
    --out "$out/search" --quiet
kdsearch flops "$out/search/student.json" --json
