"""``kdsearch show``: figures of a search or training run, as PNG and SVG."""

from __future__ import annotations

import argparse

from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Draw the figures of RUN_DIR (and of every run in its subfolders) as PNG and SVG:

  search run (graph.json + student.json):
    graph          the teacher's layer graph, one row per stage; box height = channels,
                   blue = kept, grey = removed channels, dashed = removed residual block;
                   with RUN/latency.json (kdsearch latency RUN/student.json --out
                   RUN/latency.json) the title gives the latency and speed-up too
    layer_widths   output channels per conv/linear layer, teacher (outline) vs student
    stage_macs     MACs per stage (resolution level), teacher vs student
    gates          mean gate per unit and live/target MACs per search step
  training run (metrics.jsonl):
    training       accuracy, losses and learning rate per epoch
    test_accuracy  (a folder of several training runs) test accuracy of each run

Written to --out (default RUN_DIR/figures), mirroring the subfolders."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or a folder of runs)")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/figures)")


def run(args: argparse.Namespace) -> int:
    from kdsearch.show import show_run

    written = show_run(args.run_dir, args.out)
    for path in written:
        if path.suffix == ".png":
            print(f"wrote {path} (+ .svg)")
    return 0


register_command("show", "draw figures of a search or training run", configure, run,
                 DESCRIPTION)
