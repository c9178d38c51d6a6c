"""The numbers behind each figure, computed from a run's files (no matplotlib here).

Vocabulary: a *layer* is a conv or linear node of ``graph.json`` (a node with MACs: the
conv + linear definition of :mod:`kdsearch.graph.counting`); BatchNorm, activations and
pooling fold into the layer before them. A *merge* is an add or concat of two or more
layers' outputs. A *stage* is one spatial resolution level (the output ``H×W`` of its
layers); linear layers form the ``head`` stage. The student is the teacher with the
channels of ``student.json`` kept and its ``removed_blocks`` bypassed; a layer keeps
``width - (unit size - kept)`` output channels, none inside a removed block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kdsearch.errors import KdsearchError

MERGE_KINDS = frozenset({"add", "iadd", "cat", "concat"})
HEAD = "head"
ROW_GAP, LANE_GAP = 1.6, 0.55  # layout units: rows of stages, side branches within a row


@dataclass(frozen=True)
class LayerWidth:
    name: str  # module path (``layer1.0.conv1``)
    stage: str  # resolution (``16×16``) or ``head``
    teacher: int  # output channels in the teacher
    kept: int  # output channels in the student (0 inside a removed block)
    removed: bool  # inside a removed residual block


@dataclass(frozen=True)
class StageMacs:
    stage: str
    teacher: int
    student: int


@dataclass(frozen=True)
class LayoutNode:
    name: str  # node name in graph.json
    label: str  # module path, or the op for merges
    kind: str  # input, conv, linear or merge
    row: int  # one row per stage
    x: float  # column: depth inside the row
    y: float  # -ROW_GAP * row, raised LANE_GAP per side branch (a projection shortcut)
    width: int  # teacher output channels
    kept: int  # student output channels
    removed: bool
    block: str | None  # residual block unit the node belongs to (its add included)
    group: str  # the module it belongs to, at the depth of block paths (``layer1.0``)

    @property
    def kept_fraction(self) -> float:
        return self.kept / self.width if self.width else 1.0


@dataclass(frozen=True)
class LayoutGroup:
    """Neighbouring nodes of one row under one module (a residual block, the stem...)."""

    label: str
    row: int
    x0: float
    x1: float
    removed: bool  # every node of the group is in a removed block


@dataclass
class GraphLayout:
    nodes: list[LayoutNode]
    edges: list[tuple[str, str]]  # between layout nodes (BatchNorm, ReLU... contracted away)
    rows: list[str]  # stage label of each row
    groups: list[LayoutGroup]

    def node(self, name: str) -> LayoutNode:
        return next(n for n in self.nodes if n.name == name)


@dataclass
class GateCurves:
    steps: list[int]
    gates: dict[str, list[float]]  # unit id -> mean gate per step (nan where not logged)
    live_macs: list[float]
    target_macs: list[float]
    soft_macs: list[float] = field(default_factory=list)  # what the lambda controller follows
    budget_macs: int | None = None
    teacher_macs: int | None = None
    removed: frozenset[str] = frozenset()  # block units the final student removed

    def kind(self, unit: str) -> str:
        return "blocks" if unit.startswith("blk") else "channels"


@dataclass(frozen=True)
class Speed:
    """A run's ``latency.json`` (``kdsearch latency --out``): medians per batch (ms)."""

    student_ms: float
    teacher_ms: float | None  # None: the teacher was not timed
    batch_size: int
    device: str
    backend: str  # eager, compiled, onnx

    @property
    def speedup(self) -> float | None:
        return self.teacher_ms / self.student_ms if self.teacher_ms else None


@dataclass
class TrainingCurves:
    epochs: list[int]
    accuracy: dict[str, list[float]] = field(default_factory=dict)  # train_acc, test_acc (%)
    losses: dict[str, list[float]] = field(default_factory=dict)  # loss, loss_ce, loss_kd ...
    lr: list[float] = field(default_factory=list)


