#!/usr/bin/env bash
# The search with a width floor (preset.yaml: min_fraction 0.5, every channel group keeps
# at least half its channels; the resnet_cifar default since the seventh session): resnet56
# (results/teachers/resnet56-cifar100) searched at the MACs of PAIR (resnet20 or resnet8),
# against the hand-designed PAIR and DRAWS random subgraphs under the same constraints
# (0: none), the schedules of ../run.sh:
#   PROTOCOL b: KD from scratch, 10 epochs on the seeded 10,000-image subset, cosine lr
#               from 0.05, batch 64, seeds 0 .. SEEDS-1;
#   PROTOCOL a: from the weights each kept (student.pt), KD fine-tune 2 epochs, cosine lr
#               from 0.01 (the hand-designed student has none: fresh); run b first, a
#               reuses its search and draws.
# With DRAWS > 0 and SEEDS <= 2 the table also holds L1, uniform and DepGraph (cut without
# the floor, as compare cuts controls that remove no blocks: the pair's own cuts and their
# runs of seeds 0-1, carried in; more seeds train only the search and the random draws).
# The hand-designed student's runs are carried in from the protocol's own tables
# (b: ../state/b or ../resnet8/state/b, and ../seeds/PAIR/state for seeds 2-4;
# a: ../state/a or ../resnet8/state/a), the teacher's evaluation from ../state/b. The draws
# are seeded (draw k: seed k), so a recut draw is the same subgraph. State
# committed under PAIR/state/PROTOCOL continues; finished runs are skipped.
# FLOOR=F picks another floor (preset-F.yaml; its tables and state in PAIR-floorF/).
# Usage (from the repository root):
#   [FLOOR=F] bash results/search-quality/floor/run.sh PAIR PROTOCOL SEEDS DRAWS [DATA_DIR] [THREADS] [JOBS]
set -euo pipefail
usage="usage: run.sh resnet20|resnet8 a|b SEEDS DRAWS [DATA_DIR] [THREADS] [JOBS]"
pair=${1:?$usage} protocol=${2:?$usage} seeds=${3:?$usage} draws=${4:?$usage}
data=${5:-../shared/data}
threads=${6:-1}
jobs=${7:-1}
sq=results/search-quality
case "$pair" in
  resnet20) pair_state=$sq/state ;;
  resnet8) pair_state=$sq/resnet8/state ;;
  *) echo "run.sh: PAIR is resnet20 or resnet8, not $pair" >&2; exit 2 ;;
esac
case "$protocol" in
  b) schedule=(--init fresh --epochs 10 --lr 0.05 --schedule cosine) ;;
  a) schedule=(--init inherit --epochs 2 --lr 0.01 --schedule cosine) ;;
  *) echo "run.sh: PROTOCOL is a or b, not $protocol" >&2; exit 2 ;;
esac
floor=${FLOOR:-0.5}
preset=$sq/floor/preset.yaml name=$pair
if [ "$floor" != 0.5 ]; then preset=$sq/floor/preset-$floor.yaml name=$pair-floor$floor; fi
[ -f "$preset" ] || { echo "run.sh: no preset $preset for FLOOR=$floor" >&2; exit 2; }
here=$sq/floor/$name
out=runs/search-quality/floor/$name/$protocol
hand=train/hand-designed_$pair
if [ ! -d "$out" ]; then
  mkdir -p "$out/train"
  cp -r $sq/state/b/teacher "$out/"
  cp -r "$pair_state/$protocol/$hand" "$out/train/"
  if [ "$protocol" = b ]; then
    cp -r "$sq/seeds/$pair/state/$hand/." "$out/$hand/"
  elif [ -d "runs/search-quality/floor/$name/b/search" ]; then  # protocol b's search, draws
    cp -r "runs/search-quality/floor/$name/b/"{search,controls} "$out/"
  elif [ -d "$here/state/b/search" ]; then  # its committed search; the draws are recut
    cp -r "$here/state/b/search" "$out/"
  else
    echo "run.sh: run protocol b for $name first" >&2; exit 2
  fi
  if [ -d "$here/state/$protocol" ]; then cp -r "$here/state/$protocol/." "$out/"; fi
fi
baselines=()
if [ "$draws" -gt 0 ] && [ "$seeds" -gt 2 ]; then
  baselines=(--baselines random --random-draws "$draws")
elif [ "$draws" -gt 0 ]; then
  # l1, uniform and depgraph remove no blocks, so compare cuts them without the floor:
  # the same cuts as the pair's own table, whose cuts and trainings (seeds 0-1) carry over
  baselines=(--baselines l1,random,uniform,depgraph --random-draws "$draws")
  for control in l1 uniform depgraph; do
    cut=${control}_like_$pair
    [ -e "$out/controls/$cut" ] || { mkdir -p "$out/controls"
      cp -r "$pair_state/b/controls/$cut" "$out/controls/"; }
    [ -e "$out/train/$cut" ] || cp -r "$pair_state/$protocol/train/$cut" "$out/train/"
  done
fi
kdsearch compare --teacher resnet56 --teacher-weights results/teachers/resnet56-cifar100/teacher.pt \
  --dataset cifar100 --data-dir "$data" --no-download --subset 10000 --against "$pair" \
  --method kd --seeds "$seeds" --search-steps 781 --preset "$preset" \
  "${baselines[@]}" "${schedule[@]}" --threads "$threads" --jobs "$jobs" --quiet --out "$out"
table=$here/$protocol/seeds$seeds-draws$draws
mkdir -p "$table"
cp "$out"/comparison.{md,csv,png} "$table/"
cp "$out/search/like_$pair/summary.json" "$here/search_summary.json"
