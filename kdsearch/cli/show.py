"""``kdsearch show``: figures of a search or training run, as PNG and SVG."""

from __future__ import annotations

import argparse

from kdsearch.cli.registry import register_command

DESCRIPTION = """\
Draw the figures of RUN_DIR (and of every run in its subfolders) as PNG and SVG, and write
RUN_DIR/index.html, a page that links every table and figure of the run with a paragraph
on how to read each (plain HTML: open it from the file system, no server needed):

  search run (graph.json + student.json):
    graph          the teacher's layer graph, one row per stage; box height = channels,
                   blue = kept, grey = removed channels, teacher->student channel counts
                   under the boxes, red outline = under 10 % kept, dashed = removed
                   residual block; at least 1600 px wide; with RUN/latency.json (kdsearch
                   latency RUN/student.json --out RUN/latency.json) the title gives the
                   latency and speed-up too
    layer_widths   output channels per conv/linear layer (named by module path), teacher
                   (outline) vs student
    stage_macs     MACs per stage (resolution level), teacher vs student, with the
                   student's share; a tiny head gets its own panel
    gates          mean gate per unit (colour bar: depth) and live/target MACs per search
                   step; says so when the live MACs never left the teacher's
  training run (metrics.jsonl):
    training       accuracy, losses and learning rate per epoch
    test_accuracy  (a folder of several training runs) test accuracy of each run, named by
                   its student's kind and name
  tune run (trials.csv + pareto.json, kdsearch tune):
    pareto_front   accuracy vs MACs of the finished trials, the Pareto front highlighted

Written to --out (default RUN_DIR/figures), mirroring the subfolders; index.html goes to
RUN_DIR (to --out when that lies outside RUN_DIR)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or a folder of runs)")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/figures)")


def run(args: argparse.Namespace) -> int:
    from kdsearch.show import show_run

    written = show_run(args.run_dir, args.out)
    for path in written:
        if path.suffix == ".png":
            print(f"wrote {path} (+ .svg)")
        elif path.suffix == ".html":
            print(f"wrote {path} (open it in a browser: every table and figure, explained)")
    return 0


register_command("show", "draw figures of a search or training run", configure, run,
                 DESCRIPTION)
