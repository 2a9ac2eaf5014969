"""Re-views of the pooled features whose indices or shapes the graph computes from shapes.

The dynamo exporter spells ``as_strided`` after the pooling (ConvNeXt's
``adaptive_avg_pool2d`` then LayerNorm2d) as a Reshape to 1-D and a Gather whose indices are
built from the batch size (Shape, Range, Mul, Add). Such a node is accepted only when it is
proven to hand on each sample's features unchanged and in order: its whole subgraph (the
re-view chain from the last tensor of shape ``(batch, features)`` and the index arithmetic
from shapes and constants) is evaluated by onnx's reference evaluator, as constants are
folded, for several batch sizes on distinct values; the result must be those values, batch
axis first. The model itself is never run.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from ..errors import ModelError
from .model import GraphIndex

# Ops that only move or select values: the chain from the source tensor to the re-view.
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout",
                      "Transpose", "Cast", "Gather", "GatherElements", "GatherND", "Slice"})
# Ops that may compute indices and shapes from Shape/Size of tensors and constants.
SHAPE_ARITHMETIC = frozenset({
    "Shape", "Size", "Constant", "ConstantOfShape", "Identity", "Cast", "Range", "Add", "Sub",
    "Mul", "Div", "Mod", "Neg", "Abs", "Max", "Min", "Floor", "Ceil", "Unsqueeze", "Squeeze",
    "Reshape", "Flatten", "Concat", "Gather", "Slice", "Expand", "Tile", "Transpose", "Where",
    "Equal", "Less", "Greater", "ReduceProd", "ReduceSum", "CumSum"})
BATCH_SIZES = (2, 3, 5)  # a free batch axis is tried at each


def holds_features(ix: GraphIndex, name: str, width: int) -> bool | None:
    """Whether tensor ``name`` has static shape ``(batch, 1.., width, 1..)``: one sample per
    row of the first axis, its features in order (None: shape unknown)."""
    dims = ix.static_dims(name)
    if dims is None:
        return None
    rest = dims[1:]
    return (len(dims) >= 2 and all(isinstance(d, int) for d in rest)
            and math.prod(rest) == width and sum(d != 1 for d in rest) <= 1)


def review_source(ix: GraphIndex, dep: frozenset[str], node: onnx.NodeProto,
                  width: int) -> tuple[str | None, str]:
    """The tensor of shape ``(batch, width)`` (up to unit axes) whose features ``node``'s
    output holds unchanged and in order, and ``""``; or None and why not."""
    op = node.op_type
    if any(i in dep for i in node.input[1:]):
        return None, f"{op} after the pooling with feature-dependent indices or shape"
    chain, t = set(), node.input[0]
    while not holds_features(ix, t, width):
        p = ix.producer.get(t)
        if p is None or p.op_type not in VIEW_OPS or p.input[0] not in dep:
            return None, (f"{op} after the pooling: cannot tell how '{t}' holds the pooled "
                          f"features (no re-view of a (batch, {width}) tensor before it)")
        chain.add(t)
        t = p.input[0]
    src = t
    shaped = _shape_inputs(ix, node, src) - chain
    dims = {name: ix.static_dims(name) for name in shaped | {src}}
    unknown = next((n for n, d in dims.items() if d is None or None in d), None)
    if unknown is not None:
        return None, f"{op} after the pooling reads the shape of '{unknown}', which is unknown"
    symbols = sorted({d for ds in dims.values() for d in ds if isinstance(d, str)})
    batch = dims[src][0]
    for n in (batch,) if isinstance(batch, int) else BATCH_SIZES:
        # every other free dim gets its own value, distinct from the batch size
        sizes = {s: n + 7 * (i + 1) for i, s in enumerate(x for x in symbols if x != batch)}
        sizes[batch] = n
        shape = {k: tuple(sizes.get(d, d) for d in ds) for k, ds in dims.items()}
        ids = np.arange(math.prod(shape[src]), dtype=np.float64).reshape(shape[src])
        feeds = {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in shape.items()}
        feeds[src] = ids
        try:
            out = ix.evaluate(node.output[0], feeds, SHAPE_ARITHMETIC | VIEW_OPS)
        except ModelError as exc:
            return None, f"{op} after the pooling: {exc}"
        if out.shape[:1] != (n,) or out.size != ids.size or not np.array_equal(
                out.reshape(n, -1), ids.reshape(n, -1)):
            return None, (f"{op} after the pooling is not a pure re-view of the pooled "
                          f"features '{src}': at batch size {n} it reorders, drops, repeats "
                          f"or mixes values across samples")
    return src, ""


def _shape_inputs(ix: GraphIndex, node: onnx.NodeProto, src: str) -> set[str]:
    """The tensors whose shape (Shape, Size) ``node``'s output depends on, up to ``src``."""
    found, seen, todo = set(), set(), list(node.input)
    while todo:
        t = todo.pop()
        if not t or t in seen or t == src or ix.is_const(t):
            continue
        seen.add(t)
        p = ix.producer.get(t)
        if p is None:
            continue  # a model input read directly: the evaluator names it
        if p.op_type in ("Shape", "Size"):
            found.add(p.input[0])
        else:
            todo.extend(p.input)
    return found
