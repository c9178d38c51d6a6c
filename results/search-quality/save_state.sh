#!/usr/bin/env bash
# Copy what a comparison run left into a committed state folder, so that the next session's
# run.sh continues it (kdsearch compare skips every step whose summary.json exists, and
# resumes an unfinished training from its checkpoint.pt):
#   the teacher's summary; each search's and control's summary.json, student.json and
#   student.pt; each finished training's summary.json and metrics.jsonl; an unfinished
#   training's checkpoint.pt and metrics.jsonl. No student.pt of a training: not needed.
# Usage: bash results/search-quality/save_state.sh RUN_DIR STATE_DIR
set -euo pipefail
run=$1
state=$(realpath -m "$2")
rm -rf "$state.new"
mkdir -p "$state.new"
cd "$run"
{
  find teacher search controls given -maxdepth 2 -type f \
    \( -name summary.json -o -name student.json -o -name student.pt \) 2>/dev/null || true
  find train -type f \( -name summary.json -o -name metrics.jsonl \)
  for dir in train/*/seed*; do
    [ -e "$dir/summary.json" ] || { [ -e "$dir/checkpoint.pt" ] && echo "$dir/checkpoint.pt"; }
  done
} | sort | while read -r file; do
  mkdir -p "$state.new/$(dirname "$file")"
  cp "$file" "$state.new/$file"
done
cd - > /dev/null
rm -rf "$state"
mv "$state.new" "$state"
du -sh "$state"
