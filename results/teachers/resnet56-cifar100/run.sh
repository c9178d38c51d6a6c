#!/usr/bin/env bash
# The resnet56 CIFAR-100 teacher of results/search-quality, trained by kdsearch itself on the
# 2-core CPU machine: cross-entropy, 30 epochs, cosine lr from 0.05, batch 64, SGD momentum
# 0.9, weight decay 5e-4, the standard crop+flip augmentation, bf16 + channels-last (the CPU
# default where bf16 is native), one thread; intermediate epochs tested on 2,000 seeded test
# images, the last on all 10,000. --resume continues from checkpoint.pt across sessions.
# Usage (from the repository root): bash results/teachers/resnet56-cifar100/run.sh [DATA_DIR]
set -euo pipefail
data=${1:-../shared/data}
kdsearch teacher --model resnet56 --dataset cifar100 --data-dir "$data" --no-download \
  --epochs 30 --schedule cosine --lr 0.05 --test-subset 2000 --threads 1 --resume \
  --out results/teachers/resnet56-cifar100
