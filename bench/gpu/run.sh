#!/usr/bin/env bash
# The prepared GPU check (bench/gpu/README.md): smoke test, throughput, accuracy at speed.
# Usage, from anywhere:  bash bench/gpu/run.sh OUT_DIR [--dry-run] [check.py options]
# Writes OUT_DIR/{summary,smoke,throughput,accuracy}.json and OUT_DIR/log.txt.
set -uo pipefail
out=${1:?usage: bash bench/gpu/run.sh OUT_DIR [--dry-run]}
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"${PYTHON:-python3}" "$root/bench/gpu/check.py" --out "$out" "$@" 2>&1 | tee "$out/log.txt"
