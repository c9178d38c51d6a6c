"""Write the student.json of a depth allocation cut from resnet56 (CIFAR-100).

``python allocation.py OUT A,B,C ...`` writes ``OUT/alloc_A_B_C/student.json`` for each
allocation: the first A blocks of stage 1, B of stage 2 and C of stage 3 kept, every
channel kept (A >= 0; B, C >= 1: a stage's first block changes the resolution and is not a
removable unit). The MACs are counted by kdsearch's counter and printed.
"""

import sys
from pathlib import Path

from kdsearch.graph.counting import count_model
from kdsearch.graph.topology import TopologyGraph
from kdsearch.graph.units import Selection
from kdsearch.io import write_json
from kdsearch.models import build_model
from kdsearch.presets import load_preset
from kdsearch.student.extract import extract_student
from kdsearch.student.spec import make_spec

TEACHER = {"model": "resnet56", "num_classes": 100, "input_size": [3, 32, 32]}
PRESET = Path(__file__).resolve().parents[3] / "search_spaces" / "resnet_cifar_depth.yaml"


def allocation_spec(depths: tuple[int, int, int]) -> dict:
    constraints, _ = load_preset(str(PRESET))
    teacher = build_model(TEACHER["model"], TEACHER["num_classes"], 3).eval()
    topology = TopologyGraph(teacher, tuple(TEACHER["input_size"]), constraints)
    removed = set()
    for unit in topology.units.searchable():
        stage, index = unit.label.removeprefix("layer").split(".")
        if int(index) >= depths[int(stage) - 1]:
            removed.add(unit.id)
    selection = Selection(removed_blocks=removed)
    student = extract_student(topology.gm, topology.units, selection)
    counted = count_model(student, tuple(TEACHER["input_size"]))
    return make_spec(TEACHER, topology.units, selection, counted.macs, counted.params)


def main(out: str, *allocations: str) -> None:
    for text in allocations:
        depths = tuple(int(d) for d in text.split(","))
        if len(depths) != 3 or depths[0] < 0 or min(depths[1:]) < 1 or max(depths) > 9:
            sys.exit(f"allocation {text!r}: expected A,B,C with 0 <= A <= 9, 1 <= B, C <= 9")
        spec = allocation_spec(depths)
        folder = Path(out) / f"alloc_{'_'.join(map(str, depths))}"
        write_json(folder / "student.json", spec)
        print(f"{folder}: {spec['macs'] / 1e6:.3f}M MACs, {spec['params'] / 1e3:.1f}K params")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
