"""Loading an ONNX file safely and indexing its graph (producers, consumers, constants)."""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ModelError, first_line
from ..lfs import refuse_pointer

MIN_OPSET = 7
_FOUR_BIT = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1")
             if hasattr(onnx.TensorProto, n)}
MAX_OPSET = 25


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX model, refusing external data outside the model's folder.

    Raises :class:`ModelError` with a one-line reason for a missing, empty, corrupt or
    unsafe file, or one whose default-domain opset is outside what onnxflat supports.
    """
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    if not p.is_file():
        raise ModelError(f"model path is not a file: {p}")
    if p.stat().st_size == 0:
        raise ModelError(f"model file is empty: {p}")
    refuse_pointer(p, "model", ModelError)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types
        raise ModelError(f"cannot parse {p.name} as an ONNX model ({type(exc).__name__}); "
                         "is it a complete .onnx file?") from None
    if not model.graph.node:
        raise ModelError(f"{p.name} has an empty graph (not an ONNX model, or truncated)")
    _load_external_data(model, p.resolve().parent)
    _check_initializers(model, p.name)
    opset = default_opset(model)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(f"{p.name}: unsupported opset {opset} of the default ONNX domain "
                         f"(supported: {MIN_OPSET}..{MAX_OPSET})")
    _check_dangling(model, p.name)
    try:
        # The weights' data is checked above; the checker gets the graph without them
        # (reading or re-serialising 100 MB of weights took it 0.06-0.2 s on ResNet-50).
        onnx.checker.check_model(weightless(model))
    except Exception as exc:
        raise ModelError(f"{p.name} is not a valid ONNX model: {first_line(exc)}") from None
    return model


def _check_initializers(model: onnx.ModelProto, name: str) -> None:
    """Refuse an initializer whose data does not fill its declared shape and type."""
    for t in model.graph.initializer:
        try:
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type)
        except Exception:
            raise ModelError(f"{name}: initializer '{t.name}' has unknown data type "
                             f"{t.data_type}") from None
        count = math.prod(t.dims)
        if t.HasField("raw_data"):
            bits = 4 if t.data_type in _FOUR_BIT else 8 * dtype.itemsize
            ok = len(t.raw_data) == (count * bits + 7) // 8
        else:
            try:
                ok = numpy_helper.to_array(t).size == count
            except Exception:
                ok = False
        if not ok:
            raise ModelError(f"{name}: initializer '{t.name}' does not hold the data its "
                             f"declared shape {tuple(t.dims)} and type "
                             f"{onnx.TensorProto.DataType.Name(t.data_type)} need (corrupt file?)")


def _check_dangling(model: onnx.ModelProto, name: str) -> None:
    """Refuse a top-level node input that no graph input, initializer or node gives."""
    g = model.graph
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    known |= {t.values.name for t in g.sparse_initializer}
    known |= {o for n in g.node for o in n.output}
    for node in g.node:
        for i in node.input:
            if i not in known:
                raise ModelError(f"{name}: node '{node.name or node.op_type}' reads '{i}', which "
                                 "no input, initializer or node provides (dangling input; was "
                                 "the model cut or edited?)")


def default_opset(model: onnx.ModelProto) -> int | None:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return None


def _load_external_data(model: onnx.ModelProto, base: Path) -> None:
    """Load the external tensors of ``model`` (checked to lie in ``base``)."""
    tensors = list(model.graph.initializer) + [
        a.t for n in model.graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
    external = [t for t in tensors if onnx.external_data_helper.uses_external_data(t)]
    for t in external:
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        target = (base / loc).resolve()
        if os.path.isabs(loc) or base not in target.parents:
            raise ModelError(f"initializer '{t.name}' points to external data outside the "
                             f"model's folder ({loc!r}); refused")
        if not target.is_file():
            raise ModelError(f"initializer '{t.name}': external data file {loc!r} not found "
                             "beside the model")
    if external:
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(base))
        except Exception as exc:
            raise ModelError(f"cannot read external data: {exc}") from None


def copy_fields(src, dst, skip: tuple[str, ...] = ()) -> None:
    """Copy every set field of protobuf message ``src`` into ``dst`` except ``skip``."""
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        if hasattr(value, "extend"):
            getattr(dst, fd.name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def weightless(model: onnx.ModelProto, max_elements: int = 4096) -> onnx.ModelProto:
    """The model with its large initializers turned into typed graph inputs: the same graph
    for the checker and shape inference, without serialising the weights (0.2 s on
    ResNet-50); their data is checked by :func:`_check_initializers`. Small initializers
    (shapes, axes, scalars) stay, for shape inference's constant propagation."""
    g = model.graph
    out = onnx.ModelProto()
    copy_fields(model, out, skip=("graph",))
    copy_fields(g, out.graph, skip=("initializer",))
    inputs = {i.name for i in g.input}
    for t in g.initializer:
        if int(np.prod(t.dims)) <= max_elements:
            out.graph.initializer.append(t)
        elif t.name not in inputs:
            out.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type,
                                                                      list(t.dims)))
    return out


