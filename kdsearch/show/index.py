"""``index.html``: one page per run folder that links every table and figure of the run,
each with a paragraph on what it shows and how to read it.

The page is plain HTML and CSS (no JavaScript, no server): links and images are relative
paths, so it opens from the file system (``file://``) and survives moving the folder. It is
written to the run folder itself, or to the figures' folder when that lies outside it.
"""

from __future__ import annotations

import csv
import html
import io
import os
from pathlib import Path
from urllib.parse import quote

from kdsearch.io import write_text

INDEX = "index.html"
MAX_ROWS = 40  # rows of a CSV table shown on the page (the file has them all)
TABLE_SUFFIXES = (".csv", ".md")

TABLES = {
    "results.md": "The run's headline table: the teacher, each searched student and each "
                  "compared student with its MACs, parameters and best and last test "
                  "accuracy. Compare the accuracy columns at similar MACs; the teacher's row "
                  "is the accuracy the students learn from.",
    "comparison.md": "The comparison report: what was compared and how, then one row per "
                     "student (kind, MACs, latency, accuracy as mean ± std over seeds, Δ to "
                     "the hand-designed student at the same budget and its Welch p-value). "
                     "A Δ is meaningful when its p-value is small and there are several seeds.",
    "comparison.csv": "The comparison's rows as CSV, per-seed accuracies included (joined by "
                      "';'), for your own statistics or plots.",
    "trials.csv": "Every trial of the tune study: its number, state (COMPLETE, FAIL, ...), "
                  "accuracy, MACs, params, the parameters tried and its folder.",
    "pareto.csv": "The trials on the study's Pareto front (or its best trial, for one "
                  "objective): no other trial is both more accurate and cheaper.",
}
FIGURES = {
    "graph": "The teacher's layer graph, one row per stage (output resolution), layers left "
             "to right. Box height is proportional to a layer's output channels; the blue "
             "part is what the student keeps, grey what it removes, and the number under a "
             "box reads teacher→student channels. Dashed boxes are residual blocks the "
             "student removes; red outlines mark layers keeping under 10 % of their channels.",
    "layer_widths": "Output channels of every conv and linear layer, named by module path: "
                    "the outline is the teacher's width, the blue bar the student's. Hatched "
                    "bars are layers inside removed blocks; dotted lines separate the stages.",
    "stage_macs": "Multiply-accumulates per sample in each stage, teacher (grey) beside "
                  "student (blue), with the student's share on top. It shows where the search "
                  "took compute away; a tiny head has its own panel and scale.",
    "gates": "The search, step by step. Left: the mean gate of each channel group (colour "
             "bar: its depth) and of each residual block (dashed); gates falling to 0 are "
             "removed. Right: the live MACs of the gated network against the target and "
             "the budget; the live MACs should fall to the budget. A note in red says when "
             "they never left the teacher's.",
    "training": "One training run per epoch: train and test accuracy (zoomed to the later "
                "epochs when the early ones would flatten the differences), each loss term, "
                "and the learning rate schedule.",
    "test_accuracy": "Test accuracy per epoch of every training run in the folder, one colour "
                     "per student and one line style per seed; the legend gives each run's "
                     "best. Look at the later epochs: that is where students differ.",
    "pareto_front": "Each finished tune trial's test accuracy against its MACs (or params). "
                    "Blue points, labelled with their trial number, are the Pareto front: "
                    "no other trial is both more accurate and cheaper. The staircase joins "
                    "them; grey points are dominated trials.",
    "comparison": "Test accuracy against MACs of every compared student: searched, "
                  "controls cut at the same budget, and hand-designed students, with the "
                  "teacher as a star. Points at equal MACs are spread sideways so that none "
                  "hides another; error bars (with several seeds) are ± one std.",
}
STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}img{max-width:100%;border:1px solid #ddd}
h2{border-bottom:1px solid #ccc;padding-bottom:.2em}table{border-collapse:collapse;
font-size:90%}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:85%}.path{color:#666;
font-size:90%}"""


def write_index(root: Path, out: Path, figures: list[Path], about: str = "") -> Path:
    """Write the index of run folder ``root`` whose figures (``.png``, with their ``.svg``)
    are ``figures``, in ``out``; ``about`` is a sentence on what the folder holds. The
    path returned is in the caller's terms (relative if ``root`` and ``out`` were)."""
    given = root if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents \
        else out
    root, out = root.resolve(), out.resolve()
    place = given.resolve()
    page = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(root.name)}: kdsearch run</title><style>{STYLE}</style>"
            f"</head><body>\n<h1>{html.escape(root.name)}</h1>\n<p>{html.escape(about)} "
            "Each table and figure below has a paragraph on what it shows and how to read "
            "it; the figures link to their SVG.</p>"]
    tables = find_tables(root, out)
    if tables:
        page.append("<h2>Tables</h2>")
        page += [_table_section(path, place, root) for path in tables]
    pngs = [p.resolve() for p in figures if p.suffix == ".png"]
    pngs += [p for p in find_other_figures(root, out) if p not in pngs]
    pngs = sorted(pngs, key=lambda p: (len(p.parts), str(p.parent), pngs.index(p)))
    if pngs:
        page.append("<h2>Figures</h2>")
        page += [_figure_section(path, place, root) for path in pngs]
    page.append("</body></html>\n")
    write_text(place / INDEX, "\n".join(page))
    return given / INDEX


