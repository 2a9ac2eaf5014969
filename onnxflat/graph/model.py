"""Loading an ONNX file safely and indexing its graph (producers, consumers, constants)."""

from __future__ import annotations

import heapq
import math
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops import load_op

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


# Ops whose outputs are constants when all their inputs are: the ways exporters compute
# weights in the graph (Caffe2's ConstantOfShape fills, float16 weights behind Cast, int8
# weights behind DequantizeLinear, reshaped or scaled kernels). Nothing costlier is folded.
FOLDABLE = frozenset({
    "Constant", "ConstantOfShape", "Identity", "Cast", "CastLike", "Reshape", "Transpose",
    "Squeeze", "Unsqueeze", "Flatten", "DequantizeLinear", "Add", "Sub", "Mul", "Div", "Sum",
    "Neg", "Sqrt", "Reciprocal", "Concat", "Slice", "Split", "Expand"})
# Ops whose output may be larger than all their inputs together (broadcasts, fills).
_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Sum"})
_LOW_PRECISION = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}
# Elements of one folded tensor (256 MiB in float32); a larger computed weight is refused.
MAX_FOLD_ELEMENTS = 1 << 26


# onnx's latest reference DequantizeLinear (per tensor, per axis, blocked), for the models of
# opsets 10-18, whose DequantizeLinear it does not implement (their semantics are a subset).
# The evaluator matches a replacement by its class name.
_DEQUANTIZE_LINEAR = type("DequantizeLinear", (load_op("", "DequantizeLinear"),),
                          {"op_domain": ""})