class _Network:
    """graph.json and student.json indexed: layers, what each writes and reads, what is kept."""

    def __init__(self, graph_json: dict, spec: dict | None = None):
        if not isinstance(graph_json, dict) or not {"nodes", "edges"} <= graph_json.keys():
            raise KdsearchError("not a kdsearch graph.json (needs 'nodes' and 'edges')")
        self.nodes = {n["id"]: n for n in graph_json["nodes"]}
        self.order = list(self.nodes)
        self.preds: dict[str, list[str]] = {name: [] for name in self.order}
        for edge in graph_json["edges"]:
            self.preds[edge["target"]].append(edge["source"])
        self._shape_tuple_outputs()
        units = (graph_json.get("graph") or {}).get("units", [])
        spec = spec or {}
        self.cut: dict[str, int] = {}  # channel unit -> channels the student removes
        self.writes: dict[str, str] = {}  # node -> channel unit of its output
        self.reads: dict[str, list[str]] = {}  # node -> channel units of its input
        for unit in (u for u in units if u["kind"] == "channels"):
            self._index_channels(unit, spec.get("channels", {}))
        self.blocks = [u for u in units if u["kind"] == "blocks"]
        self.removed_blocks = {u["id"] for u in self.blocks
                               if u["id"] in spec.get("removed_blocks", {})}
        self.block_of: dict[str, str] = {}  # node -> residual block (its add included)
        for block in self.blocks:
            for name in [*block["nodes"], block["add"]]:
                self.block_of.setdefault(name, block["id"])
        self.removed = {n for n, b in self.block_of.items() if b in self.removed_blocks}

    def _index_channels(self, unit: dict, chosen: dict) -> None:
        kept = len(chosen[unit["id"]]["kept"]) if unit["id"] in chosen else unit["size"]
        self.cut[unit["id"]] = unit["size"] - kept
        for name in [*unit["producers"], *unit["members"]]:  # members: BN, depthwise conv
            self.writes.setdefault(name, unit["id"])
        for name in unit["consumers"]:
            self.reads.setdefault(name, []).append(unit["id"])

    def _shape_tuple_outputs(self) -> None:
        """A layer returning a tuple (``nn.MultiheadAttention``: output, weights) has no
        shape of its own: it takes its first item's, the first getitem that has one."""
        for item in self.order:  # graph order: the first item taken comes first
            node = self.nodes[item]
            source = self.preds[item][0] if self.preds[item] else None
            if node.get("kind") == "getitem" and node.get("shape") and source and \
                    self.nodes[source].get("shape") is None and self.nodes[source].get("macs"):
                # a copy: the caller's graph.json stays as it was
                self.nodes[source] = {**self.nodes[source], "shape": node["shape"]}

    def is_layer(self, name: str) -> bool:
        return self.nodes[name].get("macs", 0) > 0

    def layers(self) -> list[str]:
        return [name for name in self.order if self.is_layer(name)]

    def width(self, name: str | None) -> int:
        shape = self.nodes[name].get("shape") if name else None
        if not shape or len(shape) < 2:
            return 0
        return shape[-1] if _channels_last(self.nodes[name]) else shape[1]

    def kept(self, name: str) -> int:
        if name in self.removed:
            return 0
        return self.width(name) - self.cut.get(self.writes.get(name, ""), 0)

    def stage(self, name: str) -> str:
        shape = self.nodes[name].get("shape") or []
        if len(shape) == 3 and _channels_last(self.nodes[name]):
            return f"{shape[1]} tokens"  # a transformer's [N, tokens, width]
        spatial = shape[1:-1] if _channels_last(self.nodes[name]) else shape[2:]
        return "×".join(map(str, spatial)) if len(shape) > 2 else HEAD

    def student_macs(self, name: str) -> int:
        """MACs of a layer in the student: scaled by kept outputs and, for a layer that
        reads channel units, kept inputs (a depthwise conv reads none: it is a member)."""
        macs, kept_out, width_out = self.nodes[name]["macs"], self.kept(name), self.width(name)
        if not kept_out or not width_out:
            return 0
        width_in = self.width(self._input(name))
        kept_in = width_in - sum(self.cut[u] for u in self.reads.get(name, []))
        if name not in self.reads or not width_in:
            return macs * kept_out // width_out
        return macs * kept_out * kept_in // (width_out * width_in)

    def _input(self, name: str) -> str | None:
        inputs = [p for p in self.preds[name] if self.nodes[p].get("op") != "get_attr"]
        return inputs[0] if inputs else None


