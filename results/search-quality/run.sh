#!/usr/bin/env bash
# Search quality on CIFAR-100: resnet56 (results/teachers/resnet56-cifar100) searched at the
# MACs of resnet20, against random subgraphs (5 draws), uniform width scaling, L1 magnitude,
# DepGraph (Torch-Pruning) and the hand-designed resnet20, all at the same MACs.
# Every candidate gets the same schedule (CPU scale): KD (T=4, 0.1 CE + 0.9 KD), batch 64,
# a seeded 10,000-image training subset, the whole 10,000-image test split, 2 seeds.
#   protocol (b), the paper's: from scratch, 10 epochs, cosine lr from 0.05;
#   protocol (a), prune then fine-tune: from the weights each kept (student.pt), 2 epochs,
#   cosine lr from 0.01 (hand-designed resnet20 has no teacher weights: fresh).
# Each search runs 781 steps (one epoch's worth of the full training split, cycling the
# subset). Finished runs are skipped: rerun to continue.
# Usage (from the repository root):
#   bash results/search-quality/run.sh [DATA_DIR] [THREADS] [JOBS]
# (JOBS candidates train at once, each on THREADS threads: 2 and 1 on a 2-core machine)
set -euo pipefail
data=${1:-../shared/data}
threads=${2:-1}
jobs=${3:-1}
teacher=results/teachers/resnet56-cifar100/teacher.pt
common=(--teacher resnet56 --teacher-weights "$teacher" --dataset cifar100 --data-dir "$data"
        --no-download --subset 10000 --against resnet20 --method kd --seeds 2
        --baselines l1,random,uniform,depgraph --random-draws 5 --search-steps 781
        --preset results/search-quality/preset.yaml  # the default until the width floor
        --threads "$threads" --jobs "$jobs" --quiet)
# a run carried over from an earlier session (state/, committed: finished runs' summaries and
# the checkpoints of unfinished ones) continues where it stopped
for protocol in a b; do
  if [ -d "results/search-quality/state/$protocol" ] && [ ! -d "runs/search-quality/$protocol" ]; then
    mkdir -p runs/search-quality && cp -r "results/search-quality/state/$protocol" "runs/search-quality/$protocol"
  fi
done
kdsearch compare "${common[@]}" --init fresh --epochs 10 --lr 0.05 --schedule cosine --out runs/search-quality/b
# protocol (a) reuses (b)'s search and controls: the same settings give the same students
mkdir -p runs/search-quality/a
for part in teacher search controls; do
  [ -e "runs/search-quality/a/$part" ] || cp -r "runs/search-quality/b/$part" runs/search-quality/a/
done
kdsearch compare "${common[@]}" --init inherit --epochs 2 --lr 0.01 --schedule cosine --out runs/search-quality/a
for protocol in a b; do
  mkdir -p "results/search-quality/$protocol"
  cp "runs/search-quality/$protocol"/comparison.{md,csv,png} "results/search-quality/$protocol/"
done
cp runs/search-quality/b/search/like_resnet20/summary.json results/search-quality/search_summary.json