class GraphIndex:
    """Read-only views of a graph: who produces and consumes each tensor, constant values.

    The constants are the initializers and the outputs of :data:`FOLDABLE` nodes whose inputs
    are all constants, found in one pass in graph order. Their values are computed on demand
    (only those the analysis reads) by onnx's reference evaluator, node by node in graph order
    (no recursion, however deep the graph). The reference evaluator implements each op of
    every opset as the ONNX specification states; onnxruntime's basic optimisations would
    instead fuse BatchNormalization into the conv (changing which kernel is measured) and keep
    DequantizeLinear unfolded, and onnxscript's optimizer folds the whole model at once.
    The analyzer never runs the model: only the weight-producing subgraph is evaluated.
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
        self.constants = self._constant_names()
        self._values: dict[str, np.ndarray] = {}

    @staticmethod
    def node_name(node: onnx.NodeProto) -> str:
        return node.name or f"{node.op_type}:{node.output[0]}"

    def _constant_names(self) -> set[str]:
        known = set(self.initializers)
        for node in self.nodes:  # graph order is topological (checked by onnx.checker)
            if (node.op_type in FOLDABLE and node.domain in ("", "ai.onnx")
                    and all(i in known for i in node.input if i)
                    and not (node.op_type == "Constant"
                             and any(a.name == "sparse_value" for a in node.attribute))):
                known.update(o for o in node.output if o)
        return known

    @cached_property
    def _inferred(self) -> tuple[dict[str, tuple], dict[str, int]]:
        """Static shapes (dims are int, or str/None when free) and element types from ONNX
        shape inference."""
        try:
            inferred = onnx.shape_inference.infer_shapes(weightless(self.model),
                                                         strict_mode=False)
        except Exception:
            inferred = self.model
        shapes: dict[str, tuple] = {}
        types: dict[str, int] = {}
        g = inferred.graph
        for vi in list(g.value_info) + list(g.input) + list(g.output):
            t = vi.type.tensor_type
            if t.elem_type:
                types[vi.name] = t.elem_type
            if t.HasField("shape"):
                shapes[vi.name] = tuple(
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                    for d in t.shape.dim)
        for name, init in self.initializers.items():
            shapes[name] = tuple(init.dims)
            types[name] = init.data_type
        return shapes, types

    @property
    def shapes(self) -> dict[str, tuple]:
        return self._inferred[0]

    def elem_type(self, name: str) -> int | None:
        """The ONNX element type of tensor ``name`` when shape inference knows it."""
        return self._inferred[1].get(name)

    def static_dims(self, name: str) -> tuple | None:
        return self.shapes.get(name)

    def attrs(self, node: onnx.NodeProto) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def is_const(self, name: str) -> bool:
        """Whether ``name`` is a constant of the graph (without computing it)."""
        return name in self.constants

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is a constant of the graph, else None.

        Raises :class:`ModelError` when computing it fails or would exceed
        :data:`MAX_FOLD_ELEMENTS` elements."""
        if not name or name not in self.constants:
            return None
        if name not in self._values:
            for node in self._fold_plan(name):
                self._evaluate(node, self._values)
        return self._values[name]

    def evaluate(self, target: str, feeds: dict[str, np.ndarray],
                 allowed: frozenset[str] | None = None) -> np.ndarray:
        """The value of tensor ``target`` computed from ``feeds`` (tensor name -> value) and
        the graph's constants, by the reference evaluator as constants are folded.

        Raises :class:`ModelError` naming the node when ``target`` needs a model input that
        is not fed, or a node whose op is not in ``allowed`` (None: any op)."""
        values, plan, seen, todo = dict(feeds), {}, set(), [target]
        while todo:
            t = todo.pop()
            if t in seen or t in values:
                continue
            seen.add(t)
            if t in self.constants:
                values[t] = self.const(t)
                continue
            node = self.producer.get(t)
            if node is None:
                raise ModelError(f"'{target}' depends on the model input '{t}'")
            if allowed is not None and node.op_type not in allowed:
                raise ModelError(f"'{target}' is computed by {node.op_type} "
                                 f"'{self.node_name(node)}'")
            plan[id(node)] = node
            todo.extend(i for i in node.input if i)
        for node in sorted(plan.values(), key=lambda n: self.order[id(n)]):
            self._evaluate(node, values)
        return values[target]

    def why_not_const(self, name: str) -> str:
        """Why tensor ``name`` is not a constant: the model input it comes from, or the
        nearest node computing it that onnxflat does not fold."""
        t = name
        while (node := self.producer.get(t)) is not None and node.op_type in FOLDABLE:
            t = next((i for i in node.input if i and i not in self.constants), None)
            if t is None:  # a form onnxflat does not fold (sparse Constant, other domain)
                break
        if node is None:
            return f"'{name}' is fed by the model input '{t}'"
        return f"'{name}' is computed by {node.op_type} '{self.node_name(node)}', which " \
               "onnxflat does not fold"

    def origin(self, name: str) -> str:
        """How constant ``name`` is stored when it is not plainly as float32/64: dequantized
        from integers, or rounded to float16/bfloat16 (else "")."""
        seen, todo, low = set(), [name], ""
        while todo:
            t = todo.pop()
            if t in seen or t not in self.constants:
                continue
            seen.add(t)
            node = self.producer.get(t)
            if t in self.initializers or node is None:
                low = low or _LOW_PRECISION.get(self.initializers[t].data_type, "")
                continue
            if node.op_type == "DequantizeLinear":
                kind = onnx.TensorProto.DataType.Name(self.elem_type(node.input[0]) or 0)
                return (f"dequantized from {kind.lower()} by DequantizeLinear "
                        f"'{self.node_name(node)}'")
            if node.op_type == "Constant":
                value = next((a.t for a in node.attribute if a.name == "value"), None)
                low = low or _LOW_PRECISION.get(value.data_type if value else 0, "")
            todo.extend(i for i in node.input if i)
        return f"stored as {low}" if low else ""

    def _fold_plan(self, name: str) -> list[onnx.NodeProto]:
        """The nodes still to evaluate for ``name``, in graph order."""
        plan, seen, todo = {}, set(), [name]
        while todo:
            t = todo.pop()
            if t in seen or t in self._values:
                continue
            seen.add(t)
            if t in self.initializers:
                try:
                    self._values[t] = numpy_helper.to_array(self.initializers[t])
                except Exception as exc:  # an element type NumPy cannot hold
                    raise ModelError(f"cannot read initializer '{t}': {first_line(exc)}") \
                        from None
                continue
            node = self.producer[t]
            plan[id(node)] = node
            todo.extend(i for i in node.input if i)
        return sorted(plan.values(), key=lambda n: self.order[id(n)])

    def _evaluate(self, node: onnx.NodeProto, values: dict[str, np.ndarray]) -> None:
        """Run ``node`` on its inputs in ``values``; its outputs are added to ``values``."""
        ins = [values[i] if i else None for i in node.input]
        if node.op_type == "Identity":  # no copy, no evaluator (exporters chain many)
            values[node.output[0]] = ins[0]
            return
        size = self._fold_size(node, ins)
        if size > MAX_FOLD_ELEMENTS:
            raise ModelError(f"constant '{node.output[0]}' computed by {node.op_type} "
                             f"'{self.node_name(node)}' would hold {size} elements (over "
                             f"{MAX_FOLD_ELEMENTS}); refused")
        opsets = {imp.domain or "": int(imp.version) for imp in self.model.opset_import}
        opsets[""] = self.opset
        new_ops = [_DEQUANTIZE_LINEAR] if self.opset < 19 else None
        feeds = {i: v for i, v in zip(node.input, ins) if i}
        graph = onnx.helper.make_graph(
            [node], "fold", [onnx.ValueInfoProto(name=i) for i in feeds],
            [onnx.ValueInfoProto(name=o) for o in node.output if o])
        try:
            outs = ReferenceEvaluator(graph, opsets=opsets, new_ops=new_ops).run(None, feeds)
        except Exception as exc:
            raise ModelError(f"cannot compute constant '{node.output[0]}' of {node.op_type} "
                             f"'{self.node_name(node)}': {first_line(exc)}") from None
        for o, v in zip(node.output, outs):
            if o:
                values[o] = np.asarray(v)

    def _fold_size(self, node: onnx.NodeProto, ins: list) -> int:
        """Elements of ``node``'s largest output, known before evaluating it."""
        op = node.op_type
        try:
            if op == "ConstantOfShape":
                return math.prod(int(d) for d in np.ravel(ins[0]))
            if op == "Expand":
                return math.prod(np.broadcast_shapes(ins[0].shape, tuple(
                    int(d) for d in np.ravel(ins[1]))))
            if op in _BROADCASTING:
                return math.prod(np.broadcast_shapes(*(v.shape for v in ins if v is not None)))
        except (ValueError, TypeError, OverflowError):
            return 0  # the evaluator names the invalid shape
        return sum(v.size for v in ins if v is not None) + 1  # reshapes, casts, Constant


class Frontier:
    """Nodes still to visit, each once, in graph (topological) order; ``push`` adds more."""

    def __init__(self, ix: GraphIndex, nodes):
        self.ix, self.heap, self.seen = ix, [], set()
        self.push(nodes)

    def push(self, nodes) -> None:
        for n in nodes:
            heapq.heappush(self.heap, (self.ix.order[id(n)], id(n), n))

    def __iter__(self):
        while self.heap:
            _, key, node = heapq.heappop(self.heap)
            if key not in self.seen:
                self.seen.add(key)
                yield node