def _channels_last(node: dict) -> bool:
    """Whether a layer's output keeps its channels on the last axis: a linear layer (on
    tokens ``[N, L, E]`` or on channels-last maps ``[N, H, W, C]``) or a 3-d output."""
    shape = node.get("shape") or []
    return node.get("kind") == "Linear" or len(shape) == 3


def layer_widths(graph_json: dict, spec: dict | None = None) -> list[LayerWidth]:
    """Output channels of every conv/linear layer, teacher and student, in graph order."""
    net = _Network(graph_json, spec)
    return [LayerWidth(net.nodes[n].get("target") or n, net.stage(n), net.width(n), net.kept(n),
                       n in net.removed) for n in net.layers()]


def stage_macs(graph_json: dict, spec: dict | None = None) -> list[StageMacs]:
    """MACs per stage (resolution level, in order of appearance), teacher and student."""
    net = _Network(graph_json, spec)
    totals: dict[str, list[int]] = {}
    for name in net.layers():
        entry = totals.setdefault(net.stage(name), [0, 0])
        entry[0] += net.nodes[name]["macs"]
        entry[1] += net.student_macs(name)
    return [StageMacs(stage, teacher, student) for stage, (teacher, student) in totals.items()]


def graph_layout(graph_json: dict, spec: dict | None = None) -> GraphLayout:
    """Layer graph positions: one row per stage, columns by depth (longest path) in the row.

    Nodes sharing a column (a projection shortcut beside the block's first conv) are
    stacked: the one on the longest path stays on the row's line, the others rise above.
    """
    net = _Network(graph_json, spec)
    shown, edges = _layer_graph(net)
    depth, spine = _depths(shown, edges)
    rows, stages = _rows(net, shown)
    first: dict[int, int] = {}
    for name in shown:
        first[rows[name]] = min(first.get(rows[name], depth[name]), depth[name])
    column = {name: depth[name] - first[rows[name]] for name in shown}
    stacks: dict[tuple[int, int], list[str]] = {}
    for name in sorted(shown, key=lambda n: n not in spine):  # stable: spine first
        stacks.setdefault((rows[name], column[name]), []).append(name)
    lane = {name: i for stack in stacks.values() for i, name in enumerate(stack)}
    groups = _groups(net, shown, edges)
    nodes = [LayoutNode(name, _label(net, name), _kind(net, name), rows[name],
                        float(column[name]), -ROW_GAP * rows[name] + LANE_GAP * lane[name],
                        net.width(name), net.kept(name), name in net.removed,
                        net.block_of.get(name), groups[name])
             for name in shown]
    return GraphLayout(nodes, edges, stages, _group_spans(nodes))


def _layer_graph(net: _Network) -> tuple[list[str], list[tuple[str, str]]]:
    """Input, layers and merges, with edges through everything else contracted."""
    via: dict[str, list[str]] = {}  # node -> nearest shown nodes feeding it
    shown, edges = [], []
    for name in net.order:
        node = net.nodes[name]
        if node.get("op") in ("get_attr", "output"):
            continue
        sources = list(dict.fromkeys(s for p in net.preds[name] for s in via.get(p, [])))
        keep = (node.get("op") == "placeholder" or net.is_layer(name)
                or (node.get("kind") in MERGE_KINDS and len(sources) > 1))
        if keep:
            shown.append(name)
            edges.extend((source, name) for source in sources)
        via[name] = [name] if keep else sources
    return shown, edges