def find_tables(root: Path, out: Path) -> list[Path]:
    """The ``.csv`` and ``.md`` files under ``root`` (not in hidden folders, the figures'
    folder or a tune study's trial folders), top-level first."""
    return sorted(_files(root, out, TABLE_SUFFIXES), key=lambda p: (len(p.parts), str(p)))


def find_other_figures(root: Path, out: Path) -> list[Path]:
    """The PNG figures under ``root`` that ``show`` did not draw (``comparison.png``)."""
    return sorted(_files(root, out, (".png",)), key=lambda p: (len(p.parts), str(p)))


def _files(root: Path, out: Path, suffixes: tuple[str, ...]) -> list[Path]:
    found = []
    for folder, subfolders, files in os.walk(root):
        path = Path(folder)
        trials = "trials.csv" in files
        subfolders[:] = [d for d in subfolders if not d.startswith(".")
                         and (path / d).resolve() != out and not (trials and d == "trials")
                         and len(path.relative_to(root).parts) < 6]
        found += [(path / f).resolve() for f in files if f.endswith(suffixes)]
    return found


def _link(path: Path, place: Path) -> str:
    return quote(Path(os.path.relpath(path, place)).as_posix())


def _where(path: Path, root: Path) -> str:
    relative = path.relative_to(root) if root in path.parents else path
    return html.escape(relative.as_posix())


def _table_section(path: Path, place: Path, root: Path) -> str:
    reading = TABLES.get(path.name, "A table written by kdsearch in this run.")
    parts = [f"<h3><a href=\"{_link(path, place)}\">{_where(path, root)}</a></h3>",
             f"<p>{html.escape(reading)}</p>"]
    text = path.read_text(errors="replace")
    if path.suffix == ".csv":
        parts.append(_csv_table(text))
    elif text.strip():
        parts.append(f"<details><summary>contents</summary><pre>{html.escape(text)}</pre>"
                     "</details>")
    return "\n".join(parts)


def _csv_table(text: str) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return "<p>(empty)</p>"
    cells = ["<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>"]
    cells += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
              for row in rows[1:MAX_ROWS + 1]]
    more = len(rows) - 1 - MAX_ROWS
    note = f"<p>… and {more} more rows in the file.</p>" if more > 0 else ""
    return (f"<details><summary>{len(rows) - 1} rows</summary><table>{''.join(cells)}"
            f"</table>{note}</details>")


def _figure_section(png: Path, place: Path, root: Path) -> str:
    reading = FIGURES.get(png.stem, "A figure of this run.")
    svg = png.with_suffix(".svg")
    target = svg if svg.exists() else png
    alt = html.escape(f"{png.stem} figure of {root.name}")
    links = f"<a href=\"{_link(png, place)}\">PNG</a>"
    if svg.exists():
        links += f" · <a href=\"{_link(svg, place)}\">SVG</a>"
    return (f"<h3>{html.escape(png.stem)} <span class=\"path\">{_where(png, root)} "
            f"({links})</span></h3>\n<p>{html.escape(reading)}</p>\n"
            f"<a href=\"{_link(target, place)}\"><img src=\"{_link(png, place)}\" "
            f"alt=\"{alt}\" loading=\"lazy\"></a>")
