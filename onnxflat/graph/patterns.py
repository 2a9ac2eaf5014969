"""Declarative rules: which ONNX nodes may sit on each part of the head, and what they mean.

Each rule takes a node and returns a :class:`Match`: a typed payload on success, or the node
and the reason it does not fit. Rules are registered per ONNX op: ``CHANNELWISE_RULES``
translates nodes between the conv output and the pooling into :class:`ChannelStep` payloads
(a :class:`~onnxflat.graph.head.Step` and the layout after it); ``AFTER_POOL_RULES`` folds nodes
after the pooling into one affine map. :func:`pooling_axes` recognises global average pooling.
The tables are the single source of the supported-pattern list in the docs
(``tools/gen_patterns_doc.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import onnx

from .head import UNIT, Operand, Step
from .model import GraphIndex
from .review import holds_features, review_source

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}


T = TypeVar("T")


@dataclass(frozen=True)
class Match(Generic[T]):
    """Outcome of a rule: ``value`` (the rule's typed payload) when it matched, else ``node``
    and ``reason``."""

    value: T | None = None
    node: str | None = None
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is None

    @classmethod
    def fail(cls, node: onnx.NodeProto | str | None, reason: str) -> Match[T]:
        name = GraphIndex.node_name(node) if isinstance(node, onnx.NodeProto) else node
        return cls(node=name, reason=reason)


# ----------------------------------------------------------------------------------------
# Channel-wise steps (conv output -> pooling input)

@dataclass(frozen=True)
class Ctx:
    """What a channel-wise rule may look at: the graph, which tensors depend on the conv
    output, and the layout (the conv output's axis held by each axis) of the node's first
    dep input."""

    ix: GraphIndex
    dep: frozenset[str]
    layout: tuple[int, ...]

    def operand(self, name: str) -> Operand:
        if name in self.dep:
            return Operand("dep", name)
        value = self.ix.const(name)
        if value is not None:
            return Operand("const", name, np.asarray(value, dtype=np.float64))
        return Operand("fetch", name)


UNARY = {
    "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf", "Softplus": "softplus",
    "HardSwish": "hard_swish", "Identity": "identity", "Dropout": "identity", "Neg": "neg",
    "Exp": "exp", "Mish": "mish", "Reciprocal": "reciprocal",
}
UNARY_WITH_ATTRS = {  # op -> (fn, {attr: default})
    "LeakyRelu": ("leaky_relu", {"alpha": 0.01}),
    "Elu": ("elu", {"alpha": 1.0}),
    "Selu": ("selu", {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "HardSigmoid": ("hard_sigmoid", {"alpha": 0.2, "beta": 0.5}),
    "Gelu": ("gelu", {"approximate": "none"}),
    "Swish": ("swish", {"alpha": 1.0}),
}
BINARY = {"Add": "add", "Sum": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Max": "max",
          "Min": "min", "PRelu": "prelu", "Pow": "pow"}


# The layers whose weight the measures differentiate (rendered into docs/patterns.md).
LAYER_NOTES = {
    "Conv": "2-D, constant kernel and bias (or none); any stride, padding, dilation, groups",
    "MatMul": "pointwise layer `x @ W` (ConvNeXt's pwconv, Keras Dense on a feature map): a "
              "constant 2-D `W` (C_in x C_out) on the right of a 4-D input whose last axis it "
              "mixes, the pooling averaging the two axes before it (NHWC); a 1x1 conv with "
              "kernel `W^T` (filters: the columns of the stored `W`); a bias Add after it is a "
              "channel-wise step",
}

# Conditions of the rules below, in words (rendered into docs/patterns.md).
CHANNELWISE_NOTES = {
    "unary": "elementwise on the conv-dependent tensor; attributes as in the ONNX spec",
    "binary": "one conv-dependent operand; the other a constant broadcastable per channel "
              "(no batch axis, no higher rank), or a conv-independent tensor of the output's "
              "shape (a residual branch, fetched at run time); both conv-dependent: "
              "SiLU/GELU-style products",
    "Sum": "two inputs, as Add (Caffe2's residual); more inputs are refused",
    "PRelu": "constant slope (per channel or scalar)",
    "Pow": "constant scalar exponent",
    "Clip": "min/max as attributes (opset < 11) or constant inputs (either may be absent)",
    "Cast": "to a float type (float16/32/64, bfloat16)",
    "Dropout": "inference mode (training_mode absent or false)",
    "BatchNormalization": "inference mode, constant statistics, over the conv's channel axis "
                          "(folded to a per-channel affine)",
    "Transpose": "keeps the batch axis first (channel first <-> last, e.g. NCHW <-> NHWC, "
                 "NCDHW <-> NDHWC, tracked as the layout)",
    "Unsqueeze, Squeeze": "constant axes; Squeeze of unit axes only: added by an Unsqueeze "
                          "(the dynamo exporter's 1-D pooling) or spatial axes of the conv "
                          "output of static size 1 (tf2onnx's Conv1D: a 1 x k Conv)",
    "Concat": "along the conv's channel axis, one conv-dependent input with static channel "
              "counts: the conv's channels are a slice of the pooled features (DenseNet, "
              "Inception)",
    "Slice, Split": "along the conv's channel axis, constant bounds: each conv channel kept "
                    "goes to its own pooled feature, several conv-dependent tensors may be "
                    "concatenated again (DPN's dual paths); every conv channel must reach "
                    "the pooling once",
    "Shape, Size": "read only the shape: not a path to the logits, ignored",
}
POOLING_NOTES = {
    "GlobalAveragePool": "always global",
    "ReduceMean": "axes (attribute, or constant input from opset 18) are exactly the conv's "
                  "spatial axes in the current layout; any keepdims",
    "AveragePool": "one output position whose window covers the whole (static) map; "
                   "padding allowed when not counted (count_include_pad 0)",
}
AFTER_POOL_NOTES = {
    "Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout, Transpose, Cast":
        "reshapes that keep the features on one axis; one out of a flattened batch (1-D) must "
        "restore (batch, features), proven as for Gather below",
    "Gather, GatherElements, GatherND, Slice":
        "indices and bounds computed only from constants and shapes (Shape, Size, Range, "
        "arithmetic), proven to hand on each sample's features unchanged and in order (the "
        "dynamo exporter's `as_strided`: Reshape to 1-D, Gather back to (N, C, 1, 1)) by "
        "evaluating the re-view and its index subgraph with onnx's reference evaluator at "
        "batch sizes 2, 3 and 5; anything else (reordered, dropped or repeated features, "
        "samples mixed) is refused naming the node",
    "Gemm": "constant B (transB any, transA 0), alpha, beta and a constant C: a stored weight",
    "MatMul": "features on the left, constant 2-D weight (a following constant Add is its bias)",
    "Conv": "constant 1x1 kernel, group 1, on the pooled 1x1 map (timm conv_head)",
    "Add, Sub, Mul, Div": "by per-feature or scalar constants (an affine map), or two "
                          "feature-dependent operands: Add/Sub of two branches (a residual), "
                          "Mul/Div within one elementwise segment (x * Sigmoid(x))",
    "BatchNormalization": "constant statistics (BatchNorm1d: its own per-feature affine, so the "
                          "classifier weight stays the stored one)",
    "elementwise": "every channel-wise activation above (Relu, HardSwish, HardSigmoid, Sigmoid, "
                   "Tanh, Erf, Gelu, Clip, Pow ...), on per-feature constants",
    "LayerNormalization": "over the last (feature) axis, constant scale and bias",
    "ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div": "LayerNorm as exported below opset 17 "
                                                         "(over the last axis)",
    "Softmax, LogSoftmax": "trailing, producing the graph output; logits are taken before it",
    "(nothing)": "no classifier: the logits are the pooled features (SqueezeNet); classifier "
                 "measures are not defined",
}


def _check_operands(ctx: Ctx, node: onnx.NodeProto,
                    ops: list[Operand]) -> Match[ChannelStep] | None:
    rank = len(ctx.layout)
    out_shape = ctx.ix.static_dims(node.output[0])
    for op in ops:
        if op.kind == "const" and op.value.ndim > rank:
            return Match.fail(node, f"constant '{op.name}' of rank {op.value.ndim} broadcasts "
                                    f"the conv output to a higher rank")
        if op.kind == "const" and op.value.ndim == rank and op.value.shape[0] != 1:
            return Match.fail(node, f"constant '{op.name}' varies along the batch axis")
        if op.kind == "dep" and out_shape is not None:
            in_shape = ctx.ix.static_dims(op.name)
            if in_shape is not None and (len(in_shape) < len(out_shape) or any(
                    _broadcast(a, b) for a, b in zip(in_shape[1:], out_shape[1:]))):
                return Match.fail(node, f"the conv-dependent tensor '{op.name}' {in_shape} is "
                                        f"broadcast to {out_shape}: not channel-wise")
    return None


def _broadcast(a, b) -> bool:
    """Whether static dim ``a`` of an input is stretched to dim ``b`` of the output: sizes
    that differ, or a 1 against a free dimension (a squeeze-excitation gate's 1x1 map against
    a dynamic H or W)."""
    if isinstance(a, int) and isinstance(b, int):
        return a != b
    return a == 1 and isinstance(b, str)


@dataclass(frozen=True)
class ChannelStep:
    """Payload of a channel-wise rule: the step and the layout of its output."""

    step: Step
    layout: tuple[int, ...]


@dataclass(frozen=True)
class ChannelAffine:
    """A per-channel affine map ``y = scale * x + shift`` (a folded BatchNormalization);
    scale, shift ``(C,)`` float64."""

    scale: np.ndarray
    shift: np.ndarray


def batchnorm_fold(ix: GraphIndex, node: onnx.NodeProto) -> Match[ChannelAffine]:
    """An inference-mode BatchNormalization with constant statistics as a per-channel affine."""
    a = ix.attrs(node)
    if a.get("training_mode", 0):
        return Match.fail(node, "BatchNormalization in training mode")
    vals = [ix.const(i) for i in node.input[1:5]]
    if any(v is None for v in vals):
        return Match.fail(node, "BatchNormalization with non-constant statistics")
    scale, shift, mean, var = (np.asarray(v, np.float64) for v in vals)
    if len({v.shape for v in (scale, shift, mean, var)}) != 1 or scale.ndim != 1:
        return Match.fail(node, "BatchNormalization parameters of shapes "
                                f"{[v.shape for v in (scale, shift, mean, var)]}: not one "
                                "vector per channel")
    s = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
    return Match(ChannelAffine(s, shift - mean * s))


ChannelRule = Callable[[Ctx, onnx.NodeProto], Match[ChannelStep]]
CHANNELWISE_RULES: dict[str, ChannelRule] = {}


def _rule(registry: dict, *ops: str):
    """Register the decorated function as the rule of ``ops`` in ``registry``."""
    def register(fn):
        for op in ops:
            registry[op] = fn
        return fn
    return register


def channelwise_step(ctx: Ctx, node: onnx.NodeProto) -> Match[ChannelStep]:
    """Translate one node on the conv -> pooling path into a :class:`ChannelStep`."""
    rule = CHANNELWISE_RULES.get(node.op_type)
    if rule is not None:
        return rule(ctx, node)
    if node.op_type in SPATIAL_OPS:
        return Match.fail(node, f"{node.op_type} is a spatial operation between the conv and "
                                f"the pooling ({SPATIAL_OPS[node.op_type]})")
    return Match.fail(node, f"{node.op_type} is not a supported channel-wise operation")


def _same_layout(ctx: Ctx, node: onnx.NodeProto, fn: str, inputs: tuple[Operand, ...],
                 params: dict | None = None) -> Match[ChannelStep]:
    step = Step(GraphIndex.node_name(node), fn, inputs, node.output[0], params or {})
    return Match(ChannelStep(step, ctx.layout))


@_rule(CHANNELWISE_RULES, *UNARY)
def _unary(ctx: Ctx, node: onnx.NodeProto) -> Match[ChannelStep]:
    if node.op_type == "Dropout" and len(node.input) > 2 and \
            ctx.ix.const(node.input[2]) is not None and bool(ctx.ix.const(node.input[2])):
        return Match.fail(node, "Dropout in training mode")
    return _same_layout(ctx, node, UNARY[node.op_type], (ctx.operand(node.input[0]),))


@_rule(CHANNELWISE_RULES, *UNARY_WITH_ATTRS)
def _unary_with_attrs(ctx: Ctx, node: onnx.NodeProto) -> Match[ChannelStep]:
    fn, defaults = UNARY_WITH_ATTRS[node.op_type]
    a = ctx.ix.attrs(node)
    params = {k: a.get(k, v) for k, v in defaults.items()}
    if isinstance(params.get("approximate"), bytes):
        params["approximate"] = params["approximate"].decode()
    return _same_layout(ctx, node, fn, (ctx.operand(node.input[0]),), params)


@_rule(CHANNELWISE_RULES, "Cast")
def _cast(ctx: Ctx, node: onnx.NodeProto) -> Match[ChannelStep]:
    if ctx.ix.attrs(node).get("to") not in FLOAT_TYPES:
        return Match.fail(node, "Cast to a non-float type on the conv -> pooling path")
    return _same_layout(ctx, node, "identity", (ctx.operand(node.input[0]),))


def clip_bounds(ix: GraphIndex, node: onnx.NodeProto) -> Match[dict]:
    """Clip's ``{"lo", "hi"}`` from attributes (opset < 11) or constant inputs."""
    a = ix.attrs(node)
    bounds = [a.get("min", -np.inf), a.get("max", np.inf)]
    for i in (1, 2):
        if len(node.input) > i and node.input[i]:
            v = ix.const(node.input[i])
            if v is None:
                return Match.fail(node, "Clip bound is not a constant")
            bounds[i - 1] = float(v)
    return Match({"lo": float(bounds[0]), "hi": float(bounds[1])})


@_rule(CHANNELWISE_RULES, "Clip")
def _clip(ctx: Ctx, node: onnx.NodeProto) -> Match[ChannelStep]:
    m = clip_bounds(ctx.ix, node)
    if not m:
        return Match.fail(m.node, m.reason)
    if node.input[0] not in ctx.dep:
        return Match.fail(node, "the conv output reaches Clip only through its bounds")
    return _same_layout(ctx, node, "clip", (Operand("dep", node.input[0]),), m.value)


@_rule(CHANNELWISE_RULES, *BINARY)
def _binary(ctx: Ctx, node: onnx.NodeProto) -> Match[ChannelStep]:
    op = node.op_type
    if len(node.input) != 2:
        return Match.fail(node, f"{op} with {len(node.input)} inputs is not supported")
    ops = [ctx.operand(i) for i in node.input]
    if op in ("Pow", "PRelu") and ops[1].kind != "const":
        return Match.fail(node, f"{op} needs a constant second input")
    if op in ("Pow", "PRelu") and ops[0].kind != "dep":
        return Match.fail(node, f"{op} of a constant by a conv-dependent tensor")
    if op == "Pow" and ops[1].value.size != 1:
        return Match.fail(node, "Pow with a non-scalar exponent")
    bad = _check_operands(ctx, node, ops)
    if bad is not None:
        return bad
    if op == "Pow":
        return _same_layout(ctx, node, "pow", tuple(ops[:1]),
                            {"k": float(ops[1].value.reshape(-1)[0])})
    return _same_layout(ctx, node, BINARY[op], tuple(ops))


@_rule(CHANNELWISE_RULES, "BatchNormalization")
def _batchnorm(ctx: Ctx, node: onnx.NodeProto) -> Match[ChannelStep]:
    if ctx.layout[1] != 1 and not ctx.ix.attrs(node).get("training_mode", 0):
        return Match.fail(node, "BatchNormalization over an axis that is not the conv's "
                                "channel axis")
    m = batchnorm_fold(ctx.ix, node)
    if m and node.input[0] not in ctx.dep:
        m = Match.fail(node, "BatchNormalization with non-constant statistics")
    if not m:
        return Match.fail(m.node, m.reason)
    shape = (-1,) + (1,) * (len(ctx.layout) - 2)
    return _same_layout(ctx, node, "affine", (
        Operand("dep", node.input[0]), Operand("const", "bn_scale", m.value.scale.reshape(shape)),
        Operand("const", "bn_shift", m.value.shift.reshape(shape))))


@_rule(CHANNELWISE_RULES, "Transpose")
def _transpose(ctx: Ctx, node: onnx.NodeProto) -> Match[ChannelStep]:
    perm = ctx.ix.attrs(node).get("perm", list(range(len(ctx.layout)))[::-1])
    layout = tuple(ctx.layout[i] for i in perm)
    if layout[0] != 0:
        return Match.fail(node, "Transpose moves the batch axis")
    step = Step(GraphIndex.node_name(node), "transpose", (Operand("dep", node.input[0]),),
                node.output[0], {"perm": tuple(int(p) for p in perm)})
    return Match(ChannelStep(step, layout))


@_rule(CHANNELWISE_RULES, "Unsqueeze", "Squeeze")
def _unit_axes(ctx: Ctx, node: onnx.NodeProto) -> Match[ChannelStep]:
    """Unsqueeze (adds unit axes, held as ``UNIT`` in the layout) or Squeeze of unit axes:
    an added one, or a spatial axis of the conv output of static size 1 (dropped from the
    layout). The dynamo exporter writes a 1-D adaptive pooling as Unsqueeze -> ReduceMean ->
    Squeeze; tf2onnx a Keras Conv1D as Unsqueeze -> Conv (kernel 1 x k) -> Squeeze."""
    op, a = node.op_type, ctx.ix.attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        v = ctx.ix.const(node.input[1])
        if v is None:
            return Match.fail(node, f"{op} axes are not constant")
        axes = np.ravel(v).tolist()
    if axes is None:
        return Match.fail(node, f"{op} without axes (which axes it drops depends on the data)")
    lay = list(ctx.layout)
    if op == "Unsqueeze":
        rank = len(lay) + len(axes)
        axes = sorted({int(x) % rank for x in axes})
        for ax in axes:
            lay.insert(ax, UNIT)
    else:
        axes = sorted({int(x) % len(lay) for x in axes})
        dims = ctx.ix.static_dims(node.input[0]) or ()
        for i in axes:
            if lay[i] != UNIT and (lay[i] < 2 or i >= len(dims) or dims[i] != 1):
                return Match.fail(node, "Squeeze of an axis of the conv output that is not a "
                                        "spatial axis of static size 1")
        lay = [x for i, x in enumerate(lay) if i not in axes]
    step = Step(GraphIndex.node_name(node), op.lower(), (Operand("dep", node.input[0]),),
                node.output[0], {"axes": tuple(axes)})
    return Match(ChannelStep(step, tuple(lay)))


SPATIAL_OPS = {
    "MaxPool": "mixes positions", "AveragePool": "mixes positions", "LpPool": "mixes positions",
    "Resize": "changes the spatial grid", "Upsample": "changes the spatial grid",
    "Conv": "mixes positions and channels", "ConvTranspose": "mixes positions and channels",
    "Pad": "changes the spatial grid", "Slice": "along a spatial axis: changes the grid",
    "Reshape": "may mix channels and positions", "Flatten": "mixes channels and positions",
    "GlobalAveragePool": "pools positions", "GlobalMaxPool": "pools positions",
    "ReduceMean": "reduces axes", "ReduceMax": "reduces axes", "ReduceSum": "reduces axes",
    "LayerNormalization": "normalises across channels",
    "InstanceNormalization": "normalises across positions",
    "Softmax": "normalises across an axis", "DepthToSpace": "mixes channels and positions",
    "SpaceToDepth": "mixes channels and positions", "MatMul": "mixes channels",
    "Gemm": "mixes channels",
}

# ----------------------------------------------------------------------------------------
# Pooling


def pooling_axes(ix: GraphIndex, node: onnx.NodeProto, rank: int) -> Match[tuple[int, ...]]:
    """Axes averaged by a pooling node (sorted), or why it is not a global mean."""
    op = node.op_type
    a = ix.attrs(node)
    if op == "GlobalAveragePool":
        return Match(tuple(range(2, rank)))
    if op == "ReduceMean":
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            v = ix.const(node.input[1])
            if v is None:
                return Match.fail(node, "ReduceMean axes are not constant")
            axes = v.tolist()
        if axes is None:
            if a.get("noop_with_empty_axes", 0):
                return Match.fail(node, "ReduceMean with no axes is a no-op")
            axes = list(range(rank))
        return Match(tuple(sorted(int(x) % rank for x in np.ravel(axes))))
    if op == "AveragePool":
        reason = _average_pool_not_global(ix, node)
        return Match.fail(node, reason) if reason else Match(tuple(range(2, rank)))
    return Match.fail(node, f"{op} is not a global average pooling")


def _average_pool_not_global(ix: GraphIndex, node: onnx.NodeProto) -> str | None:
    """Why an AveragePool is not the mean of its whole map, or None when it is: a single
    output position (1x1) whose window covers the map (padding allowed, as in Caffe2's
    7x7 pool with end padding on a 6x6 map) and whose divisor is the map size (padding not
    counted, or none inside the window)."""
    a = ix.attrs(node)
    shape = ix.static_dims(node.input[0])
    k = tuple(int(v) for v in a.get("kernel_shape", ()))
    if shape is None or any(not isinstance(d, int) for d in shape[2:]):
        return "AveragePool over a map of unknown size"
    hw = tuple(shape[2:])
    if len(k) != len(hw) or any(d != 1 for d in a.get("dilations", (1,) * len(k))):
        return f"AveragePool kernel {k} with dilations does not average the {hw} map"
    strides = tuple(a.get("strides", (1,) * len(k)))
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = [max(kk - d, 0) for kk, d in zip(k, hw)]  # the pads when the output is 1
        out = [-(-d // s) for d, s in zip(hw, strides)]
        lo = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        pads = lo + [t - x for t, x in zip(total, lo)]
    else:
        pads = [0] * 2 * len(k) if auto_pad == "VALID" else list(a.get("pads", (0,) * 2 * len(k)))
        ceil = a.get("ceil_mode", 0)
        out = [(d + pads[i] + pads[i + len(k)] - kk + (s - 1 if ceil else 0)) // s + 1
               for i, (d, kk, s) in enumerate(zip(hw, k, strides))]
    covers = all(pads[i] + d <= kk for i, (d, kk) in enumerate(zip(hw, k)))
    if any(o != 1 for o in out) or not covers:
        return (f"AveragePool kernel {k} does not cover the whole {hw} map: the pooling is "
                "not global")
    if a.get("count_include_pad", 0) and any(kk != d for kk, d in zip(k, hw)):
        return (f"AveragePool kernel {k} on the {hw} map counts the padding "
                "(count_include_pad=1): not the map's mean")
    return None


POOLING_OPS = ("GlobalAveragePool", "ReduceMean", "AveragePool")
NOT_AVERAGE_POOLING = ("GlobalMaxPool", "MaxPool", "ReduceMax", "GlobalLpPool", "ReduceSum")

# ----------------------------------------------------------------------------------------
# After the pooling (pooled features -> logits): each rule says what a node does to the
# feature-dependent tensors; graph/afterpool.py assembles the ops of the head.


@dataclass(frozen=True)
class Alias:
    """The output holds the input's features unchanged (a reshape, Dropout, float Cast)."""

    input: str


@dataclass(frozen=True)
class Linear:
    """``weight @ x + bias`` (weight ``(out, in)``) or ``weight * x + bias`` (weight ``(in,)``)
    of tensor ``input``; ``stored``: the matrix is a weight stored in the file."""

    input: str
    weight: np.ndarray
    bias: np.ndarray | float
    stored: bool = False


@dataclass(frozen=True)
class Elementwise:
    """An elementwise step (operands: feature-dependent tensors, per-feature constants)."""

    step: Step


@dataclass(frozen=True)
class Norm:
    """A LayerNorm of tensor ``input`` over its features, ending at tensor ``output``;
    ``nodes``: every node of its spelling."""

    input: str
    output: str
    scale: np.ndarray | None
    bias: np.ndarray | None
    epsilon: float
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Sum:
    """``a + b`` (``b`` negated for Sub) of two feature-dependent tensors."""

    a: str
    b: str
    negate_b: bool = False


Effect = Alias | Linear | Elementwise | Norm | Sum


@dataclass(frozen=True)
class PoolCtx:
    """What an after-pooling rule may look at: the graph, the feature-dependent tensors
    (``dep``) and the width (features) of each of the node's inputs among them."""

    ix: GraphIndex
    dep: frozenset[str]
    width: dict

    def consts(self, node: onnx.NodeProto) -> dict[str, np.ndarray | None]:
        """The node's inputs that are not feature-dependent, and their constant values."""
        return {i: self.ix.const(i) for i in node.input if i and i not in self.dep}


AfterPoolRule = Callable[[PoolCtx, onnx.NodeProto], Match[Effect]]
AFTER_POOL_RULES: dict[str, AfterPoolRule] = {}
RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Transpose")
TERMINAL = ("Softmax", "LogSoftmax")
ELEMENTWISE_AFTER_POOL = (set(UNARY) | set(UNARY_WITH_ATTRS) | {"Clip", "Pow", "PRelu", "Max",
                                                                 "Min"}) - set(RESHAPES)


def after_pool_step(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    """What one node after the pooling does to the features."""
    rule = AFTER_POOL_RULES.get(node.op_type)
    if rule is None:
        return Match.fail(node, f"{node.op_type} after the pooling is not supported "
                                "(refused ops are listed in docs/patterns.md)")
    return rule(ctx, node)


def _feature_vector(v: np.ndarray, size: int) -> np.ndarray | None:
    """A constant as a per-feature vector of length ``size`` (scalars broadcast)."""
    v = np.asarray(v, np.float64)
    nonunit = [d for d in v.shape if d != 1]
    if len(nonunit) > 1 or (nonunit and nonunit[0] != size):
        return None
    return np.broadcast_to(v.reshape(-1), (size,)).copy() if v.size == 1 else v.reshape(-1)


@_rule(AFTER_POOL_RULES, *RESHAPES, "Cast")
def _reshape(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    op = node.op_type
    if op == "Cast" and ctx.ix.attrs(node).get("to") not in FLOAT_TYPES:
        return Match.fail(node, "Cast to a non-float type after the pooling")
    if op == "Dropout" and len(node.input) > 2 and ctx.ix.const(node.input[2]) is not None \
            and bool(ctx.ix.const(node.input[2])):
        return Match.fail(node, "Dropout in training mode")
    if op in ("Transpose", "Reshape"):
        shape = ctx.ix.static_dims(node.output[0])
        if shape is not None and sum(1 for d in shape[1:] if d != 1) > 1:
            return Match.fail(node, f"{op} spreads the pooled features over several axes")
    if holds_features(ctx.ix, node.input[0], ctx.width[node.input[0]]) is False:
        return _review(ctx, node)  # out of a flattened batch: must restore it (proven)
    return Match(Alias(node.input[0]))


@_rule(AFTER_POOL_RULES, "Gather", "GatherElements", "GatherND", "Slice")
def _review(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    if node.input[0] not in ctx.dep:
        return Match.fail(node, f"{node.op_type} after the pooling indexes a constant by the "
                                "features")
    src, why = review_source(ctx.ix, ctx.dep, node, ctx.width[node.input[0]])
    return Match(Alias(src)) if src is not None else Match.fail(node, why)


def _stored(ctx: PoolCtx, node: onnx.NodeProto, w: np.ndarray, bias) -> Match[Effect]:
    """A stored weight ``w`` ``(out, in)`` applied to the node's first input."""
    width = ctx.width[node.input[0]]
    if w.shape[1] != width:
        return Match.fail(node, f"{node.op_type} weight {tuple(w.shape[::-1])} does not fit "
                                f"{width} features")
    return Match(Linear(node.input[0], np.asarray(w, np.float64), bias, stored=True))


@_rule(AFTER_POOL_RULES, "Gemm")
def _gemm(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    a = ctx.ix.attrs(node)
    consts = ctx.consts(node)
    if node.input[0] not in ctx.dep or a.get("transA", 0):
        return Match.fail(node, "Gemm does not take the pooled features as its A input")
    b = consts.get(node.input[1])
    if b is None:
        return Match.fail(node, "Gemm weight is not a constant")
    b = b.T if a.get("transB", 0) else b
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    bias = 0.0
    if len(node.input) > 2 and node.input[2]:
        c = consts.get(node.input[2])
        if c is None:
            return Match.fail(node, "Gemm bias is not a constant")
        vec = _feature_vector(c, b.shape[1])
        if vec is None:
            return Match.fail(node, f"Gemm bias of shape {c.shape} is not per-class")
        bias = beta * vec
    return _stored(ctx, node, alpha * b.T, bias)


@_rule(AFTER_POOL_RULES, "MatMul")
def _matmul(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    if node.input[0] not in ctx.dep or node.input[1] in ctx.dep:
        return Match.fail(node, "MatMul does not take the pooled features on the left")
    b = ctx.consts(node).get(node.input[1])
    if b is None or b.ndim != 2:
        return Match.fail(node, "MatMul weight is not a constant matrix")
    return _stored(ctx, node, b.T, 0.0)


@_rule(AFTER_POOL_RULES, "Conv")
def _conv_1x1(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    a = ctx.ix.attrs(node)
    consts = ctx.consts(node)
    k = consts.get(node.input[1])
    shape = ctx.ix.static_dims(node.input[0])
    if k is None or k.ndim < 3 or any(d != 1 for d in k.shape[2:]) or a.get("group", 1) != 1:
        return Match.fail(node, "Conv after the pooling is not a constant 1x1 kernel")
    if any(a.get("pads", [0])) or (shape is not None and any(d != 1 for d in shape[2:])):
        return Match.fail(node, "Conv after the pooling does not act on a 1x1 map")
    bias = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else 0.0
    if bias is None:
        return Match.fail(node, "Conv bias is not a constant")
    return _stored(ctx, node, k.reshape(k.shape[:2]), np.asarray(bias, np.float64).reshape(-1)
                   if np.ndim(bias) else bias)


@_rule(AFTER_POOL_RULES, "Add", "Sum", "Sub", "Mul", "Div")
def _arith(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    op = node.op_type
    deps = [i for i in node.input if i in ctx.dep]
    if len(node.input) != 2:
        return Match.fail(node, f"{op} with {len(node.input)} inputs is not supported")
    if len(deps) == 2 and op in ("Add", "Sum", "Sub") and node.input[0] != node.input[1]:
        return Match(Sum(node.input[0], node.input[1], negate_b=op == "Sub"))
    # by a constant, or both operands in one elementwise segment (x * Sigmoid(x)); a run of
    # constant affine steps becomes a Dense when the segment is closed
    return _elementwise(ctx, node)


@_rule(AFTER_POOL_RULES, "BatchNormalization")
def _batchnorm_1d(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    m = batchnorm_fold(ctx.ix, node)
    if not m:
        return Match.fail(m.node, m.reason)
    width = ctx.width[node.input[0]]
    if m.value.scale.size != width:
        return Match.fail(node, f"BatchNormalization parameters of length {m.value.scale.size} "
                                f"do not fit the {width} pooled features")
    return Match(Linear(node.input[0], m.value.scale, m.value.shift))


@_rule(AFTER_POOL_RULES, *ELEMENTWISE_AFTER_POOL)
def _elementwise(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    dims = ctx.ix.static_dims(node.input[0])
    rank = len(dims) if dims is not None else 2
    m = channelwise_step(Ctx(ctx.ix, ctx.dep, tuple(range(rank))), node)
    if not m:
        return Match.fail(m.node, m.reason)
    step = m.value.step
    width = next(ctx.width[op.name] for op in step.inputs if op.kind == "dep")
    ops = []
    for op in step.inputs:
        if op.kind == "fetch":
            return Match.fail(node, f"{node.op_type} after the pooling with a non-constant "
                                    f"operand '{op.name}'")
        if op.kind == "const":
            vec = _feature_vector(op.value, width)
            if vec is None:
                return Match.fail(node, f"constant '{op.name}' of shape {op.value.shape} is "
                                        "not per-feature")
            op = Operand("const", op.name, vec)
        ops.append(op)
    params = dict(step.params)
    return Match(Elementwise(Step(step.node, step.fn, tuple(ops), step.output, params)))


@_rule(AFTER_POOL_RULES, "LayerNormalization")
def _layernorm(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    a = ctx.ix.attrs(node)
    dims = ctx.ix.static_dims(node.input[0])
    axis = int(a.get("axis", -1))
    if dims is not None and axis % len(dims) != len(dims) - 1:
        return Match.fail(node, f"LayerNormalization over axis {axis}, not the feature axis")
    width = ctx.width[node.input[0]]
    vals = [ctx.ix.const(node.input[k]) if len(node.input) > k and node.input[k] else None
            for k in (1, 2)]
    if vals[0] is None or (len(node.input) > 2 and node.input[2] and vals[1] is None):
        return Match.fail(node, "LayerNormalization scale or bias is not a constant")
    scale, bias = (None if v is None else _feature_vector(v, width) for v in vals)
    if scale is None or (vals[1] is not None and bias is None):
        return Match.fail(node, "LayerNormalization scale or bias is not per-feature")
    for extra in node.output[1:]:
        if extra and ctx.ix.consumers.get(extra):
            return Match.fail(node, f"second output '{extra}' of LayerNormalization is used")
    return Match(Norm(node.input[0], node.output[0], scale, bias,
                      float(a.get("epsilon", 1e-5)), (GraphIndex.node_name(node),)))


@_rule(AFTER_POOL_RULES, "ReduceMean")
def _decomposed_layernorm(ctx: PoolCtx, node: onnx.NodeProto) -> Match[Effect]:
    """``(x - mean x) / sqrt(mean((x - mean x)^2) + eps)`` over the last axis (scale and bias
    follow as Mul and Add)."""
    ix, x = ctx.ix, node.input[0]
    fail = Match.fail(node, "ReduceMean after the pooling that is not part of a LayerNorm "
                            "(ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div)")
    if not _last_axis_mean(ix, node):
        return fail

    def only(name, ops):
        nxt = [n for n in ix.consumers.get(name, []) if n.op_type not in ("Shape", "Size")]
        return nxt if sorted(n.op_type for n in nxt) == sorted(ops) else None

    subs = [n for n in ix.consumers.get(x, []) if n.op_type == "Sub"
            and list(n.input) == [x, node.output[0]]]
    if len(subs) != 1 or only(node.output[0], ["Sub"]) is None:
        return fail
    d = subs[0].output[0]
    nxt = only(d, ["Pow", "Div"]) or only(d, ["Mul", "Div"])
    if nxt is None:
        return fail
    sq = next(n for n in nxt if n.op_type != "Div")
    div = next(n for n in nxt if n.op_type == "Div")
    if sq.op_type == "Pow" and (sq.input[0] != d or ix.const(sq.input[1]) is None
                                or float(ix.const(sq.input[1])) != 2.0):
        return fail
    if sq.op_type == "Mul" and list(sq.input) != [d, d]:
        return fail
    chain = [sq]
    for op in ("ReduceMean", "Add", "Sqrt"):
        nxt = only(chain[-1].output[0], [op])
        if nxt is None:
            return fail
        chain.append(nxt[0])
    var, add, sqrt = chain[1:]
    eps = ix.const(next((i for i in add.input if i != var.output[0]), ""))
    if not _last_axis_mean(ix, var) or eps is None or np.size(eps) != 1 \
            or only(sqrt.output[0], ["Div"]) is None or list(div.input) != [d, sqrt.output[0]]:
        return fail
    nodes = (node, subs[0], *chain, div)
    return Match(Norm(x, div.output[0], None, None, float(np.ravel(eps)[0]),
                      tuple(GraphIndex.node_name(n) for n in nodes)))


def _last_axis_mean(ix: GraphIndex, node: onnx.NodeProto) -> bool:
    """A ReduceMean over exactly the last axis of its input, keeping dims."""
    a = ix.attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        v = ix.const(node.input[1])
        axes = None if v is None else v.tolist()
    dims = ix.static_dims(node.input[0])
    if axes is None or dims is None or not a.get("keepdims", 1):
        return False
    return [int(i) % len(dims) for i in np.ravel(axes)] == [len(dims) - 1]