def _depths(shown: list[str], edges: list[tuple[str, str]]) -> tuple[dict[str, int], set[str]]:
    preds: dict[str, list[str]] = {name: [] for name in shown}
    for source, target in edges:
        preds[target].append(source)
    depth = {}
    for name in shown:  # graph order is topological
        depth[name] = 1 + max((depth[p] for p in preds[name]), default=-1)
    spine, name = set(), max(shown, key=lambda n: depth[n]) if shown else None
    while name is not None:
        spine.add(name)
        name = max(preds[name], key=lambda p: depth[p], default=None)
    return depth, spine


def _rows(net: _Network, shown: list[str]) -> tuple[dict[str, int], list[str]]:
    """Row of each shown node (its stage's index; the input and the head join the first
    and last rows) and the stage of each row."""
    index: dict[str, int] = {}
    for name in shown:
        if net.is_layer(name) and net.stage(name) != HEAD:
            index.setdefault(net.stage(name), len(index))
    last = max(index.values(), default=0)
    rows = {name: index.get(net.stage(name), 0 if _kind(net, name) == "input" else last)
            for name in shown}
    return rows, list(index) or [HEAD]


def _kind(net: _Network, name: str) -> str:
    node = net.nodes[name]
    if node.get("op") == "placeholder":
        return "input"
    if not net.is_layer(name):
        return "merge"
    return "linear" if len(node.get("shape") or []) <= 2 else "conv"


def _label(net: _Network, name: str) -> str:
    node = net.nodes[name]
    return node.get("target") if node.get("op") == "call_module" else node.get("kind", name)


def _groups(net: _Network, shown: list[str], edges: list[tuple[str, str]]) -> dict[str, str]:
    """The module each node belongs to: its path cut to the depth that tells residual blocks
    apart (``blocks.1.1`` for ``blocks.1.1.conv.3``), or its parent module in a network
    without blocks. A merge joins its block, or else the group of its latest input."""
    cut = _group_depth(net)
    groups: dict[str, str] = {}
    for name in shown:
        kind = _kind(net, name)
        if kind in ("conv", "linear"):
            parts = _label(net, name).split(".")
            groups[name] = ".".join(parts[:cut if cut else max(len(parts) - 1, 1)])
        elif kind == "merge":
            block = net.block_of.get(name)
            last = max((s for s, t in edges if t == name), key=shown.index, default=None)
            label = next(b["label"] for b in net.blocks if b["id"] == block) if block else ""
            groups[name] = ".".join(label.split(".")[:cut]) if block else groups.get(last, name)
        else:
            groups[name] = kind
    return groups


def _group_depth(net: _Network) -> int | None:
    """The most common depth of block paths, after dropping a last part they all share
    (``blocks.1.1.conv`` -> 3)."""
    paths = [b["label"].split(".") for b in net.blocks]
    while len(paths) > 1 and len({p[-1] for p in paths}) == 1 and min(map(len, paths)) > 1:
        paths = [p[:-1] for p in paths]
    depths = [len(p) for p in paths]
    return max(set(depths), key=depths.count) if depths else None


def _group_spans(nodes: list[LayoutNode]) -> list[LayoutGroup]:
    spans: list[LayoutGroup] = []
    for node in sorted(nodes, key=lambda n: (n.row, n.x)):
        last = spans[-1] if spans else None
        if last and last.label == node.group and last.row == node.row:
            spans[-1] = LayoutGroup(last.label, last.row, last.x0, node.x,
                                    last.removed and node.removed)
        else:
            spans.append(LayoutGroup(node.group, node.row, node.x, node.x, node.removed))
    return spans


def gate_curves(log: list[dict], summary: dict | None = None,
                spec: dict | None = None) -> GateCurves:
    """One point per logged step: each unit's mean gate, live and target MACs; the budget
    and teacher MACs from ``summary``, the removed blocks from ``spec``."""
    if not log:
        raise KdsearchError("search log is empty")
    units = list(dict.fromkeys(u for record in log for u in record.get("gate_mean", {})))
    summary = summary or {}
    return GateCurves(
        steps=[int(record.get("step", i)) for i, record in enumerate(log)],
        gates={u: [_number(r.get("gate_mean", {}).get(u)) for r in log] for u in units},
        live_macs=[_number(r.get("live_macs")) for r in log],
        target_macs=[_number(r.get("target_macs")) for r in log],
        soft_macs=[_number(r.get("soft_macs")) for r in log] if "soft_macs" in log[0] else [],
        budget_macs=summary.get("budget_macs"),
        teacher_macs=(summary.get("teacher") or {}).get("macs"),
        removed=frozenset((spec or {}).get("removed_blocks", {})),
    )