class GraphIndex:
    """Read-only views of a graph: who produces and consumes each tensor, constant values.

    Constant folding covers initializers, Constant nodes and shape-preserving ops on
    constants (Identity, Cast, Transpose, Reshape, (Un)Squeeze, Flatten, Dequantize is not
    folded). It evaluates no other node: the analyzer never runs the model.
    """

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.opset = default_opset(model) or 0
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.order: dict[int, int] = {}
        # Hold the wrappers: node identity (id) is only stable while they are referenced.
        self.nodes: list[onnx.NodeProto] = list(self.graph.node)
        for i, node in enumerate(self.nodes):
            self.order[id(node)] = i
            for o in node.output:
                if o:
                    self.producer[o] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.graph_inputs = [i for i in self.graph.input if i.name not in self.initializers]
        self.graph_outputs = [o.name for o in self.graph.output]
        self._const_cache: dict[str, np.ndarray | None] = {}

    @staticmethod
    def node_name(node: onnx.NodeProto) -> str:
        return node.name or f"{node.op_type}:{node.output[0]}"

    @cached_property
    def shapes(self) -> dict[str, tuple]:
        """Static shapes from ONNX shape inference (dims are int, or str/None when free)."""
        try:
            inferred = onnx.shape_inference.infer_shapes(weightless(self.model),
                                                         strict_mode=False)
        except Exception:
            inferred = self.model
        out: dict[str, tuple] = {}
        g = inferred.graph
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                out[vi.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in t.shape.dim)
        for name, init in self.initializers.items():
            out[name] = tuple(init.dims)
        return out

    def static_dims(self, name: str) -> tuple | None:
        return self.shapes.get(name)

    def attrs(self, node: onnx.NodeProto) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is a constant of the graph, else None."""
        if not name:
            return None
        if name not in self._const_cache:
            self._const_cache[name] = None  # guards against cycles
            self._const_cache[name] = self._fold(name)
        return self._const_cache[name]

    def _fold(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is None:
            return None
        a = self.attrs(node)
        op = node.op_type
        if op == "Constant":
            for key in ("value", "sparse_value"):
                if key in a:
                    v = a[key]
                    return numpy_helper.to_array(v) if key == "value" else None
            for key, dt in (("value_float", np.float32), ("value_floats", np.float32),
                            ("value_int", np.int64), ("value_ints", np.int64)):
                if key in a:
                    return np.asarray(a[key], dtype=dt)
            return None
        ins = [self.const(i) if i else None for i in node.input]
        if not ins or ins[0] is None:
            return None
        x = ins[0]
        if op == "Identity":
            return x
        if op == "Cast":
            return x.astype(onnx.helper.tensor_dtype_to_np_dtype(a["to"]))
        if op == "Transpose":
            return np.transpose(x, a.get("perm"))
        if op == "Reshape" and len(ins) > 1 and ins[1] is not None:
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(ins[1].tolist())]
            return x.reshape(shape)
        if op in ("Squeeze", "Unsqueeze"):
            axes = a.get("axes") if "axes" in a else (
                ins[1].tolist() if len(ins) > 1 and ins[1] is not None else None)
            if op == "Squeeze":
                return np.squeeze(x, axis=tuple(axes) if axes is not None else None)
            if axes is None:
                return None
            out_rank = x.ndim + len(axes)
            for ax in sorted(int(v) % out_rank for v in axes):
                x = np.expand_dims(x, ax)
            return x
        if op == "Flatten":
            ax = a.get("axis", 1) % max(x.ndim, 1)
            return x.reshape(int(np.prod(x.shape[:ax])), -1)
        return None
