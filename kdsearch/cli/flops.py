"""``kdsearch flops``: MACs, FLOPs and parameters of a model or a student spec."""

from __future__ import annotations

import argparse
import json

from kdsearch.cli.common import MODEL_HELP, add_model_shape_args
from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Count a model's cost per input sample:
  macs    multiply-accumulates of convolutions, linear layers and matrix products: the
          'FLOPs' of KD papers and the 'GFLOPS' of torchvision's tables. Attention counts
          its q, k, v and output projections (those inside nn.MultiheadAttention too) and
          its two products Q K^T and softmax(.) V; norms, activations, softmax, pooling and
          additions are not counted (vit_b_16 at 3,224,224: 17.56G, as torchvision says)
  flops   what torch.utils.flop_counter.FlopCounterMode counts (2 per MAC for CNNs and
          transformers), attention's fused kernels included
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
        report["layers"] = layer_rows(resolved.model, resolved.input_size)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.model} at input {'x'.join(map(str, resolved.input_size))}, "
          f"{resolved.num_classes} classes")
    print(f"  MACs   {counts.macs:>15,}  ({counts.macs / 1e6:.2f}M, conv + linear + matmul)")
    print(f"  FLOPs  {counts.flops:>15,}  ({counts.flops / 1e6:.2f}M, FlopCounterMode)")
    print(f"  params {counts.params:>15,}  ({counts.params / 1e6:.3f}M)")
    if untraced:
        print(f"  counted by running it under FlopCounterMode (MACs = conv, matmul and attention "
              f"FLOPs / 2): torch.fx could not trace it ({untraced})")
    if args.per_layer:
        print(layer_table(resolved.model, resolved.input_size, teacher_of(args.model)))
    return 0


def layer_rows(model, input_size: tuple[int, int, int]) -> list[dict]:
    """One row per layer with MACs (conv, linear, products): module path, type, output shape (one
    sample), its parameters and MACs, in graph order."""
    from kdsearch.graph.counting import count_macs
    from kdsearch.graph.trace import example_input_for, trace_with_shapes

    gm = trace_with_shapes(model, example_input_for(input_size))
    macs = count_macs(gm)
    rows = []
    for node in gm.graph.nodes:
        if node.name not in macs:
            continue
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        rows.append({
            "layer": node.target if module is not None else node.name,
            "type": type(module).__name__ if module is not None else str(node.target),
            "output": list(_output_shape(node)[1:]),
            "params": sum(p.numel() for p in module.parameters()) if module is not None else 0,
            "macs": macs[node.name]})
    return rows


def _output_shape(node) -> tuple[int, ...]:
    """The node's output shape; for a tuple (nn.MultiheadAttention's), its first item's."""
    import operator

    from kdsearch.graph.trace import output_shape

    shape = output_shape(node)
    if shape is None:
        first = [user for user in node.users
                 if user.target is operator.getitem and user.args[1] == 0]
        shape = output_shape(first[0]) if first else None
    return shape or (0,)


def layer_table(model, input_size: tuple[int, int, int], teacher=None) -> str:
    """:func:`layer_rows` as a table; with ``teacher`` (the model a spec was cut from), a
    column of output channels teacher -> student per layer."""
    rows = layer_rows(model, input_size)
    widths = ({row["layer"]: row["output"][0] for row in layer_rows(teacher, input_size)}
              if teacher is not None else None)
    header = f"{'layer':<34} {'type':<10} {'output':<14} {'params':>10} {'MACs':>13}"
    lines = [header + ("  channels (teacher->student)" if widths else ""), "-" * len(header)]
    for row in rows:
        shape = "x".join(map(str, row["output"]))
        line = (f"{row['layer']:<34} {row['type']:<10} {shape:<14} {row['params']:>10,} "
                f"{row['macs']:>13,}")
        if widths and row["layer"] in widths:
            line += f"  {widths[row['layer']]}->{row['output'][0]}"
        lines.append(line)
    return "\n".join(lines)


def teacher_of(model: str):
    """The teacher a ``student.json`` was cut from (fresh weights), else None."""
    if not model.endswith(".json"):
        return None
    from kdsearch.io import read_json
    from kdsearch.student.resolve import resolve_model

    teacher = read_json(model)["teacher"]
    return resolve_model(teacher["model"], teacher["num_classes"],
                         tuple(teacher["input_size"])).model


register_command("flops", "count MACs, FLOPs and parameters", configure, run, DESCRIPTION)
