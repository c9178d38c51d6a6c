#!/usr/bin/env bash
# Does the CPU-scale protocol (b) rank depth allocations as the full 240-epoch schedule does?
# Given students (kdsearch compare --students), cut from resnet56 with every channel kept
# (../depth/allocation.py): (3,3,3) (resnet20's shapes, drawn by another seed stream: a
# check that a cut now trains like the hand design) and four allocations whose accuracy at
# resnet20's MACs after 240 epochs with KD is published (exps/s1-gt-kd.txt of the DisWOT
# CVPR 2023 repository; ../../../../shared/reference/SEARCH.md): (1,3,5) 72.77 % (the best),
# (1,1,7) 72.36, (5,3,1) 66.97, (7,1,1) 65.39 (the worst); (3,3,3) is 70.76 there. Beside
# them the hand-designed resnet20 and the depth-only search's (3,2,4)
# (search_spaces/resnet_cifar_depth.yaml, ../depth/), all with the fair initialisation of
# cut students. Protocol (b) as ../run.sh: KD from the trained
# resnet56, from scratch, 10 epochs on the seeded 10,000-image CIFAR-100 subset, cosine lr
# from 0.05, batch 64, seeds 0 and 1. resnet20's trainings are protocol (b)'s own (copied
# from ../state/b), the depth search is ../state/depth's: both are skipped.
# Usage (from the repository root):
#   bash results/search-quality/allocations/run.sh [DATA_DIR] [THREADS] [JOBS]
set -euo pipefail
data=${1:-../shared/data}
threads=${2:-1}
jobs=${3:-1}
here=results/search-quality/allocations
out=runs/search-quality/allocations
if [ ! -d "$out" ]; then
  mkdir -p "$out/train" "$out/search"
  cp -r results/search-quality/state/b/teacher "$out/"
  cp -r results/search-quality/state/b/train/hand-designed_resnet20 "$out/train/"
  cp -r results/search-quality/state/depth/search/. "$out/search/"
  [ -d "$here/state" ] && cp -r "$here/state/." "$out/"
fi
python results/search-quality/depth/allocation.py "$out/given" 1,3,5 7,1,1 3,3,3 1,1,7 5,3,1
students=$(printf "$out/given/alloc_%s/student.json," 1_3_5 7_1_1 3_3_3 1_1_7 5_3_1)
kdsearch compare --teacher resnet56 --teacher-weights results/teachers/resnet56-cifar100/teacher.pt \
  --dataset cifar100 --data-dir "$data" --no-download --subset 10000 --against resnet20 \
  --method kd --seeds 2 --search-steps 781 --preset search_spaces/resnet_cifar_depth.yaml \
  --students "${students%,}" --init fresh --epochs 10 --lr 0.05 --schedule cosine \
  --threads "$threads" --jobs "$jobs" --quiet --out "$out"
cp "$out"/comparison.{md,csv,png} "$here/"
