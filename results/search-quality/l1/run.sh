#!/usr/bin/env bash
# The l1 selector against fisher, the same constraints (preset.yaml: the width-floor preset
# of ../floor/ with `selector: l1`), protocol (b) of ../run.sh: resnet56
# (results/teachers/resnet56-cifar100) searched at the MACs of PAIR (resnet20 or resnet8),
# KD from scratch, 10 epochs on the seeded 10,000-image subset, cosine lr from 0.05, batch
# 64, seeds 0 .. SEEDS-1. The hand-designed PAIR's runs and the teacher's evaluation are
# carried in from the committed tables (they are the same runs as ../floor/'s); the fisher
# search's runs are ../floor/PAIR/state/b's. State committed under PAIR/state continues;
# finished runs are skipped. table.py then writes PAIR/table.md: l1 against fisher, seed by
# seed, with a Welch test.
# Usage (from the repository root):
#   bash results/search-quality/l1/run.sh PAIR SEEDS [DATA_DIR] [THREADS] [JOBS]
set -euo pipefail
usage="usage: run.sh resnet20|resnet8 SEEDS [DATA_DIR] [THREADS] [JOBS]"
pair=${1:?$usage} seeds=${2:?$usage}
data=${3:-../shared/data}
threads=${4:-1}
jobs=${5:-1}
sq=results/search-quality
case "$pair" in
  resnet20) pair_state=$sq/state ;;
  resnet8) pair_state=$sq/resnet8/state ;;
  *) echo "run.sh: PAIR is resnet20 or resnet8, not $pair" >&2; exit 2 ;;
esac
here=$sq/l1/$pair
out=runs/search-quality/l1/$pair
hand=train/hand-designed_$pair
if [ ! -d "$out/teacher" ]; then  # a new run directory (a search may already be there)
  mkdir -p "$out/train"
  cp -r $sq/state/b/teacher "$out/"
  cp -r "$pair_state/b/$hand" "$out/train/"
  cp -r "$sq/seeds/$pair/state/$hand/." "$out/$hand/"
  if [ -d "$here/state" ]; then cp -r "$here/state/." "$out/"; fi
fi
kdsearch compare --teacher resnet56 --teacher-weights results/teachers/resnet56-cifar100/teacher.pt \
  --dataset cifar100 --data-dir "$data" --no-download --subset 10000 --against "$pair" \
  --method kd --seeds "$seeds" --search-steps 781 --preset $sq/l1/preset.yaml \
  --init fresh --epochs 10 --lr 0.05 --schedule cosine \
  --threads "$threads" --jobs "$jobs" --quiet --out "$out"
mkdir -p "$here"
cp "$out"/comparison.{md,csv,png} "$here/"
cp "$out/search/like_$pair/summary.json" "$here/search_summary.json"
python3 $sq/l1/table.py "$pair" > "$here/table.md"
