#!/usr/bin/env bash
# More seeds for the comparison that decides: the searched student against the hand-designed
# one of its MACs, protocol (b) exactly as ../run.sh (KD from the trained resnet56, from
# scratch, 10 epochs on the seeded 10,000-image CIFAR-100 subset, cosine lr from 0.05,
# batch 64), seeds 0 .. SEEDS-1. Seeds 0 and 1 and the search are the protocol's own
# (copied from its committed state); only the new seeds train.
#   PAIR resnet20: ../state/b (resnet56 at resnet20's MACs)
#   PAIR resnet8:  ../resnet8/state/b (resnet56 at resnet8's MACs)
#   PAIR depth:    the depth-only search (../depth/, ../state/depth) at resnet20's MACs,
#                  against resnet20's runs of PAIR resnet20 (../state/b and resnet20/state)
# Usage (from the repository root):
#   bash results/search-quality/seeds/run.sh PAIR SEEDS [DATA_DIR] [THREADS] [JOBS]
set -euo pipefail
pair=${1:?usage: run.sh resnet20|resnet8|depth SEEDS [DATA_DIR] [THREADS] [JOBS]}
seeds=${2:?usage: run.sh resnet20|resnet8|depth SEEDS [DATA_DIR] [THREADS] [JOBS]}
data=${3:-../shared/data}
threads=${4:-1}
jobs=${5:-1}
hand=$pair preset=(--preset results/search-quality/preset.yaml)  # no width floor
case "$pair" in
  resnet20) state=results/search-quality/state/b ;;
  resnet8) state=results/search-quality/resnet8/state/b ;;
  depth) state=results/search-quality/state/depth hand=resnet20
         preset=(--preset search_spaces/resnet_cifar_depth.yaml) ;;
  *) echo "run.sh: PAIR is resnet20, resnet8 or depth, not $pair" >&2; exit 2 ;;
esac
here=results/search-quality/seeds/$pair
out=runs/search-quality/seeds/$pair
if [ ! -d "$out" ]; then
  mkdir -p "$out/train"
  cp -r results/search-quality/state/b/teacher "$state/search" "$out/"
  if [ "$pair" = depth ]; then  # resnet20's 5 seeds are the resnet20 pair's
    cp -r results/search-quality/state/b/train/hand-designed_resnet20 "$out/train/"
    cp -r results/search-quality/seeds/resnet20/state/train/hand-designed_resnet20/. \
      "$out/train/hand-designed_resnet20/"
  else
    cp -r "$state/train/hand-designed_$pair" "$state/train/searched_like_$pair" "$out/train/"
  fi
  if [ -d "$here/state" ]; then cp -r "$here/state/." "$out/"; fi
fi
kdsearch compare --teacher resnet56 --teacher-weights results/teachers/resnet56-cifar100/teacher.pt \
  --dataset cifar100 --data-dir "$data" --no-download --subset 10000 --against "$hand" \
  --method kd --seeds "$seeds" --search-steps 781 "${preset[@]}" --init fresh --epochs 10 --lr 0.05 \
  --schedule cosine --threads "$threads" --jobs "$jobs" --quiet --out "$out"
mkdir -p "$here"
cp "$out"/comparison.{md,csv,png} "$here/"
