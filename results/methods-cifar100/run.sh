#!/usr/bin/env bash
# Every distillation method trains a zoo student (resnet8) and a searched student (found in
# resnet20 at the MACs of resnet8) for one epoch on CIFAR-100 from ../shared/data, on CPU.
# The teacher is untrained (this checks that every method runs end to end on real data,
# not accuracy), and each epoch uses a 5,000-image training subset so that twelve runs fit
# in a CPU session. Usage: bash results/methods-cifar100/run.sh [OUT]
set -euo pipefail
out=${1:-runs/methods-cifar100}
data=../shared/data
export OMP_NUM_THREADS=1
kdsearch search --teacher resnet20 --dataset cifar100 --data-dir "$data" --subset 5000 \
    --budget like:resnet8 --steps 20 --out "$out/search" --quiet
for method in ce kd reviewkd kdfm dgkd recurrent; do
    for student in resnet8 "$out/search/student.json"; do
        tag=$(basename "$student" .json)
        extra=()
        [ "$method" = dgkd ] && extra=(--assistants resnet14)
        kdsearch train --student "$student" --teacher resnet20 --method "$method" \
            --dataset cifar100 --data-dir "$data" --subset 5000 --epochs 1 \
            --out "$out/$method-$tag" --quiet "${extra[@]}"
    done
done
python3 - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| method | student | MACs | params | test acc (%) | images/s |")
print("|---|---|---:|---:|---:|---:|")
for run in sorted(p for p in out.iterdir() if p.is_dir() and p.name != "search"):
    final = run / "student" / "summary.json"  # a DGKD chain: the final student's run
    s = json.loads((final if final.exists() else run / "summary.json").read_text())
    method, student = run.name.split("-", 1)
    print(f"| {method} | {student} | {s['student_macs'] / 1e6:.2f}M "
          f"| {s['student_params'] / 1e3:.1f}K | {s['last_test_acc']:.2f} "
          f"| {s['images_per_s']:.0f} |")
PY
