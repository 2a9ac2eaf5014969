"""Typed description of a conv -> channel-wise -> global-average-pool -> linear head.

These objects are the only thing the later stages (runtime, measures) know about the
ONNX graph. Arrays are NumPy float64; shapes are given per field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NCHW = (0, 1, 2, 3)
NHWC = (0, 2, 3, 1)


def layout_name(layout: tuple[int, ...]) -> str:
    """``"NHWC"`` for ``(0, 2, 3, 1)``."""
    return "".join("NCHW"[i] for i in layout)


@dataclass(frozen=True)
class Conv:
    """The convolution whose kernel the measures differentiate.

    kernel: ``(C_out, C_in/groups, kh, kw)``; bias: ``(C_out,)`` or None.
    pads: ``(top, left, bottom, right)`` after resolving ``auto_pad`` when the
    input size is known (else kept with ``auto_pad`` and resolved per batch).
    op: ``"Conv"``, or ``"MatMul"`` for a pointwise layer ``x @ W`` over the last axis of a
    4-D tensor (``W`` ``(C_in, C_out)`` stored in the file, ``kernel = W^T`` as
    ``(C_out, C_in, 1, 1)``: the filters are the columns of ``W``).
    layout: layout of both the input and output tensors (for each axis, the NCHW axis it
    holds): NCHW for Conv, NHWC for MatMul.
    kernel is the float kernel the graph computes with: an integer kernel behind
    DequantizeLinear is dequantized, a float16 one widened (``notes`` says so).
    """

    node: str
    input: str
    output: str
    kernel: np.ndarray
    bias: np.ndarray | None
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    groups: int
    auto_pad: str = "NOTSET"
    # How the kernel or the activations differ from plain float32 (dequantized kernel,
    # float16 storage or arithmetic), shown with the layer.
    notes: tuple[str, ...] = ()
    op: str = "Conv"
    layout: tuple[int, int, int, int] = NCHW

    def nchw(self, shape: tuple) -> tuple:
        """A shape of the layer's input or output tensor, in NCHW order."""
        return tuple(shape[self.layout.index(i)] for i in range(4))

    @property
    def out_channels(self) -> int:
        return int(self.kernel.shape[0])

    @property
    def kernel_size(self) -> tuple[int, int]:
        return int(self.kernel.shape[2]), int(self.kernel.shape[3])

    def describe(self) -> str:
        co, ci, kh, kw = self.kernel.shape
        if self.op != "Conv":
            return f"{self.op} '{self.node}' {ci}->{co} (pointwise, {layout_name(self.layout)})"
        extra = []
        if self.strides != (1, 1):
            extra.append(f"stride {self.strides[0]}x{self.strides[1]}")
        if self.dilations != (1, 1):
            extra.append(f"dilation {self.dilations[0]}x{self.dilations[1]}")
        if self.groups != 1:
            extra.append(f"groups {self.groups}")
        extra += self.notes
        tail = f" ({', '.join(extra)})" if extra else ""
        return f"Conv '{self.node}' {ci * self.groups}->{co} {kh}x{kw}{tail}"


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

    layout: for each axis of the pooling input, the NCHW axis of the conv output it holds
    (``(0, 2, 3, 1)`` for NHWC; the conv output's own is ``conv.layout``). channel_offset:
    index of the conv's first channel among the pooled features (non-zero after a channel
    Concat). When channel Slices/Splits send the conv's channels to several places (DPN),
    ``features`` gives the pooled feature of each conv channel and ``jet_order`` the conv
    channel at each channel of the steps' output (its channels are in path order, not conv
    order); both empty otherwise.
    """

    conv: Conv
    steps: tuple[Step, ...]
    layout: tuple[int, int, int, int] = NCHW
    channel_offset: int = 0
    features: tuple[int, ...] = ()
    jet_order: tuple[int, ...] = ()

    @property
    def feature_index(self) -> np.ndarray:
        """``(C_out,)`` the pooled feature each conv channel reaches."""
        if self.features:
            return np.asarray(self.features, dtype=np.intp)
        return np.arange(self.channel_offset, self.channel_offset + self.conv.out_channels)

    @property
    def fetches(self) -> list[str]:
        names = [self.conv.input, self.conv.output]
        names += [op.name for s in self.steps for op in s.inputs if op.kind == "fetch"]
        return list(dict.fromkeys(names))

    def describe(self) -> str:
        fns = [s.fn for s in self.steps if s.fn not in ("identity", "transpose")]
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
class Classifier:
    """The affine map from pooled features to logits, folded from every linear node.

    weight: ``(C, F)``; bias: ``(C,)``. ``logits`` is the tensor holding ``weight @ g + bias``
    (before any trailing Softmax/LogSoftmax, named in ``softmax``). ``nodes`` lists the
    folded nodes; an empty tuple means no classifier (logits are the pooled features).
    """

    weight: np.ndarray
    bias: np.ndarray
    logits: str
    nodes: tuple[str, ...] = ()
    softmax: str | None = None

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    def describe(self) -> str:
        c, f = self.weight.shape
        what = "+".join(self.nodes) if self.nodes else "none (logits = pooled features)"
        sm = f" -> {self.softmax}" if self.softmax else ""
        return f"linear {f}->{c} [{what}]{sm}"


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
    classifier: Classifier
    rejected: tuple[tuple[str, str], ...] = ()

    @property
    def fetches(self) -> list[str]:
        names = [n for layer in self.layers for n in layer.fetches]
        names += [self.pooling.output, self.classifier.logits]
        return list(dict.fromkeys(names))

    @property
    def num_features(self) -> int:
        return int(self.classifier.weight.shape[1])

    def describe(self) -> str:
        """One line per layer: conv, channel-wise steps, pooling, classifier."""
        tail = f" -> {self.pooling.op} -> {self.classifier.describe()}"
        return "\n".join(layer.describe() + tail for layer in self.layers)
