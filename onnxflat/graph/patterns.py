"""Declarative rules: which ONNX nodes may sit on each part of the head, and what they mean.

Each rule takes a node and returns a :class:`Match`: a value on success, or the node and
the reason it does not fit. ``CHANNELWISE`` translates nodes between the conv output and the
pooling into :class:`~onnxflat.graph.head.Step` objects; ``LINEAR`` folds nodes after the
pooling into one affine map. ``POOLING`` recognises global average pooling. The tables are
the single source of the supported-pattern list in the docs (``tools/gen_patterns_doc.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from .head import UNIT, Operand, Step
from .model import GraphIndex

FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16,
               onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class Match:
    """Outcome of a rule: ``value`` when it matched, else ``node`` and ``reason``."""

    value: Any = None
    node: str | None = None
    reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is None

    @classmethod
    def fail(cls, node: onnx.NodeProto | str | None, reason: str) -> Match:
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
CLASSIFIER_NOTES = {
    "Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout, Transpose, Cast":
        "reshapes that keep the features on one axis",
    "Gemm": "constant B (transB any, transA 0), alpha, beta and a constant C",
    "MatMul": "pooled features on the left, constant 2-D weight (then Add for the bias)",
    "Conv": "constant 1x1 kernel, group 1, on the pooled 1x1 map",
    "Add, Sub, Mul, Div": "by per-feature or scalar constants",
    "BatchNormalization": "constant statistics (BatchNorm1d after the pooling)",
    "Softmax, LogSoftmax": "trailing, producing the graph output; logits are taken before it",
    "(nothing)": "no classifier: the logits are the pooled features (SqueezeNet)",
}


def _check_operands(ctx: Ctx, node: onnx.NodeProto, ops: list[Operand]) -> Match | None:
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


def channelwise_step(ctx: Ctx, node: onnx.NodeProto) -> Match:
    """Translate one node on the conv -> pooling path into a Step (value: (Step, layout))."""
    op = node.op_type
    name = GraphIndex.node_name(node)
    a = ctx.ix.attrs(node)
    out = node.output[0]
    if op == "Dropout" and len(node.input) > 2 and ctx.ix.const(node.input[2]) is not None \
            and bool(ctx.ix.const(node.input[2])):
        return Match.fail(node, "Dropout in training mode")
    if op in UNARY:
        return Match((Step(name, UNARY[op], (ctx.operand(node.input[0]),), out), ctx.layout))
    if op in UNARY_WITH_ATTRS:
        fn, defaults = UNARY_WITH_ATTRS[op]
        params = {k: a.get(k, v) for k, v in defaults.items()}
        if isinstance(params.get("approximate"), bytes):
            params["approximate"] = params["approximate"].decode()
        return Match((Step(name, fn, (ctx.operand(node.input[0]),), out, params), ctx.layout))
    if op == "Cast":
        if a.get("to") not in FLOAT_TYPES:
            return Match.fail(node, "Cast to a non-float type on the conv -> pooling path")
        return Match((Step(name, "identity", (ctx.operand(node.input[0]),), out), ctx.layout))
    if op == "Clip":
        lo, hi = a.get("min", -np.inf), a.get("max", np.inf)
        bounds = [lo, hi]
        for i in (1, 2):
            if len(node.input) > i and node.input[i]:
                v = ctx.ix.const(node.input[i])
                if v is None:
                    return Match.fail(node, "Clip bound is not a constant")
                bounds[i - 1] = float(v)
        lo, hi = bounds
        if node.input[0] not in ctx.dep:
            return Match.fail(node, "the conv output reaches Clip only through its bounds")
        return Match((Step(name, "clip", (Operand("dep", node.input[0]),), out,
                           {"lo": float(lo), "hi": float(hi)}), ctx.layout))
    if op in BINARY:
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
            k = float(ops[1].value.reshape(-1)[0])
            return Match((Step(name, "pow", ops[:1], out, {"k": k}),
                          ctx.layout))
        return Match((Step(name, BINARY[op], tuple(ops), out), ctx.layout))
    if op == "BatchNormalization":
        if a.get("training_mode", 0):
            return Match.fail(node, "BatchNormalization in training mode")
        if ctx.layout[1] != 1:
            return Match.fail(node, "BatchNormalization over an axis that is not the conv's "
                                    "channel axis")
        vals = [ctx.ix.const(i) for i in node.input[1:5]]
        if node.input[0] not in ctx.dep or any(v is None for v in vals):
            return Match.fail(node, "BatchNormalization with non-constant statistics")
        scale, shift, mean, var = (np.asarray(v, np.float64) for v in vals)
        if len({v.shape for v in (scale, shift, mean, var)}) != 1 or scale.ndim != 1:
            return Match.fail(node, "BatchNormalization parameters of shapes "
                                    f"{[v.shape for v in (scale, shift, mean, var)]}: not one "
                                    "vector per channel")
        s = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        t = shift - mean * s
        shape = (-1,) + (1,) * (len(ctx.layout) - 2)
        return Match((Step(name, "affine", (Operand("dep", node.input[0]),
                                            Operand("const", "bn_scale", s.reshape(shape)),
                                            Operand("const", "bn_shift", t.reshape(shape))),
                           out), ctx.layout))
    if op == "Transpose":
        perm = a.get("perm", list(range(len(ctx.layout)))[::-1])
        layout = tuple(ctx.layout[i] for i in perm)
        if layout[0] != 0:
            return Match.fail(node, "Transpose moves the batch axis")
        return Match((Step(name, "transpose", (Operand("dep", node.input[0]),), out,
                           {"perm": tuple(int(p) for p in perm)}), layout))
    if op in ("Unsqueeze", "Squeeze"):
        return _unit_axes(ctx, node)
    if op in SPATIAL_OPS:
        return Match.fail(node, f"{op} is a spatial operation between the conv and the "
                                f"pooling ({SPATIAL_OPS[op]})")
    return Match.fail(node, f"{op} is not a supported channel-wise operation")


def _unit_axes(ctx: Ctx, node: onnx.NodeProto) -> Match:
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
    return Match((step, tuple(lay)))


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


def pooling_axes(ix: GraphIndex, node: onnx.NodeProto, rank: int) -> Match:
    """Axes averaged by a pooling node (value: sorted tuple), or why it is not global mean."""
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
# Linear classifier (pooled features -> logits), folded into y = W g + c


@dataclass(frozen=True)
class Affine:
    """y = weight @ g + bias; weight ``(out, F)``, bias ``(out,)``, float64.
    ``identity``: weight is the identity (composing skips a ``F x F`` product)."""

    weight: np.ndarray
    bias: np.ndarray
    identity: bool = False

    def then(self, m: np.ndarray, b: np.ndarray | float = 0.0) -> Affine:
        m = np.asarray(m, np.float64)
        w = m.copy() if self.identity else m @ self.weight
        return Affine(w, m @ self.bias + np.asarray(b, np.float64))

    def scaled(self, s: np.ndarray | float, b: np.ndarray | float = 0.0) -> Affine:
        s = np.asarray(s, np.float64).reshape(-1)
        if s.size not in (1, self.weight.shape[0]):
            raise ValueError
        return Affine(s[:, None] * self.weight, s * self.bias + np.asarray(b, np.float64))


RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Transpose")
TERMINAL = ("Softmax", "LogSoftmax")


def _feature_vector(v: np.ndarray, size: int) -> np.ndarray | None:
    """A constant as a per-feature vector of length ``size`` (scalars broadcast)."""
    v = np.asarray(v, np.float64)
    nonunit = [d for d in v.shape if d != 1]
    if len(nonunit) > 1 or (nonunit and nonunit[0] != size):
        return None
    return np.broadcast_to(v.reshape(-1), (size,)) if v.size == 1 else v.reshape(-1)


def linear_step(ix: GraphIndex, node: onnx.NodeProto, cur: str, f: Affine) -> Match:
    """Fold one node after the pooling into the affine map ``f`` (value: new Affine)."""
    op = node.op_type
    a = ix.attrs(node)
    out = f.weight.shape[0]
    others = [i for i in node.input if i and i != cur]
    consts = {i: ix.const(i) for i in others}
    if op in RESHAPES or (op == "Cast" and a.get("to") in FLOAT_TYPES):
        if op == "Transpose" or op == "Reshape":
            shape = ix.static_dims(node.output[0])
            if shape is not None and sum(1 for d in shape[1:] if d != 1) > 1:
                return Match.fail(node, f"{op} spreads the pooled features over several axes")
        return Match(f)
    if op == "Gemm":
        if node.input[0] != cur or a.get("transA", 0):
            return Match.fail(node, "Gemm does not take the pooled features as its A input")
        b = consts.get(node.input[1])
        if b is None:
            return Match.fail(node, "Gemm weight is not a constant")
        b = b.T if a.get("transB", 0) else b
        if b.shape[0] != out:
            return Match.fail(node, f"Gemm weight {b.shape} does not fit {out} features")
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
        return Match(f.then(alpha * b.T, bias))
    if op == "MatMul":
        if node.input[0] != cur:
            return Match.fail(node, "MatMul does not take the pooled features on the left")
        b = consts.get(node.input[1])
        if b is None or b.ndim != 2:
            return Match.fail(node, "MatMul weight is not a constant matrix")
        if b.shape[0] != out:
            return Match.fail(node, f"MatMul weight {b.shape} does not fit {out} features")
        return Match(f.then(b.T))
    if op == "Conv":
        k = consts.get(node.input[1])
        shape = ix.static_dims(cur)
        if (k is None or k.ndim < 3 or any(s != 1 for s in k.shape[2:])
                or a.get("group", 1) != 1):
            return Match.fail(node, "Conv after the pooling is not a constant 1x1 kernel")
        if any(a.get("pads", [0])) or (shape is not None and any(d != 1 for d in shape[2:])):
            return Match.fail(node, "Conv after the pooling does not act on a 1x1 map")
        bias = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else 0.0
        if bias is None:
            return Match.fail(node, "Conv bias is not a constant")
        return Match(f.then(k.reshape(k.shape[:2]), bias))
    if op in ("Add", "Sub", "Mul", "Div"):
        (other,) = others or [None]
        c = consts.get(other) if other else None
        if c is None:
            return Match.fail(node, f"{op} after the pooling with a non-constant operand")
        vec = _feature_vector(c, out)
        if vec is None:
            return Match.fail(node, f"{op} constant of shape {c.shape} is not per-feature")
        if op == "Add":
            return Match(Affine(f.weight, f.bias + vec))
        if op == "Sub":
            return Match(Affine(f.weight, f.bias - vec) if node.input[0] == cur
                         else f.scaled(-1.0, vec))
        if op == "Mul":
            return Match(f.scaled(vec))
        if node.input[0] != cur:
            return Match.fail(node, "Div of a constant by the pooled features is not linear")
        return Match(f.scaled(1.0 / vec))
    if op == "BatchNormalization":
        vals = [consts.get(i) for i in node.input[1:5]]
        if any(v is None for v in vals):
            return Match.fail(node, "BatchNormalization with non-constant statistics")
        scale, shift, mean, var = (np.asarray(v, np.float64) for v in vals)
        sizes = [v.size for v in (scale, shift, mean, var)]
        if any(v.ndim != 1 for v in (scale, shift, mean, var)) or set(sizes) != {out}:
            return Match.fail(node, f"BatchNormalization parameters of lengths {sizes} do not "
                                    f"fit the {out} pooled features")
        s = scale / np.sqrt(var + float(a.get("epsilon", 1e-5)))
        return Match(f.scaled(s, shift - mean * s))
    if op == "LayerNormalization":
        return Match.fail(node, "LayerNormalization after the pooling is "
                                "not linear in the pooled features")
    if op in NONLINEAR_AFTER_POOL:
        return Match.fail(node, f"{op} after the pooling: the head after pooling is non-linear "
                                "(an MLP), only an affine classifier is supported")
    return Match.fail(node, f"{op} after the pooling is not a supported linear classifier op")


NONLINEAR_AFTER_POOL = (set(UNARY) | set(UNARY_WITH_ATTRS) | {"Clip"}) - {"Identity", "Dropout"}
