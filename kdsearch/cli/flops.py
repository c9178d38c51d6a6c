"""``kdsearch flops``: MACs, FLOPs and parameters of a model or a student spec."""

from __future__ import annotations

import argparse
import json

from kdsearch.cli.common import MODEL_HELP, add_model_shape_args
from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Count a model's cost per input sample:
  macs    multiply-accumulates of conv and linear layers (the 'FLOPs' of KD papers)
  flops   what torch.utils.flop_counter.FlopCounterMode counts (2 per MAC for CNNs)
  params  learnable parameter elements (BatchNorm running statistics excluded)
MODEL is a zoo name (kdsearch flops resnet56), torchvision:NAME, a student.json, or your own
model as FILE.py:NAME or package.module:NAME."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP + ", or a student.json")
    add_model_shape_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--per-layer", action="store_true", help="also list MACs per layer")


def run(args: argparse.Namespace) -> int:
    from kdsearch.errors import KdsearchError
    from kdsearch.graph.counting import count_model, count_untraced
    from kdsearch.graph.trace import TraceFailure
    from kdsearch.student.resolve import resolve_model

    resolved = resolve_model(args.model, args.num_classes, args.input_size)
    untraced = None
    try:
        counts = count_model(resolved.model, resolved.input_size)
    except TraceFailure as err:  # still countable by running it once
        counts, untraced = count_untraced(resolved.model, resolved.input_size), str(err)
        if args.per_layer:
            raise KdsearchError(f"{err}; without a trace there is no per-layer count "
                                "(drop --per-layer for the totals)") from None
    report = {"model": args.model, "num_classes": resolved.num_classes,
              "input_size": list(resolved.input_size), **counts.as_dict(),
              "counted": "FlopCounterMode (not traceable)" if untraced else "torch.fx trace"}
    if args.per_layer:
        report["macs_per_layer"] = counts.macs_per_node
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.model} at input {'x'.join(map(str, resolved.input_size))}, "
          f"{resolved.num_classes} classes")
    print(f"  MACs   {counts.macs:>15,}  ({counts.macs / 1e6:.2f}M, conv + linear)")
    print(f"  FLOPs  {counts.flops:>15,}  ({counts.flops / 1e6:.2f}M, FlopCounterMode)")
    print(f"  params {counts.params:>15,}  ({counts.params / 1e6:.3f}M)")
    if untraced:
        print(f"  counted by running it under FlopCounterMode (MACs = conv and matmul FLOPs / "
              f"2): torch.fx could not trace it ({untraced})")
    for name, macs in counts.macs_per_node.items() if args.per_layer else ():
        print(f"    {name:<40} {macs:>13,}")
    return 0


register_command("flops", "count MACs, FLOPs and parameters", configure, run, DESCRIPTION)
