"""``kdsearch graph``: the searchable units the topology analysis finds in a model."""

from __future__ import annotations

import argparse
import json

from kdsearch.cli.common import MODEL_HELP, add_model_shape_args
from kdsearch.cli.registry import register_command

DESCRIPTION = """\
List the searchable units of MODEL: channel groups (channels removable together; groups
tied by residual adds count once) and residual blocks (removable branches leaving x -> x),
with their size and the MACs they touch at full width (MACs: conv, linear and matmul per sample).
Units the search may not touch are listed with the reason. --json prints the whole
topology graph (nodes with shapes, MACs, params; edges; units)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    add_model_shape_args(parser)
    parser.add_argument("--preset", help="search preset whose constraints apply "
                                         "(default: by family)")
    parser.add_argument("--json", action="store_true", help="print the graph as JSON")


def run(args: argparse.Namespace) -> int:
    from kdsearch.graph.topology import TopologyGraph, unit_record
    from kdsearch.presets import load_preset
    from kdsearch.student.resolve import family_of, resolve_model

    resolved = resolve_model(args.model, args.num_classes, args.input_size)
    constraints, _ = load_preset(args.preset or family_of(args.model))
    topology = TopologyGraph(resolved.model, resolved.input_size, constraints)
    if args.json:
        print(json.dumps(topology.to_json()))
        return 0
    print(f"{args.model}: {topology.graph.number_of_nodes()} nodes, "
          f"{topology.macs / 1e6:.2f}M MACs")
    print(f"{'unit':<7} {'kind':<9} {'size':>5} {'MACs':>11}  label / why fixed")
    for unit in [*topology.units.channels, *topology.units.blocks]:
        record = unit_record(unit)
        note = "" if unit.searchable else f"  [fixed: {unit.reason}]"
        print(f"{record['id']:<7} {record['kind']:<9} {record['size']:>5} "
              f"{record['macs'] / 1e6:>10.3f}M  {record['label']}{note}")
    return 0


register_command("graph", "list the searchable units of a model", configure, run, DESCRIPTION)
