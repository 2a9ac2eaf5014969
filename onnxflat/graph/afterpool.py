"""Assemble the head after the pooling (pooled features -> logits) into :class:`AfterPool`.

Walks the nodes downstream of the pooling in graph order; each node's rule
(``patterns.AFTER_POOL_RULES``) says what it does to the feature-dependent tensors. A tensor
is either a value of the head (an index into its SSA ops) or part of an open elementwise
segment (steps from one value), which becomes a :class:`Pointwise` op where an affine map,
LayerNorm, residual sum or the logits read it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .head import AfterPool, Dense, HeadOp, LayerNorm, Operand, Pointwise, Residual, Step
from .model import Frontier, GraphIndex
from .patterns import (
    TERMINAL,
    Alias,
    Elementwise,
    Linear,
    Match,
    Norm,
    PoolCtx,
    Sum,
    after_pool_step,
)

SHAPE_ONLY = ("Shape", "Size")


@dataclass(frozen=True)
class _Segment:
    """Elementwise steps from value ``root`` (labelled ``_root_label(root)``) to ``label``."""

    root: int
    steps: tuple[Step, ...]
    label: str


def _root_label(k: int) -> str:
    return f"#value{k}"


class _Builder:
    def __init__(self, ix: GraphIndex, features: int, source: str):
        self.ix = ix
        self.ops: list[HeadOp] = []
        self.widths = [features]
        self.refs: dict[str, int | _Segment] = {source: 0}
        self.names = {0: source}  # an ONNX tensor holding each value

    def width(self, name: str) -> int:
        ref = self.refs[name]
        return self.widths[ref if isinstance(ref, int) else ref.root]

    def add(self, op: HeadOp, width: int, name: str) -> int:
        self.ops.append(op)
        self.widths.append(width)
        k = len(self.ops)
        self.names[k] = name
        return k

    def value(self, name: str) -> int:
        """The value index of tensor ``name`` (closing its elementwise segment if open)."""
        ref = self.refs[name]
        if not isinstance(ref, _Segment):
            return ref
        n = _affine_prefix(ref.steps, _root_label(ref.root))
        if 0 < n < len(ref.steps):
            # a bias Add or a scale before an activation: its own Dense (MatMul + Add)
            mid = ref.steps[n - 1].output
            k = self.value_of(_Segment(ref.root, ref.steps[:n], mid), mid)
            rest = tuple(Step(st.node, st.fn, tuple(
                Operand("dep", _root_label(k)) if o.kind == "dep" and o.name == mid else o
                for o in st.inputs), st.output, st.params) for st in ref.steps[n:])
            ref = _Segment(k, rest, ref.label)
        k = self.value_of(ref, name)
        self.refs[name] = k
        return k

    def value_of(self, ref: _Segment, name: str) -> int:
        """Close segment ``ref`` (ending at tensor ``name``) into an op; its value index."""
        w = self.widths[ref.root]
        affine = _affine(ref.steps, w)
        nodes = tuple(s.node for s in ref.steps)
        prev = self.ops[-1] if self.ops and ref.root == len(self.ops) else None
        if affine is None:
            k = self.add(Pointwise(ref.root, _root_label(ref.root), ref.steps, ref.label), w,
                         name)
        elif isinstance(prev, Dense) and np.all(affine[0] == 1.0) and len([
                n for n in self.ix.consumers.get(self.names[ref.root], [])
                if n.op_type not in SHAPE_ONLY]) == 1:
            # a constant Add/Sub right after an affine layer is its bias (MatMul + Add)
            self.ops[-1] = Dense(prev.input, prev.weight, prev.bias + affine[1],
                                 prev.nodes + nodes, prev.stored, prev.input_name)
            k = ref.root
            self.names[k] = name
        else:
            k = self.add(Dense(ref.root, affine[0], affine[1], nodes, False,
                               self.names[ref.root]), w, name)
        return k

    def apply(self, node: onnx.NodeProto, eff) -> Match | None:
        name = GraphIndex.node_name(node)
        out = node.output[0]
        if isinstance(eff, Alias):
            self.refs[out] = self.refs[eff.input]
        elif isinstance(eff, Linear):
            k = self.value(eff.input)
            bias = np.broadcast_to(np.asarray(eff.bias, np.float64),
                                   (eff.weight.shape[0],)).copy()
            op = Dense(k, eff.weight, bias, (name,), eff.stored, self.names[k])
            self.refs[out] = self.add(op, int(eff.weight.shape[0]), out)
        elif isinstance(eff, Elementwise):
            return self._step(node, eff.step)
        elif isinstance(eff, Norm):
            k = self.value(eff.input)
            w = self.widths[k]
            op = LayerNorm(k, np.ones(w) if eff.scale is None else eff.scale,
                           np.zeros(w) if eff.bias is None else eff.bias, eff.epsilon, eff.nodes)
            self.refs[eff.output] = self.add(op, w, eff.output)
        elif isinstance(eff, Sum):
            a, b = self.value(eff.a), self.value(eff.b)
            if self.widths[a] != self.widths[b]:
                return Match.fail(node, f"{node.op_type} of {self.widths[a]} and "
                                        f"{self.widths[b]} features broadcasts")
            if eff.negate_b:
                w = self.widths[b]
                b = self.add(Dense(b, -np.ones(w), np.zeros(w), (name,), False, eff.b), w,
                             eff.b)
            self.refs[out] = self.add(Residual((a, b), name), self.widths[a], out)
        return None

    def _step(self, node: onnx.NodeProto, step: Step) -> Match | None:
        roots, steps, ops = set(), [], []
        for op in step.inputs:
            if op.kind != "dep":
                ops.append(op)
                continue
            ref = self.refs[op.name]
            if isinstance(ref, int):
                roots.add(ref)
                ops.append(Operand("dep", _root_label(ref)))
            else:
                roots.add(ref.root)
                steps += [s for s in ref.steps if s not in steps]
                ops.append(Operand("dep", ref.label))
        if len(roots) != 1:
            return Match.fail(node, f"{node.op_type} of two different branches after the "
                                    "pooling (not elementwise in one value)")
        new = Step(step.node, step.fn, tuple(ops), step.output, step.params)
        self.refs[step.output] = _Segment(roots.pop(), tuple(steps) + (new,), step.output)
        return None


def _affine_prefix(steps: tuple[Step, ...], root: str) -> int:
    """How many leading steps form a chain of constant affine maps from ``root`` that the
    later steps read only through its end (0 if none or not separable)."""
    n, cur = 0, root
    for st in steps:
        deps = [o.name for o in st.inputs if o.kind == "dep"]
        if deps != [cur] or _affine((st,), 1 if not st.inputs else _width(st)) is None:
            break
        n, cur = n + 1, st.output
    inner = {root} | {st.output for st in steps[:max(n - 1, 0)]}
    if any(o.kind == "dep" and o.name in inner for st in steps[n:] for o in st.inputs):
        return 0
    return n


def _width(step: Step) -> int:
    return max((o.value.size for o in step.inputs if o.kind == "const"), default=1)


def _affine(steps: tuple[Step, ...], width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """A chain of steps that only add, subtract, multiply or divide by constants as
    ``(scale, shift)`` ``(width,)``; None if any step is not such a map."""
    s, t = np.ones(width), np.zeros(width)
    for step in steps:
        deps = [i for i, o in enumerate(step.inputs) if o.kind == "dep"]
        if step.fn in ("identity", "neg") and len(step.inputs) == 1:
            s, t = (s, t) if step.fn == "identity" else (-s, -t)
            continue
        if step.fn not in ("add", "sub", "mul", "div") or len(deps) != 1 \
                or len(step.inputs) != 2:
            return None
        c = np.broadcast_to(step.inputs[1 - deps[0]].value, (width,))
        if step.fn == "add":
            t = t + c
        elif step.fn == "sub":
            s, t = (s, t - c) if deps[0] == 0 else (-s, c - t)
        elif step.fn == "mul":
            s, t = s * c, t * c
        elif deps[0] == 0:
            s, t = s / c, t / c
        else:
            return None
    return s, t


def match_after_pool(ix: GraphIndex, pool: onnx.NodeProto, features: int) -> Match[AfterPool]:
    """The ops from the pooling output to the logits, or the node that does not fit."""
    b = _Builder(ix, features, pool.output[0])
    softmax, done = None, set()
    frontier = Frontier(ix, ix.consumers.get(pool.output[0], []))
    for node in frontier:
        if node.op_type in SHAPE_ONLY or id(node) in done:
            continue
        if node.op_type in TERMINAL:
            if softmax is not None or not _reaches_output(ix, node.output[0]):
                return Match.fail(node, f"{node.op_type} inside the head after the pooling "
                                        "(only a trailing one, producing the graph output, is "
                                        "supported)")
            softmax = (GraphIndex.node_name(node), node.input[0])
            continue
        widths = {n: b.width(n) for n in node.input if n in b.refs}
        m = after_pool_step(PoolCtx(ix, frozenset(b.refs), widths), node)
        if not m:
            return m
        bad = b.apply(node, m.value)
        if bad is not None:
            return bad
        outs = [m.value.output] if isinstance(m.value, Norm) else [node.output[0]]
        if isinstance(m.value, Norm):
            names = set(m.value.nodes)
            done |= {id(n) for n in ix.nodes if GraphIndex.node_name(n) in names}
        for extra in node.output[1:]:
            if extra and ix.consumers.get(extra) and not isinstance(m.value, Norm):
                return Match.fail(node, f"second output '{extra}' of {node.op_type} is used")
        for out in outs:
            if not ix.consumers.get(out) and out not in ix.graph_outputs:
                return Match.fail(pool, f"the pooled features reach no graph output (stop at "
                                        f"'{out}')")
            frontier.push(ix.consumers.get(out, []))
    if softmax is not None:
        logits = softmax[1]
    else:
        outs = [o for o in ix.graph_outputs if o in b.refs]
        if not outs:
            return Match.fail(pool, "the pooled features reach no graph output")
        if len(outs) > 1:
            return Match.fail(pool, f"several graph outputs depend on the pooled features "
                                    f"({', '.join(outs)})")
        logits = outs[0]
    k = b.value(logits)
    unused = _unused(b.ops, k)
    if unused:
        return Match.fail(unused, "this node after the pooling does not lead to the logits")
    ops = tuple(b.ops)
    return Match(AfterPool(features, ops, logits, softmax and softmax[0], _classifier(ops)))


def _unused(ops: list[HeadOp], k: int) -> str | None:
    """A node of an op that the logits (value k) do not read, or None."""
    need, todo = set(), [k]
    while todo:
        v = todo.pop()
        if v == 0 or v in need:
            continue
        need.add(v)
        op = ops[v - 1]
        todo += list(op.inputs) if isinstance(op, Residual) else [op.input]
    for i, op in enumerate(ops, 1):
        if i not in need:
            return op.node if isinstance(op, Residual) else (
                op.steps[-1].node if isinstance(op, Pointwise) else op.nodes[0])
    return None


def _classifier(ops: tuple[HeadOp, ...]) -> int | None:
    """The last stored Dense followed only by a chain of Dense ops, or None."""
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        if isinstance(op, Dense) and op.stored:
            return i
        if not isinstance(op, Dense) or op.input != i:
            return None
    return None


def _reaches_output(ix: GraphIndex, name: str) -> bool:
    while name not in ix.graph_outputs:
        nxt = ix.consumers.get(name, [])
        if len(nxt) != 1 or nxt[0].op_type not in ("Identity", "Flatten", "Reshape", "Squeeze",
                                                   "Cast"):
            return False  # Cast: a float16 model's float32 output (keep_io_types)
        name = nxt[0].output[0]
    return True