def training_curves(metrics: list[dict]) -> TrainingCurves:
    """Accuracies (``*_acc``), losses (``loss``, ``loss_*``) and lr per logged epoch."""
    if not metrics:
        raise KdsearchError("metrics log is empty")
    keys = list(dict.fromkeys(k for record in metrics for k in record))

    def series(key: str) -> list[float]:
        return [_number(record.get(key)) for record in metrics]

    return TrainingCurves(
        epochs=[int(record.get("epoch", i + 1)) for i, record in enumerate(metrics)],
        accuracy={k: series(k) for k in keys if k.endswith("_acc")},
        losses={k: series(k) for k in keys if k == "loss" or k.startswith("loss_")},
        lr=series("lr") if "lr" in keys else [],
    )


def _number(value) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def speed(latency_json: dict, teacher: str | None = None) -> Speed:
    """The figures of a ``latency.json``; ``teacher``: the run's teacher, which the file
    must have timed if it timed one."""
    if not isinstance(latency_json, dict) or not isinstance(latency_json.get("latency"), dict):
        raise KdsearchError("not a kdsearch latency.json (needs 'latency')")
    if teacher and latency_json.get("teacher") not in (None, teacher):
        raise KdsearchError(f"latency.json timed teacher {latency_json['teacher']}, but the "
                            f"run's teacher is {teacher}")
    first, other = latency_json["latency"], latency_json.get("teacher_latency") or {}
    return Speed(float(first["median_ms"]), _optional(other.get("median_ms")),
                 int(first["batch_size"]), str(first["device"]), str(first["backend"]))


def _optional(value) -> float | None:
    return None if value is None else float(value)


FOCUS_EPOCHS = 6  # curves shorter than this are shown whole


def focus_range(series: list[list[float]], pad: float = 0.1) -> tuple[float, float] | None:
    """A y-range for accuracy curves that shows the differences between the later epochs:
    from the lowest value of the later half of every series to the highest value overall,
    padded; None when that would hide nothing (the full range is as good) or the curves
    are shorter than :data:`FOCUS_EPOCHS`."""
    if max(map(len, series), default=0) < FOCUS_EPOCHS:
        return None
    values = [v for s in series for v in s if v == v]
    late = [v for s in series for v in s[len(s) // 2:] if v == v]
    if not late:
        return None
    low, high = min(late), max(values)
    margin = max(0.5, pad * (high - low))
    if low - margin <= min(values):
        return None
    return low - margin, high + margin


def run_label(summary: dict, fallback: str) -> str:
    """A training run as a reader names it, from its ``summary.json``: ``hand-designed
    digits_resnet8``, ``searched @ like:digits_resnet8`` (a compare run: kind and student),
    ``searched @ 0.5x`` (a pipeline's distillation of ``search/0.5x/student.json``),
    ``teacher resnet56``; ``fallback`` (the folder) when the summary says nothing."""
    student, kind = str(summary.get("student") or ""), str(summary.get("kind") or "")
    if not student and summary.get("model"):
        return f"teacher {summary['model']}"
    if kind and f" {kind} " in f" {student} ":  # "resnet56 l1 @ like:resnet20"
        return kind + student.split(f" {kind}", 1)[1]
    if kind:
        return f"{kind} {student}"
    if student.endswith(".json"):  # a spec: the search it came from names it
        folder = student.replace("\\", "/").split("/")[:-1]
        if len(folder) >= 2 and folder[-2] == "search":
            return f"searched @ {folder[-1]}"
        return "/".join(student.replace("\\", "/").split("/")[-2:])
    return student or fallback
