"""``kdsearch latency``: wall time per batch of a model, or of a student and its teacher."""

from __future__ import annotations

import argparse
import json

from kdsearch.cli.common import MODEL_HELP, add_model_shape_args, positive_int
from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Time MODEL per batch: median and 90th percentile of the wall time of one forward pass over
--batch-size random inputs, after warm-up, measured with torch.utils.benchmark
(Timer.blocked_autorange for about --min-time seconds; each timed value is the mean of a
block of calls). The float32 model runs in eval mode under torch.inference_mode; with
--compiled after torch.compile, with --onnx as its ONNX export in onnxruntime (pip install
"kdsearch[export]"; the copies of the batch from and to host memory are timed too).

For a student.json the teacher it was cut from is timed too (weights do not change the
speed, so none are loaded), with the speed-up: teacher median / student median. Write the
result with --out RUN/latency.json beside the run's student.json and kdsearch show puts
it into the run's graph figure. Figures hold for this machine, its load and --threads."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP + ", or a student.json")
    add_model_shape_args(parser)
    parser.add_argument("--device", default="cpu",
                        help="cpu (default), cuda, cuda:1 ... or auto")
    parser.add_argument("--batch-size", type=positive_int, default=1, metavar="N",
                        help="inputs per forward pass (default 1)")
    backend = parser.add_mutually_exclusive_group()
    backend.add_argument("--compiled", dest="backend", action="store_const", const="compiled",
                         default="eager", help="time the torch.compile'd model")
    backend.add_argument("--onnx", dest="backend", action="store_const", const="onnx",
                         help="time the ONNX export in onnxruntime")
    parser.add_argument("--min-time", type=float, default=1.0, metavar="SECONDS",
                        help="timed seconds per model, after warm-up (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON object to FILE")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def run(args: argparse.Namespace) -> int:
    from kdsearch.deploy.files import refuse_existing, write_bytes
    from kdsearch.numerics import resolve_device
    from kdsearch.student.resolve import resolve_model

    args.device = str(resolve_device(args.device))  # a wrong device fails before any work
    if args.out:
        refuse_existing(args.out, args.overwrite)
    resolved = resolve_model(args.model, args.num_classes, args.input_size)
    report = {"model": args.model, "input_size": list(resolved.input_size),
              "unit": "milliseconds per batch",
              "latency": _measure(args, resolved.model, resolved.input_size)}
    if args.model.endswith(".json"):
        from kdsearch.cli.flops import teacher_of
        from kdsearch.io import read_json

        report["teacher"] = read_json(args.model)["teacher"]["model"]
        report["teacher_latency"] = _measure(args, teacher_of(args.model),
                                             resolved.input_size)
        report["speedup"] = (report["teacher_latency"]["median_ms"]
                             / report["latency"]["median_ms"])
    if args.out:
        write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode(), args.overwrite)
    print(json.dumps(report) if args.json else _text(report))
    return 0


def _measure(args: argparse.Namespace, model, input_size) -> dict:
    """One model's figures: :class:`~kdsearch.deploy.latency.Latency` as a dict."""
    from kdsearch.deploy.latency import measure_latency
    from kdsearch.errors import KdsearchError

    if not args.min_time > 0:
        raise KdsearchError(f"--min-time must be a positive number of seconds, not "
                            f"{args.min_time}")
    return measure_latency(model, input_size, args.batch_size, args.device, args.backend,
                           min_run_time=args.min_time).as_dict()


def _text(report: dict) -> str:
    first = report["latency"]
    size = "x".join(map(str, report["input_size"]))
    threads = f"{first['threads']} thread" + ("" if first["threads"] == 1 else "s")
    lines = [f"{report['model']}: wall time per batch of {first['batch_size']} x {size}, "
             f"float32 {first['backend']} on {first['device']}, {threads}"]
    rows = [("model", first)]
    if "teacher_latency" in report:
        rows.append((f"teacher {report['teacher']}", report["teacher_latency"]))
    width = max(len(name) for name, _ in rows)
    for name, r in rows:
        lines.append(f"  {name:<{width}}  median {r['median_ms']:9.3f} ms   p90 "
                     f"{r['p90_ms']:9.3f} ms   ({r['blocks']} timed blocks of "
                     f"{r['calls_per_block']} calls)")
    if "speedup" in report:
        lines.append(f"  speed-up {report['speedup']:.2f}x (teacher median / model median)")
    return "\n".join(lines)


register_command("latency", "time a model (and a student's teacher) per batch", configure,
                 run, DESCRIPTION)
