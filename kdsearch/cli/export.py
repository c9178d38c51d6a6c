"""``kdsearch export``: a student (or any model) as ONNX, TorchScript or torch.export, checked."""

from __future__ import annotations

import argparse
import json

from kdsearch.cli.common import MODEL_HELP, add_model_shape_args
from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Export MODEL for deployment and check the file before writing it: it is loaded back and
run on seeded random inputs at batch sizes 1 and 5 (it is exported at 2; the batch size is
dynamic in every format), and the largest absolute difference of its outputs to the
float32 PyTorch model is printed. Above --atol nothing is written and the exit code is 2.

  onnx         ONNX opset 17: input 'input' [batch, C, H, W], output 'logits' [batch,
               classes]; checked with onnxruntime (pip install "kdsearch[export]")
  torchscript  torch.jit.trace, saved with torch.jit.save (torch now deprecates
               TorchScript: prefer exported)
  exported     torch.export.export, saved with torch.export.save (load with
               torch.export.load(FILE).module())

MODEL is a student.json (with --weights, the student.pt of its search or of its
training), a zoo name, torchvision:NAME, FILE.py:NAME or package.module:NAME."""


def configure(parser: argparse.ArgumentParser) -> None:
    from kdsearch.deploy.export import EXPORT_FORMATS

    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP + ", or a student.json")
    parser.add_argument("--weights", metavar="PATH",
                        help="weights to load (a student.json's student.pt, or a checkpoint)")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS.names(),
                        help="onnx, torchscript or exported (torch.export)")
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="largest absolute difference to PyTorch allowed (default 1e-4, "
                             "for float32 logits)")
    add_model_shape_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from kdsearch.deploy.export import export_model
    from kdsearch.deploy.files import refuse_existing, write_bytes
    from kdsearch.errors import KdsearchError
    from kdsearch.student.resolve import resolve_model, warn_untrained

    if not args.atol >= 0:
        raise KdsearchError(f"--atol must be a non-negative number, not {args.atol}")
    out = refuse_existing(args.out, args.overwrite)
    resolved = resolve_model(args.model, args.num_classes, args.input_size,
                             weights=args.weights)
    warn_untrained(args.model, args.weights, f"no --weights: {args.model} is exported with "
                   "random weights (pass the student.pt of its search or training)")
    exported = export_model(resolved.model, resolved.input_size, args.format)
    check = exported.check
    if not check.max_abs_diff <= args.atol:
        raise KdsearchError(f"the {args.format} export differs from PyTorch by up to "
                            f"{check.max_abs_diff:.3g} (> --atol {args.atol:g}); {out} was "
                            "not written")
    write_bytes(out, exported.data, args.overwrite)
    report = {"model": args.model, "format": args.format, "out": str(out),
              "bytes": len(exported.data), "input_size": list(resolved.input_size),
              "max_abs_diff": check.max_abs_diff, "atol": args.atol,
              "checked_batch_sizes": list(check.batches), "export_batch_size": check.export_batch}
    print(json.dumps(report) if args.json else _text(report))
    return 0


def _text(report: dict) -> str:
    batches = " and ".join(map(str, report["checked_batch_sizes"]))
    return (f"wrote {report['out']} ({report['format']}, {report['bytes']:,} bytes, dynamic "
            f"batch size)\n  max |{report['format']} - PyTorch| = {report['max_abs_diff']:.3g}"
            f" (largest absolute difference of the outputs, random inputs at batch sizes "
            f"{batches}; exported at {report['export_batch_size']}; --atol "
            f"{report['atol']:g})")


register_command("export", "export a model to ONNX, TorchScript or torch.export, checked",
                 configure, run, DESCRIPTION)
