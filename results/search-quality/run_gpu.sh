#!/usr/bin/env bash
# Protocol (b) of the search-quality table on one CUDA GPU, every training at once: resnet56
# (results/teachers/resnet56-cifar100) at the MACs of resnet20 against random (5 draws),
# uniform, L1 (and DepGraph where torch_pruning is installed) and the hand-designed
# resnet20, each trained from scratch with KD on the whole CIFAR-100 training split for
# 10 epochs (cosine lr from 0.05, batch 64), 2 seeds: 20 trainings as 10 worker processes
# on the one GPU (--jobs 10), after one 781-step search. Sized for about 8 minutes on an
# H100-class GPU (not yet measured: no GPU has been lent to this project).
# Usage (from the repository root): bash results/search-quality/run_gpu.sh DATA_DIR [OUT]
set -euo pipefail
data=${1:?the folder holding cifar-100-python (or its archive)}
out=${2:-runs/search-quality-gpu}
baselines=l1,random,uniform
python -c "import torch_pruning" 2>/dev/null && baselines=$baselines,depgraph
python -m kdsearch compare --teacher resnet56 \
  --teacher-weights results/teachers/resnet56-cifar100/teacher.pt \
  --dataset cifar100 --data-dir "$data" --no-download --against resnet20 --method kd \
  --seeds 2 --baselines "$baselines" --random-draws 5 --search-steps 781 --init fresh \
  --epochs 10 --lr 0.05 --schedule cosine --device cuda --jobs 10 --quiet --out "$out/b"
cat "$out/b/comparison.md"
