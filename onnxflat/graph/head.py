"""Typed description of a conv -> channel-wise -> global-average-pool -> linear head.

These objects are the only thing the later stages (runtime, measures) know about the
ONNX graph. Arrays are NumPy float64; shapes are given per field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NCHW = (0, 1, 2, 3)
NHWC = (0, 2, 3, 1)
# Layout entry of an axis that holds no axis of the conv output (a unit axis an Unsqueeze added).
UNIT = -1
# Names of the spatial axes by spatial rank (1-D: sequences, 2-D: images, 3-D: clips/volumes).
SPATIAL_AXES = {1: "L", 2: "HW", 3: "DHW"}


def channel_first(rank: int) -> tuple[int, ...]:
    """The layout of a conv output with ``rank`` axes as the conv writes it: N, C, spatial."""
    return tuple(range(rank))


def layout_name(layout: tuple[int, ...]) -> str:
    """``(0, 2, 3, 1)`` -> ``"NHWC"``; ``(0, 2, 3, 4, 1)`` -> ``"NDHWC"``; ``(0, 1, 2)`` ->
    ``"NCL"``; a unit axis (``UNIT``) is ``1``: ``(0, 1, -1, 2)`` -> ``"NC1L"``."""
    rank = max(layout) + 1
    names = "NC" + SPATIAL_AXES.get(rank - 2, "?" * (rank - 2))
    return "".join("1" if ax == UNIT else names[ax] for ax in layout)


@dataclass(frozen=True)
class Conv:
    """The convolution whose kernel the measures differentiate.

    kernel: ``(C_out, C_in/groups, *k)`` with one kernel size per spatial axis (1, 2 or 3
    axes: ``(k,)``, ``(kh, kw)``, ``(kd, kh, kw)``); bias: ``(C_out,)`` or None. strides and
    dilations: one per spatial axis; pads: ``(begin..., end...)``, two per spatial axis, as
    ONNX writes them (kept with ``auto_pad`` and resolved per batch when that is set).
    op: ``"Conv"``, or ``"MatMul"`` for a pointwise layer ``x @ W`` over the last axis of a
    4-D tensor (``W`` ``(C_in, C_out)`` stored in the file, ``kernel = W^T`` as
    ``(C_out, C_in, 1, 1)``: the filters are the columns of ``W``).
    layout: layout of both the input and output tensors (for each axis, the channel-first
    axis it holds): None for Conv (channel-first, as its kernel's rank), NHWC for MatMul.
    kernel is the float kernel the graph computes with: an integer kernel behind
    DequantizeLinear is dequantized, a float16 one widened (``notes`` says so).
    """

    node: str
    input: str
    output: str
    kernel: np.ndarray
    bias: np.ndarray | None
    strides: tuple[int, ...]
    pads: tuple[int, ...]
    dilations: tuple[int, ...]
    groups: int
    auto_pad: str = "NOTSET"
    # How the kernel or the activations differ from plain float32 (dequantized kernel,
    # float16 storage or arithmetic), shown with the layer.
    notes: tuple[str, ...] = ()
    op: str = "Conv"
    layout: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.layout is None:
            object.__setattr__(self, "layout", channel_first(self.kernel.ndim))

    def nchw(self, shape: tuple) -> tuple:
        """A shape of the layer's input or output tensor, channel-first (N, C, spatial...)."""
        return tuple(shape[self.layout.index(i)] for i in range(len(self.layout)))

    @property
    def out_channels(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(int(k) for k in self.kernel.shape[2:])

    @property
    def spatial_rank(self) -> int:
        """Number of spatial axes: 1 (sequences), 2 (images), 3 (clips, volumes)."""
        return self.kernel.ndim - 2

    def describe(self) -> str:
        co, ci = self.kernel.shape[:2]
        ones = (1,) * self.spatial_rank
        if self.op != "Conv":
            return f"{self.op} '{self.node}' {ci}->{co} (pointwise, {layout_name(self.layout)})"
        extra = []
        if tuple(self.strides) != ones:
            extra.append(f"stride {_by(self.strides)}")
        if tuple(self.dilations) != ones:
            extra.append(f"dilation {_by(self.dilations)}")
        if self.groups != 1:
            extra.append(f"groups {self.groups}")
        extra += self.notes
        tail = f" ({', '.join(extra)})" if extra else ""
        return (f"Conv{self.spatial_rank}d '{self.node}' {ci * self.groups}->{co} "
                f"{_by(self.kernel_size)}{tail}")


def _by(sizes) -> str:
    return "x".join(str(int(s)) for s in sizes)


@dataclass(frozen=True)
class Operand:
    """An input of a channel-wise step.

    kind: ``"dep"`` (a tensor that depends on the conv output, by name), ``"const"``
    (``value``, broadcastable to the step's output in the graph's layout) or ``"fetch"``
    (a conv-independent activation, e.g. a residual branch, fetched by name at run time).
    """

    kind: str
    name: str
    value: np.ndarray | None = None


@dataclass(frozen=True)
class Step:
    """One elementwise operation on the path from the conv output to the pooling input.

    fn names a function of :mod:`onnxflat.measures.jets` (``relu``, ``add``, ``affine``,
    ``transpose`` ...); params holds its scalar parameters.
    """

    node: str
    fn: str
    inputs: tuple[Operand, ...]
    output: str
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Layer:
    """A conv whose output reaches the pooling only through channel-wise steps.

    layout: for each axis of the pooling input, the axis of the conv output (N, C, spatial...)
    it holds: ``(0, 2, 3, 1)`` for NHWC, ``(0, 2, 1)`` for a channel-last sequence (NLC),
    ``UNIT`` for a unit axis an Unsqueeze added; a spatial axis of size 1 may be missing
    (squeezed). None: channel-first, as the conv writes it. channel_offset: index of the
    conv's first channel among the pooled features (non-zero after a channel Concat). When
    channel Slices/Splits send the conv's channels to several places (DPN), ``features``
    gives the pooled feature of each conv channel and ``jet_order`` the conv channel at each
    channel of the steps' output (its channels are in path order, not conv order); both
    empty otherwise.
    """

    conv: Conv
    steps: tuple[Step, ...]
    layout: tuple[int, ...] | None = None
    channel_offset: int = 0
    features: tuple[int, ...] = ()
    jet_order: tuple[int, ...] = ()

    @property
    def feature_index(self) -> np.ndarray:
        """``(C_out,)`` the pooled feature each conv channel reaches."""
        if self.features:
            return np.asarray(self.features, dtype=np.intp)
        return np.arange(self.channel_offset, self.channel_offset + self.conv.out_channels)

    def __post_init__(self):
        if self.layout is None:
            object.__setattr__(self, "layout", channel_first(self.conv.kernel.ndim))
        axes = [ax for ax in self.layout if ax != UNIT]
        if (self.layout[0] != 0 or 1 not in axes or len(set(axes)) != len(axes)
                or not set(axes) <= set(range(self.conv.kernel.ndim))):
            raise ValueError(f"layout {self.layout} is not a batch-first order of the axes "
                             f"of conv '{self.conv.node}'")

    @property
    def fetches(self) -> list[str]:
        names = [self.conv.input, self.conv.output]
        names += [op.name for s in self.steps for op in s.inputs if op.kind == "fetch"]
        return list(dict.fromkeys(names))

    def describe(self) -> str:
        fns = [s.fn for s in self.steps
               if s.fn not in ("identity", "transpose", "squeeze", "unsqueeze")]
        path = " -> ".join(fns) if fns else "identity"
        off = f" [channels {self.channel_offset}..]" if self.channel_offset else ""
        if self.features:
            off = f" [channels spread over features {min(self.features)}..{max(self.features)}]"
        return f"{self.conv.describe()} -> {path}{off}"


@dataclass(frozen=True)
class Pooling:
    """The global average pooling: ``node``, its op type, input and output tensors."""

    node: str
    op: str
    input: str
    output: str


@dataclass(frozen=True)
class Dense:
    """An affine map of value ``input``: ``weight @ x + bias`` with weight ``(out, in)``, or
    ``weight * x + bias`` with weight ``(in,)`` (a per-feature scale: BatchNorm1d, Mul/Div by
    a constant); bias ``(out,)``; float64.

    stored: the matrix is a weight stored in the file (Gemm, MatMul, 1x1 Conv on the pooled
    map; later constant Add/Sub only move the bias), so the classifier measures may refer to
    it. ``input_name``: the ONNX tensor the layer reads.
    """

    input: int
    weight: np.ndarray
    bias: np.ndarray
    nodes: tuple[str, ...]
    stored: bool
    input_name: str = ""

    @property
    def out_features(self) -> int:
        return int(self.bias.shape[0])

    def describe(self) -> str:
        if self.weight.ndim == 1:
            return f"scale+shift [{'+'.join(self.nodes)}]"
        o, i = self.weight.shape
        return f"linear {i}->{o} [{'+'.join(self.nodes)}]"


@dataclass(frozen=True)
class Pointwise:
    """An elementwise function of value ``input`` (the ONNX tensor ``source``), as the steps of
    :mod:`onnxflat.measures.jets` from ``source`` to ``output`` (Relu, Hardswish, x*Sigmoid(x),
    the GELU spellings...); constants broadcast per feature."""

    input: int
    source: str
    steps: tuple[Step, ...]
    output: str

    def describe(self) -> str:
        fns = [s.fn for s in self.steps if s.fn != "identity"]
        return " -> ".join(fns) if fns else "identity"


@dataclass(frozen=True)
class LayerNorm:
    """``scale * (x - mean x) / sqrt(var x + epsilon) + bias`` over the features of value
    ``input``; scale, bias ``(F,)`` float64 (native LayerNormalization or its decomposed
    ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div spelling)."""

    input: int
    scale: np.ndarray
    bias: np.ndarray
    epsilon: float
    nodes: tuple[str, ...]

    def describe(self) -> str:
        return f"layernorm {self.scale.shape[0]} [{'+'.join(self.nodes)}]"


@dataclass(frozen=True)
class Residual:
    """The sum of two values (a residual connection inside the head)."""

    inputs: tuple[int, int]
    node: str

    def describe(self) -> str:
        return f"add(v{self.inputs[0]}, v{self.inputs[1]}) [{self.node}]"


HeadOp = Dense | Pointwise | LayerNorm | Residual


@dataclass(frozen=True)
class AfterPool:
    """The map from the pooled features g ``(F,)`` to the logits, in SSA form: value 0 is g
    (flattened), op k reads earlier values and produces value k + 1; the last value holds
    the logits (tensor ``logits``, before a trailing Softmax/LogSoftmax named ``softmax``).

    classifier: index of the op whose stored weight the classifier measures refer to (the
    last stored :class:`Dense`, followed only by affine ops), or None (no classifier: the
    logits are the pooled features, SqueezeNet-style, or no such layer).
    """

    features: int
    ops: tuple[HeadOp, ...]
    logits: str
    softmax: str | None = None
    classifier: int | None = None

    @property
    def widths(self) -> tuple[int, ...]:
        """Length of each value (value 0: the pooled features)."""
        w = [self.features]
        for op in self.ops:
            w.append(op.out_features if isinstance(op, Dense) else w[_source(op)])
        return tuple(w)

    @property
    def num_classes(self) -> int:
        return self.widths[-1]

    @property
    def affine(self) -> bool:
        """A chain of Dense ops only (the fast path: logits affine in g)."""
        return all(isinstance(op, Dense) and op.input == k for k, op in enumerate(self.ops))

    def compose(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dense ops ``start..stop`` of an affine chain as one map ``(W, c)``, W ``(out, in)``."""
        ops = self.ops[start:stop]
        if not ops:
            return np.eye(self.widths[start]), np.zeros(self.widths[start])
        first = ops[0]
        w = np.diag(first.weight) if first.weight.ndim == 1 else first.weight
        c = first.bias
        for op in ops[1:]:  # (starting from the first weight: no F x F identity product)
            if op.weight.ndim == 1:
                w, c = op.weight[:, None] * w, op.weight * c + op.bias
            else:
                w, c = op.weight @ w, op.weight @ c + op.bias
        return w, c

    @property
    def nodes(self) -> tuple[str, ...]:
        """The ONNX nodes of every op, in order."""
        out: list[str] = []
        for op in self.ops:
            if isinstance(op, Pointwise):
                out += [s.node for s in op.steps]
            elif isinstance(op, Residual):
                out.append(op.node)
            else:
                out += list(op.nodes)
        return tuple(out)

    @property
    def classifier_layer(self) -> Dense | None:
        return None if self.classifier is None else self.ops[self.classifier]

    def describe(self) -> str:
        if not self.ops:
            text = f"no classifier (logits = the {self.features} pooled features)"
        else:
            text = " -> ".join(op.describe() for op in self.ops)
        return text + (f" -> {self.softmax}" if self.softmax else "")

    def describe_classifier(self) -> str:
        """Which layer the classifier measures refer to."""
        layer = self.classifier_layer
        if layer is None:
            return "none (no stored classifier weight after the pooling: classifier measures " \
                   "not defined)"
        o, i = layer.weight.shape
        return f"{'+'.join(layer.nodes)} (weight {o}x{i}, input '{layer.input_name}')"


def _source(op: HeadOp) -> int:
    return op.inputs[0] if isinstance(op, Residual) else op.input


@dataclass(frozen=True)
class Head:
    """Everything the measures need about a model's head.

    input_name/input_shape/input_dtype describe the model input (shape may hold None or
    strings for free dimensions). ``rejected`` lists convs that reach the pooling but
    were not accepted, as ``(node, reason)`` pairs, for diagnostics.
    """

    model_path: str
    input_name: str
    input_shape: tuple
    input_dtype: str
    layers: tuple[Layer, ...]
    pooling: Pooling
    after: AfterPool
    rejected: tuple[tuple[str, str], ...] = ()

    @property
    def fetches(self) -> list[str]:
        names = [n for layer in self.layers for n in layer.fetches]
        names += [self.pooling.output, self.after.logits]
        return list(dict.fromkeys(names))

    @property
    def num_features(self) -> int:
        return self.after.features

    @property
    def num_classes(self) -> int:
        return self.after.num_classes

    def describe(self) -> str:
        """One line per layer: conv, channel-wise steps, pooling, head after the pooling."""
        tail = f" -> {self.pooling.op} -> {self.after.describe()}"
        return "\n".join(layer.describe() + tail for layer in self.layers)
