"""Find the conv -> channel-wise -> global-average-pool -> head-after-pooling of an ONNX graph.

The analyzer only reads the graph (it never runs the model). It starts at the global
average pooling, reads the nodes after it (graph/afterpool.py), walks back through
channel-wise nodes to the convolutions that feed it, and checks forward that each conv
output reaches the logits only through that pooling. Failures name the node and the reason.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import onnx

from ..errors import HeadNotFoundError, ModelError
from .afterpool import SHAPE_ONLY, match_after_pool
from .head import (
    NHWC,
    UNIT,
    AfterPool,
    Conv,
    Head,
    Layer,
    Operand,
    Pooling,
    Step,
    channel_first,
    layout_name,
)
from .model import Frontier, GraphIndex, load_model
from .patterns import (
    BINARY,
    LAYER_NOTES,
    NOT_AVERAGE_POOLING,
    POOLING_OPS,
    UNARY,
    UNARY_WITH_ATTRS,
    Ctx,
    Match,
    channelwise_step,
    pooling_axes,
)

MAX_FEATURES = 1 << 20  # pooled features a classifier may have (its weight is dense)

# Nodes whose weight the measures differentiate: a Conv, or a MatMul over the channel axis.
LAYER_OPS = tuple(LAYER_NOTES)
# Ops that quantize activations or compute on quantized ones. On the head's path they make
# the loss piecewise constant in the kernel (zero derivatives almost everywhere): such
# models are refused; weights stored as integers behind DequantizeLinear are folded instead.
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger",
                 "MatMulInteger", "QLinearConv", "QLinearMatMul")
QUANTIZED_REASON = ("{op}: the head's activations are quantized (their derivatives in the kernel "
                    "vanish almost everywhere); onnxflat measures float activations (integer "
                    "weights behind DequantizeLinear are dequantized): measure the float model "
                    "before quantization")
CHANNELWISE_OPS = (set(UNARY) | set(UNARY_WITH_ATTRS) | set(BINARY)
                   | {"Clip", "Cast", "BatchNormalization", "Transpose", "Concat", "Slice",
                      "Split", "Unsqueeze", "Squeeze"})


@dataclass(frozen=True)
class HeadParts:
    """Payload of a matched pooling: what :class:`Head` holds besides the model input."""

    layers: tuple[Layer, ...]
    pooling: Pooling
    after: AfterPool
    rejected: tuple[tuple[str, str], ...]


def analyze(path: str | os.PathLike) -> Head:
    """Load ``path`` and describe its head (never runs the model).

    Raises:
        ModelError: the file is missing, corrupt, unsafe or of an unsupported opset.
        HeadNotFoundError: no supported head; ``node`` and ``reason`` say where and why.
    """
    return analyze_model(load_model(path), str(path))


def analyze_model(model: onnx.ModelProto, path: str = "<memory>") -> Head:
    """Describe the head of an in-memory model (see :func:`analyze`)."""
    ix = GraphIndex(model)
    inp = _model_input(ix)
    pool = _the_pooling(ix)
    m = _match_head(ix, pool)
    if not m:
        raise HeadNotFoundError(m.node, m.reason)
    h = m.value
    return Head(path, inp.name, _dims(inp), _dtype(inp), h.layers, h.pooling, h.after,
                h.rejected)


def _the_pooling(ix: GraphIndex) -> onnx.NodeProto:
    """The head's pooling: the last global average pooling in graph order (a squeeze-
    excitation gate's pooling comes before it). Which pooling is global is decided here,
    before anything after it is read; raises HeadNotFoundError when there is none."""
    not_global = None
    for node in reversed(ix.nodes):
        if node.op_type not in POOLING_OPS or _on_features(ix, node):
            continue
        m = _pooling_candidate(ix, node)
        if m:
            return node
        not_global = not_global or m
    if not_global is not None:
        raise HeadNotFoundError(not_global.node, not_global.reason)
    other = [n for n in ix.nodes if n.op_type in NOT_AVERAGE_POOLING]
    if other:
        raise HeadNotFoundError(GraphIndex.node_name(other[-1]),
                                f"{other[-1].op_type} is not a global average pooling; "
                                "the head needs GlobalAveragePool or a ReduceMean over the "
                                "spatial axes")
    quantized = [n for n in ix.nodes if n.op_type in ("ConvInteger", "QLinearConv")]
    if quantized and not any(n.op_type == "Conv" for n in ix.nodes):
        raise HeadNotFoundError(GraphIndex.node_name(quantized[-1]),
                                QUANTIZED_REASON.format(op=quantized[-1].op_type))
    if not any(n.op_type == "Conv" for n in ix.nodes):
        raise HeadNotFoundError(None, "the model has no Conv node")
    raise HeadNotFoundError(None, "no global average pooling (GlobalAveragePool, ReduceMean "
                                  "over the spatial axes, or a whole-map AveragePool) in the "
                                  "graph")


def _on_features(ix: GraphIndex, node: onnx.NodeProto) -> bool:
    """A ReduceMean of a tensor of rank <= 2 (a LayerNorm's after the pooling): no
    spatial axes to pool."""
    dims = ix.static_dims(node.input[0])
    return node.op_type == "ReduceMean" and dims is not None and len(dims) <= 2


def _pooling_candidate(ix: GraphIndex, node: onnx.NodeProto) -> Match:
    """Whether a pooling node averages a whole map, as far as it can be told before the
    conv's layout is known: a ReduceMean of a rank-r tensor must average r - 2 axes, none of
    them the batch axis (not a mean over the channels of a map, as in a spatial attention
    gate, nor over a map and its channels)."""
    if node.op_type == "AveragePool":
        return pooling_axes(ix, node, 4)
    dims = ix.static_dims(node.input[0])
    if node.op_type != "ReduceMean" or dims is None:
        return Match(())
    m = pooling_axes(ix, node, len(dims))
    if m and (0 in m.value or len(m.value) != len(dims) - 2):
        return Match.fail(node, f"ReduceMean averages axes {list(m.value)} of a rank-"
                                f"{len(dims)} tensor: not the conv's spatial axes")
    return m


def _model_input(ix: GraphIndex) -> onnx.ValueInfoProto:
    ins = ix.graph_inputs
    if len(ins) != 1:
        raise ModelError(f"the model has {len(ins)} inputs ({', '.join(i.name for i in ins)}); "
                         "onnxflat feeds exactly one image tensor")
    t = ins[0].type.tensor_type
    if t.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                           onnx.TensorProto.DOUBLE):
        kind = (onnx.TensorProto.DataType.Name(t.elem_type)
                if t.elem_type in onnx.TensorProto.DataType.values() else t.elem_type)
        raise ModelError(f"model input '{ins[0].name}' has element type {kind}, not a float "
                         "image")
    return ins[0]


def _dims(vi: onnx.ValueInfoProto) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in vi.type.tensor_type.shape.dim)


def _dtype(vi: onnx.ValueInfoProto) -> str:
    return str(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))


def _match_head(ix: GraphIndex, pool: onnx.NodeProto) -> Match[HeadParts]:
    convs, blockers, quantized = _convs_upstream(ix, pool.input[0])
    # Quantized activations decide before the classifier (quantize_dynamic quantizes both).
    quantized = quantized or _quantized_after(ix, pool)
    if quantized:
        return quantized[-1]
    layers, rejected, rejected_convs = [], [], []
    for conv in convs:
        m = _match_layer(ix, conv, pool)
        if m:
            layers.append(m.value)
        else:
            rejected.append(m)
            rejected_convs.append(conv)
    # The head after the pooling is checked first: an op there that does not fit is the
    # reason a model fails even when its convs would qualify.
    features = _num_features(ix, pool, layers)
    m = match_after_pool(ix, pool, features) if features else None
    if m is not None and not m:
        return m
    if not layers:
        if rejected:
            return _nearest_refusal(ix, pool, rejected_convs, rejected)
        if blockers:
            return blockers[0]
        return Match.fail(pool, "no Conv reaches the pooling through channel-wise operations")
    if m is None:
        raise HeadNotFoundError(GraphIndex.node_name(pool), "cannot determine the number of "
                                                            "pooled features")
    for layer in layers:
        if int(layer.feature_index.max()) >= m.value.features:
            return Match.fail(pool, "the conv's channels do not fit the classifier's input")
    pooling = Pooling(GraphIndex.node_name(pool), pool.op_type, pool.input[0], pool.output[0])
    return Match(HeadParts(tuple(layers), pooling, m.value,
                           tuple((r.node, r.reason) for r in rejected)))


def _quantized_after(ix: GraphIndex, pool: onnx.NodeProto) -> list[Match]:
    """The refusal at the first op after the pooling that quantizes activations, if any."""
    frontier = Frontier(ix, ix.consumers.get(pool.output[0], []))
    for node in frontier:
        if node.op_type in QUANTIZED_OPS:
            return [Match.fail(node, QUANTIZED_REASON.format(op=node.op_type))]
        for out in node.output:
            frontier.push(ix.consumers.get(out, []))
    return []


def _nearest_refusal(ix: GraphIndex, pool: onnx.NodeProto, convs: list[onnx.NodeProto],
                     rejected: list[Match]) -> Match:
    """The refusal to report when no conv qualifies: that of the conv nearest the pooling
    (last in graph order), passing over convs that only feed another conv and the convs of a
    gate on a 1x1 map (a squeeze-excitation's), which are no head candidates."""
    conv_names = {GraphIndex.node_name(n) for n in ix.nodes if n.op_type in LAYER_OPS}
    pooled = ix.static_dims(pool.input[0])

    def on_1x1(conv: onnx.NodeProto) -> bool:
        dims = ix.static_dims(conv.output[0])
        return (dims is not None and tuple(dims[2:]) == (1, 1)
                and (pooled is None or tuple(pooled[2:]) != (1, 1)))

    ranked = sorted(zip(convs, rejected), key=lambda cr: (
        cr[1].node in conv_names, on_1x1(cr[0]), -ix.order[id(cr[0])]))
    return ranked[0][1]


def _convs_upstream(ix: GraphIndex, start: str
                    ) -> tuple[list[onnx.NodeProto], list[Match], list[Match]]:
    """Layer nodes (Conv, pointwise MatMul) reachable backwards from ``start`` through
    channel-wise nodes, in graph order;
    the refusals at the other nodes reached, and at those that quantize activations."""
    convs, blockers, quantized, seen, stack = {}, [], [], set(), [start]
    while stack:
        t = stack.pop()
        node = ix.producer.get(t)
        if t in seen or node is None or ix.is_const(t):
            continue
        seen.add(t)
        if node.op_type in LAYER_OPS or _tensordot(ix, node) is not None:
            convs[id(node)] = node
        elif node.op_type in CHANNELWISE_OPS:
            stack.extend(i for i in node.input if i)
        elif node.op_type in QUANTIZED_OPS:
            quantized.append(Match.fail(node, QUANTIZED_REASON.format(op=node.op_type)))
        else:
            dims = ix.static_dims(node.input[0]) if node.input else None
            rank = len(dims) if dims else 4
            blockers.append(channelwise_step(Ctx(ix, frozenset(node.input[:1]),
                                                 channel_first(rank)), node))
    return sorted(convs.values(), key=lambda n: ix.order[id(n)]), blockers, quantized


def _conv(ix: GraphIndex, node: onnx.NodeProto) -> Match[Conv]:
    if node.op_type == "MatMul":
        return _pointwise(ix, node)
    if node.op_type == "Reshape":
        return _pointwise(ix, _tensordot(ix, node), back=node)
    a = ix.attrs(node)
    k = ix.const(node.input[1])
    if k is None:
        return Match.fail(node, f"the conv kernel is not a constant: "
                                f"{ix.why_not_const(node.input[1])}")
    if k.ndim not in (3, 4, 5):
        return Match.fail(node, f"only 1-D, 2-D and 3-D convolutions are supported (kernel "
                                f"rank {k.ndim})")
    r = k.ndim - 2
    b = ix.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if len(node.input) > 2 and node.input[2] and b is None:
        return Match.fail(node, "the conv bias is not a constant")
    for key, n in (("strides", r), ("dilations", r), ("pads", 2 * r), ("kernel_shape", r)):
        if key in a and len(a[key]) != n:
            return Match.fail(node, f"the conv's {key} has {len(a[key])} entries for a kernel "
                                    f"with {r} spatial axes")
    if any(v < 1 for key in ("strides", "dilations") for v in a.get(key, ())) or any(
            v < 0 for v in a.get("pads", ())):
        return Match.fail(node, "the conv has a stride or dilation below 1 or a negative pad")
    if "kernel_shape" in a and tuple(a["kernel_shape"]) != k.shape[2:]:
        return Match.fail(node, f"the conv's kernel_shape {tuple(a['kernel_shape'])} is not "
                                f"its kernel's {k.shape[2:]}")
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    return Match(Conv(
        notes=_precision_notes(ix, node),
        node=GraphIndex.node_name(node), input=node.input[0], output=node.output[0],
        kernel=np.asarray(k, np.float64), bias=None if b is None else np.asarray(b, np.float64),
        strides=_per_axis(a.get("strides"), 1, r), pads=_per_axis(a.get("pads"), 0, 2 * r),
        dilations=_per_axis(a.get("dilations"), 1, r), groups=int(a.get("group", 1)),
        auto_pad=auto_pad))


def _per_axis(values, default: int, n: int) -> tuple[int, ...]:
    """An attribute with ``n`` entries (``default`` each when absent)."""
    return (default,) * n if values is None else tuple(int(v) for v in values)


def _tensordot(ix: GraphIndex, node: onnx.NodeProto) -> onnx.NodeProto | None:
    """The MatMul of tf2onnx's spelling of a Dense on a feature map (TF's Tensordot),
    ``Reshape(x, [-1, C_in]) -> MatMul -> Reshape`` back, when ``node`` is its last Reshape."""
    if node.op_type != "Reshape":
        return None
    mm = ix.producer.get(node.input[0])
    if mm is None or mm.op_type != "MatMul":
        return None
    flat = ix.producer.get(mm.input[0])
    return mm if flat is not None and flat.op_type == "Reshape" else None


def _pointwise(ix: GraphIndex, mm: onnx.NodeProto, back: onnx.NodeProto | None = None) -> Match:
    """A MatMul ``x @ W`` over the last axis of a 4-D tensor as a 1x1 conv with kernel
    ``W^T`` (ConvNeXt's pwconv, Keras Dense on a feature map); ``back``: the Reshape that
    restores the map after a MatMul on its rows (see :func:`_tensordot`). Whether the other
    axes are the positions is checked at the pooling, like any layout; a rank the shape
    inference does not know is checked at run time."""
    w = ix.const(mm.input[1])
    if w is None:
        return Match.fail(mm, "the MatMul weight (right operand) is not a constant: not a "
                              "pointwise layer")
    if w.ndim != 2:
        return Match.fail(mm, f"the MatMul weight has rank {w.ndim}: a pointwise layer needs "
                              "a 2-D constant (C_in x C_out) on the right")
    x, out = mm.input[0], mm.output[0]
    if back is not None:
        flat = ix.producer[x]
        target = ix.const(flat.input[1])
        if target is None or target.shape != (2,) or int(target[1]) != w.shape[0]:
            return Match.fail(flat, f"the Reshape before MatMul '{GraphIndex.node_name(mm)}' "
                                    f"does not make rows of {w.shape[0]} channels")
        users = [n for n in ix.consumers.get(out, []) if n.op_type not in SHAPE_ONLY]
        if len(users) != 1 or users[0] is not back:
            return Match.fail(mm, "the MatMul rows feed other nodes than the Reshape back to "
                                  "the map")
        x, out = flat.input[0], back.output[0]
    for name in (x, out):
        dims = ix.static_dims(name)
        if dims is not None and len(dims) != 4:
            return Match.fail(mm, f"the MatMul {'input' if name == x else 'output'} '{name}' "
                                  f"has rank {len(dims)}: a pointwise layer needs 4-D "
                                  "(N, H, W, C) maps")
    c_in = (ix.static_dims(x) or (None,))[-1]
    if isinstance(c_in, int) and c_in != w.shape[0]:
        return Match.fail(mm, f"the MatMul input '{x}' has {c_in} channels, its weight "
                              f"{w.shape[0]} rows")
    return Match(Conv(
        notes=_precision_notes(ix, mm), node=GraphIndex.node_name(mm), input=x, output=out,
        kernel=np.asarray(w, np.float64).T[:, :, None, None], bias=None, strides=(1, 1),
        pads=(0, 0, 0, 0), dilations=(1, 1), groups=1, op="MatMul", layout=NHWC))
# What float16 arithmetic costs the measures: on the sample model they agree with the float32
# model to 3e-4 relative (tests/test_real_world.py holds them to this bound).
FLOAT16_TOLERANCE = 1e-3


def _precision_notes(ix: GraphIndex, node: onnx.NodeProto) -> tuple[str, ...]:
    """Notes on a conv whose kernel is not stored as plain floats or whose activations are
    not float32/64."""
    notes = []
    origin = ix.origin(node.input[1])
    if origin:
        notes.append(f"measured kernel: {origin}")
    kind = ix.elem_type(node.output[0])
    if kind == onnx.TensorProto.FLOAT16:
        notes.append(f"float16 activations: measures within {FLOAT16_TOLERANCE:g} of the "
                     "float32 model's")
    elif kind == onnx.TensorProto.BFLOAT16:
        notes.append("bfloat16 activations: 8 significant bits, no tolerance tested")
    return tuple(notes)


@dataclass(frozen=True)
class _Channels:
    """Where the conv's channels sit in a tensor of its path: ``held`` the conv channels the
    path's jet carries there (in its order), ``pos`` their indices along the tensor's channel
    axis, ``width`` the tensor's channel count."""

    held: tuple[int, ...]
    pos: tuple[int, ...]
    width: int

    def select(self, keep: range) -> _Channels:
        """After keeping channels ``keep`` of the tensor (a channel Slice or Split)."""
        at = {p: k for k, p in enumerate(keep)}
        pairs = [(c, at[p]) for c, p in zip(self.held, self.pos) if p in at]
        return _Channels(tuple(c for c, _ in pairs), tuple(p for _, p in pairs), len(keep))

    def jet_index(self, keep: range) -> tuple[int, ...]:
        return tuple(j for j, p in enumerate(self.pos) if p in keep)


def _match_layer(ix: GraphIndex, conv_node: onnx.NodeProto,
                 pool: onnx.NodeProto) -> Match[Layer]:
    """Check that the conv output reaches ``pool`` only channel-wise; build its steps."""
    m = _conv(ix, conv_node)
    if not m:
        return m
    conv = m.value
    c_out = conv.out_channels
    layout = {conv.output: conv.layout}
    chans = {conv.output: _Channels(tuple(range(c_out)), tuple(range(c_out)), c_out)}
    steps: list[Step] = []
    frontier = Frontier(ix, ix.consumers.get(conv.output, []))
    for node in frontier:
        if node is pool or node.op_type in SHAPE_ONLY:
            continue
        deps = [i for i in node.input if i in layout]
        lay = layout[deps[0]]
        if any(layout[d] != lay for d in deps):
            return Match.fail(node, "conv-dependent inputs in different layouts")
        if node.op_type in POOLING_OPS:
            return Match.fail(node, f"the output of conv '{conv.node}' also feeds "
                                    f"{node.op_type} '{GraphIndex.node_name(node)}', a second "
                                    "path to the logits (e.g. a squeeze-excitation gate)")
        if node.op_type == "Concat":
            m = _concat(ix, node, deps, lay, chans)
            if not m:
                return m
            chans[node.output[0]], layout[node.output[0]] = m.value, lay
            fn, params = ("identity", {}) if len(deps) == 1 else (
                "concat", {"axis": lay.index(1)})
            new = [Step(GraphIndex.node_name(node), fn, tuple(Operand("dep", d) for d in deps),
                        node.output[0], params)]
        elif node.op_type in ("Slice", "Split") and node.input[0] in layout:
            m = _channel_slices(ix, node, lay, chans[deps[0]].width)
            if not m:
                return Match.fail(m.node, f"the output of conv '{conv.node}' reaches "
                                          f"the pooling through it: {m.reason}")
            new = []
            for out, keep in m.value:
                sel = chans[deps[0]].select(keep)
                if out and sel.held and ix.consumers.get(out):
                    chans[out], layout[out] = sel, lay
                    new.append(Step(GraphIndex.node_name(node), "take",
                                    (Operand("dep", deps[0]),), out,
                                    {"index": chans[deps[0]].jet_index(keep),
                                     "axis": lay.index(1)}))
        else:
            ctx = Ctx(ix, frozenset(layout), lay)
            m = channelwise_step(ctx, node)
            if not m:
                return Match.fail(m.node, f"the output of conv '{conv.node}' reaches "
                                          f"the pooling through it: {m.reason}")
            step, out_layout = m.value.step, m.value.layout
            ch = chans[deps[0]]
            ops = []
            for op in step.inputs:
                if op.kind == "const":
                    sliced = _slice_channels(op.value, out_layout, ch)
                    if sliced is None:
                        return Match.fail(node, f"constant '{op.name}' of shape "
                                                f"{op.value.shape} is not per-channel")
                    op = Operand("const", op.name, sliced)
                elif op.kind == "fetch" and ch.pos != tuple(range(ch.width)):
                    return Match.fail(node, "a branch is added to a tensor holding channels "
                                            "that do not come from the conv (after a channel "
                                            "Concat or Slice)")
                ops.append(op)
            new = [Step(step.node, step.fn, tuple(ops), step.output, step.params)]
            layout[node.output[0]], chans[node.output[0]] = out_layout, ch
            for extra in node.output[1:]:
                if extra and ix.consumers.get(extra):
                    return Match.fail(node, f"second output '{extra}' of {node.op_type} is "
                                            "used")
        steps += new
        for step in new:
            frontier.push(ix.consumers.get(step.output, []))
    a_in = pool.input[0]
    if a_in not in layout:
        return Match.fail(pool, f"the output of conv '{conv.node}' does not reach the pooling")
    lay = layout[a_in]
    m = pooling_axes(ix, pool, len(lay))
    if not m:
        return m
    spatial = {ax for ax in lay if ax >= 2}  # a squeezed spatial axis (size 1) is missing
    if lay[0] != 0 or {lay[i] for i in m.value} - {UNIT} != spatial:
        if conv.op == "MatMul":
            return Match.fail(conv.node, f"the MatMul mixes the last axis of its input, and "
                                         f"{pool.op_type} '{GraphIndex.node_name(pool)}' "
                                         f"averages its output over other axes than the two "
                                         f"before it: not a pointwise layer over channels")
        return Match.fail(pool, f"{pool.op_type} averages axes {list(m.value)} of a tensor in "
                                f"layout {layout_name(lay)}: not the conv's spatial axes")
    ch = chans[a_in]
    if sorted(ch.held) != list(range(c_out)):
        lost = sorted(set(range(c_out)) - set(ch.held))
        return Match.fail(pool, f"channels {lost[:4]}{'...' if len(lost) > 4 else ''} of conv "
                                f"'{conv.node}' do not reach the pooling" if lost else
                                f"channels of conv '{conv.node}' reach the pooling twice")
    if ch.held == tuple(range(c_out)) and ch.pos == tuple(range(ch.pos[0], ch.pos[0] + c_out)):
        return Match(Layer(conv, tuple(steps), lay, ch.pos[0]))
    features = [0] * c_out
    for c, p in zip(ch.held, ch.pos):
        features[c] = p
    return Match(Layer(conv, tuple(steps), lay, min(ch.pos), tuple(features), ch.held))


def _channel_count(ix: GraphIndex, name: str, axis: int) -> int | None:
    dims = ix.static_dims(name)
    if dims is None or len(dims) <= axis or not isinstance(dims[axis], int):
        return None
    return dims[axis]


def _concat(ix: GraphIndex, node: onnx.NodeProto, deps: list[str], lay: tuple,
            chans: dict) -> Match[_Channels]:
    """Where the conv's channels sit after a channel Concat."""
    axis = int(ix.attrs(node).get("axis", 0)) % len(lay)
    if lay[axis] != 1:
        return Match.fail(node, "Concat along an axis that is not the conv's channel axis")
    if len(set(deps)) != len(deps):
        return Match.fail(node, "Concat of the same conv-dependent tensor twice")
    held, pos, offset = [], [], 0
    for i in node.input:
        size = _channel_count(ix, i, axis)
        if size is None:
            return Match.fail(node, f"Concat input '{i}' has an unknown channel count")
        if i in chans:
            held += chans[i].held
            pos += [offset + p for p in chans[i].pos]
        offset += size
    return Match(_Channels(tuple(held), tuple(pos), offset))


def _channel_slices(ix: GraphIndex, node: onnx.NodeProto, lay: tuple,
                    width: int) -> Match[list[tuple[str, range]]]:
    """The channels each output of a channel Slice/Split keeps (value: ``[(output, range)]``);
    a Slice or Split along any other axis changes the spatial grid."""
    a = ix.attrs(node)
    rank = len(lay)
    if node.op_type == "Slice":
        if "starts" in a:  # opset < 10
            starts, ends, axes, steps = a["starts"], a["ends"], a.get("axes"), None
        else:
            vals = [ix.const(i) if i else None
                    for i in (list(node.input[1:5]) + [""] * 4)[:4]]
            if any(v is None for v, i in zip(vals, node.input[1:5]) if i):
                return Match.fail(node, "Slice with non-constant starts, ends, axes or steps")
            starts, ends, axes, steps = (None if v is None else np.ravel(v).tolist()
                                         for v in vals)
        axes = list(range(len(starts))) if axes is None else axes
        steps = [1] * len(starts) if steps is None else steps
        kept = {int(ax) % rank: (s, e, st) for ax, s, e, st in zip(axes, starts, ends, steps)}
        if any(lay[ax] != 1 for ax in kept):
            return Match.fail(node, "Slice is a spatial operation between the conv and the "
                                    "pooling (changes the spatial grid)")
        (s, e, st), = kept.values() or [(0, width, 1)]
        return Match([(node.output[0], range(width)[slice(int(s), int(e), int(st))])])
    axis = int(a.get("axis", 0)) % rank
    if lay[axis] != 1:
        return Match.fail(node, "Split along an axis that is not the conv's channel axis")
    sizes = a.get("split")
    if sizes is None and len(node.input) > 1 and node.input[1]:
        sizes = ix.const(node.input[1])
        if sizes is None:
            return Match.fail(node, "Split with non-constant sizes")
        sizes = np.ravel(sizes).tolist()
    n = len(node.output)
    if sizes is None:  # equal parts (the last one smaller, opset 18)
        part = -(-width // n)
        sizes = [min(part, width - k * part) for k in range(n)]
    if sum(sizes) != width:
        return Match.fail(node, f"Split sizes {list(sizes)} do not add up to {width} channels")
    starts = np.cumsum([0] + list(sizes))
    return Match([(o, range(int(starts[k]), int(starts[k + 1])))
                  for k, o in enumerate(node.output)])


def _slice_channels(v: np.ndarray, lay: tuple, ch: _Channels):
    """A broadcastable constant at the conv's channels, in the jet's order (None if it is
    not per-channel)."""
    ax = v.ndim - len(lay) + lay.index(1)
    if ax < 0 or v.shape[ax] == 1:
        return v
    if v.shape[ax] != ch.width:
        return None
    return np.take(v, np.asarray(ch.pos, dtype=np.intp), axis=ax)


def _num_features(ix: GraphIndex, pool: onnx.NodeProto, layers: list[Layer]) -> int | None:
    dims = ix.static_dims(pool.output[0])
    if dims is not None and all(isinstance(d, int) and d > 0 for d in dims[1:]):
        n = math.prod(dims[1:])
        if n > MAX_FEATURES:
            raise ModelError(f"the pooling '{GraphIndex.node_name(pool)}' declares {n} output "
                             "features; refused")
        return n
    if layers and all(layer.channel_offset == 0 and not layer.features for layer in layers):
        return layers[0].conv.out_channels
    return None
