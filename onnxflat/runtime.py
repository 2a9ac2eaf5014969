"""onnxruntime stage: expose the head's intermediate tensors and run batches.

Knows nothing of the formulas: it turns ``Head.fetches`` into graph outputs, builds a
session (CUDA execution provider when available, else CPU) and returns, per batch, the
fetched tensors by name: NumPy arrays, or CuPy arrays left on the GPU when the session runs
on CUDA and CuPy is installed (IOBinding; the activations never cross to the host and the
array-API math runs on the GPU). Without CuPy the CUDA outputs are copied to the host.
"""

from __future__ import annotations

import logging
import math
import sys

import numpy as np
import onnx
import onnxruntime as ort
from array_api_compat import array_namespace

from .errors import DataError, ModelError, first_line
from .graph.head import Head
from .graph.model import copy_fields

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Largest input one onnxruntime run may be fed; beyond it a declared shape is refused.
MAX_RUN_BYTES = 4 << 30
# onnxruntime output types the GPU path views in place (others are copied through the host).
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
               "tensor(float16)": np.float16}
# onnxruntime's own logging, fatal only: its errors come back as exceptions, reworded.
QUIET = 4
# Initializers with more raw data than this go to onnxruntime as arrays, not serialised.
INLINE_BYTES = 1024
# The external-data location of those; onnxruntime replaces them before it reads any file.
IN_MEMORY = "onnxflat-in-memory"
_ARRAY_DTYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
                 onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
                 onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT8: np.int8,
                 onnx.TensorProto.UINT8: np.uint8}


def select_providers(device: str = "auto") -> list[str]:
    """Providers to ask for: ``auto`` prefers CUDA when this onnxruntime build has it."""
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise ModelError("--device cuda: this onnxruntime has no CUDA provider; install the "
                             "GPU build (see README, 'GPU install')")
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in available else [CPU]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """onnxflat's session options (also the benchmarks' plain onnxruntime baseline)."""
    so = ort.SessionOptions()
    so.log_severity_level = QUIET
    if threads:
        so.intra_op_num_threads = threads
    return so


def with_outputs(model: onnx.ModelProto, names: list[str]) -> tuple[onnx.ModelProto, dict]:
    """A copy of ``model`` whose outputs are exactly ``names``, without the nodes that none
    of them needs (a trailing Softmax, an unused branch), so onnxruntime runs only the
    subgraph the measures read.

    The copy holds no large weights: every initializer over ``INLINE_BYTES`` of raw data
    is marked as external data and returned beside it, ``{name: array}``, for
    onnxruntime's ``add_external_initializers`` (never serialised and parsed again)."""
    g = model.graph
    producer = {o: i for i, node in enumerate(g.node) for o in node.output if o}
    keep, todo = set(), list(names)
    while todo:
        i = producer.get(todo.pop())
        if i is not None and i not in keep:
            keep.add(i)
            todo.extend(x for x in g.node[i].input if x)
            todo.extend(_subgraph_inputs(g.node[i]))
    used = {x for i in keep for x in g.node[i].input} | set(names)
    used |= {x for i in keep for x in _subgraph_inputs(g.node[i])}
    m = onnx.ModelProto()
    copy_fields(model, m, skip=("graph",))
    copy_fields(g, m.graph, skip=("node", "initializer", "input", "output"))
    m.graph.node.extend(g.node[i] for i in sorted(keep))
    inits = {t.name for t in g.initializer}
    m.graph.input.extend(i for i in g.input if i.name in used or i.name not in inits)
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    weights = {}
    for t in g.initializer:
        if t.name not in used:
            continue
        dtype = _ARRAY_DTYPES.get(t.data_type) if sys.byteorder == "little" else None
        raw = t.raw_data if dtype is not None else b""  # each read copies the bytes: once
        if len(raw) <= INLINE_BYTES:
            m.graph.initializer.append(t)
            continue
        weights[t.name] = np.frombuffer(raw, dtype).reshape(tuple(t.dims))
        m.graph.initializer.append(onnx.TensorProto(
            name=t.name, dims=t.dims, data_type=t.data_type,
            data_location=onnx.TensorProto.EXTERNAL,
            external_data=[onnx.StringStringEntryProto(key="location", value=IN_MEMORY)]))
    return m, weights


def _subgraph_inputs(node: onnx.NodeProto) -> list[str]:
    """Outer-scope names read by the subgraphs of an If/Loop/Scan node."""
    names = []
    for a in node.attribute:
        for sub in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            names += [x for n in sub.node for x in n.input if x]
            for n in sub.node:
                names += _subgraph_inputs(n)
    return names


def _cupy():
    """The cupy module, or None when it is not installed (or has no usable GPU)."""
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:  # ImportError, or a CUDA runtime error without a device
        return None


def cupy_view(value: ort.OrtValue):
    """A CuPy array over a CUDA OrtValue's memory (no copy); it keeps the OrtValue alive."""
    cp = _cupy()
    dtype = _ORT_DTYPES.get(value.data_type())
    if dtype is None:
        return cp.asarray(value.numpy())
    shape = tuple(value.shape())
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    mem = cp.cuda.UnownedMemory(value.data_ptr(), nbytes, value)
    return cp.ndarray(shape, dtype, cp.cuda.MemoryPointer(mem, 0))


# onnxruntime's error types (onnxruntime.capi.onnxruntime_pybind11_state) that mean the data
# does not fit the model's input; the others fail inside the model (a kernel this build lacks,
# a node that cannot run on the shapes the graph computes).
_DATA_ERRORS = ("InvalidArgument",)


def run_error(exc: Exception, shape: tuple) -> DataError | ModelError:
    """A failed onnxruntime run as the user's error: the data (wrong input shape or type, a
    batch too large for memory) or the model (an op or type the runtime cannot execute)."""
    text = first_line(exc)
    if type(exc).__name__ in _DATA_ERRORS or isinstance(exc, MemoryError) or "allocat" in text:
        hint = "; use a smaller --batch-size" if "allocat" in text or isinstance(
            exc, MemoryError) else ""
        return DataError(f"onnxruntime refused a batch of shape {shape}: {text}{hint}")
    return ModelError(f"onnxruntime cannot run the model (on a batch of shape {shape}): "
                      f"{text}")


class Extractor:
    """Runs a model and returns the tensors a :class:`Head` needs, batch by batch.

    ``run(x)`` with x ``(N, *input_shape[1:])`` returns ``{name: array}`` for every name
    in ``head.fetches``. A model exported with a fixed batch size b is fed b samples at a
    time (the last chunk zero-padded and trimmed), so any N works.
    """

    def __init__(self, model: onnx.ModelProto, head: Head, device: str = "auto",
                 threads: int | None = None):
        self.head = head
        self.input_name = head.input_name
        # The model input itself may be needed (a conv on the input); it is passed through.
        self.fetches = [n for n in head.fetches if n != self.input_name]
        m, weights = with_outputs(model, self.fetches)
        so = session_options(threads)
        try:
            so.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(w)
                                                         for w in weights.values()])
            self.session = ort.InferenceSession(m.SerializeToString(), so,
                                                providers=select_providers(device))
        except Exception as exc:
            raise ModelError(f"onnxruntime cannot load the model: {first_line(exc)}") from None
        self.provider = self.session.get_providers()[0]
        # Where the fetched tensors live: "cuda" (CuPy, bound outputs) or "cpu" (NumPy).
        self.output_device = "cpu"
        if self.provider == CUDA:
            if _cupy() is not None:
                self.output_device = "cuda"
            else:
                log.info("CuPy is not installed: the CUDA outputs are copied to the host and "
                         "the measures run on the CPU (pip install 'onnxflat[gpu]')")
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = QUIET
        self.input_dtype = np.dtype(head.input_dtype)
        dim0 = head.input_shape[0] if head.input_shape else None
        self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        sample = [d for d in head.input_shape[1:] if isinstance(d, int) and d > 0]
        size = (self.fixed_batch or 1) * math.prod(sample) * self.input_dtype.itemsize
        if size > MAX_RUN_BYTES:
            raise ModelError(f"the model input '{self.input_name}' declares shape "
                             f"{tuple(head.input_shape)}: {size / 2**30:.3g} GiB per run; refused")

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        nbytes = x.size * self.input_dtype.itemsize
        if nbytes > MAX_RUN_BYTES:
            raise DataError(f"a batch of {len(x)} samples is {nbytes / 2**30:.3g} GiB, over the "
                            f"{MAX_RUN_BYTES >> 30} GiB per run; use a smaller --batch-size")
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        out = self._batched(x)
        if self.input_name in self.head.fetches:
            out[self.input_name] = _cupy().asarray(x) if self.output_device == "cuda" else x
        return out

    def _batched(self, x: np.ndarray) -> dict[str, np.ndarray]:
        b = self.fixed_batch
        if b is None or x.shape[0] == b:
            return self._run(x)
        parts = []
        for s in range(0, x.shape[0], b):
            chunk = x[s:s + b]
            k = chunk.shape[0]
            if k < b:
                chunk = np.concatenate([chunk, np.zeros((b - k,) + chunk.shape[1:], x.dtype)])
            parts.append({n: v[:k] for n, v in self._run(chunk).items()})
        xp = array_namespace(parts[0][self.fetches[0]])
        return {n: xp.concat([p[n] for p in parts]) for n in self.fetches}

    def _run(self, x: np.ndarray) -> dict:
        try:
            if self.output_device == "cuda":
                values = self._run_bound(x, "cuda", cupy_view)
            else:
                values = self.session.run(self.fetches, {self.input_name: x},
                                          self._run_options)
        except Exception as exc:
            raise run_error(exc, x.shape) from None
        out = dict(zip(self.fetches, values))
        self._check_shapes(out, len(x))
        return out

    def _run_bound(self, x: np.ndarray, device: str, convert) -> list:
        """One run with IOBinding: outputs stay on ``device`` and ``convert`` wraps each
        OrtValue (``cupy_view`` on CUDA; tested on CPU with ``OrtValue.numpy``)."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, x)
        for name in self.fetches:
            binding.bind_output(name, device)
        self.session.run_with_iobinding(binding, self._run_options)
        return [convert(v) for v in binding.get_outputs()]

    def _check_shapes(self, out: dict[str, np.ndarray], n: int) -> None:
        """The head's tensors keep the batch axis first, each conv's input and output have
        its rank and its output its channels, and the pooling yields the classifier's
        features; else the graph does something the analysis did not see."""
        head = self.head
        names = {head.pooling.output, head.after.logits}
        names |= {t for layer in head.layers for t in (layer.conv.input, layer.conv.output)}
        for name in sorted(names & out.keys()):
            if out[name].shape[:1] != (n,):
                raise ModelError(f"tensor '{name}' has shape {out[name].shape} for a batch of "
                                 f"{n}: the model does not keep the batch axis first")
        for layer in head.layers:
            conv = layer.conv
            for name in (conv.input, conv.output):
                shape = tuple(out[name].shape) if name in out else None
                if shape is not None and len(shape) != conv.kernel.ndim:
                    raise ModelError(f"tensor '{name}' of layer '{conv.node}' has shape "
                                     f"{shape}: not a {conv.kernel.ndim}-D map (N, C and the "
                                     f"kernel's {conv.spatial_rank} spatial axes)")
            z = out.get(conv.output)
            if z is not None and conv.nchw(tuple(z.shape))[1] != conv.out_channels:
                raise ModelError(f"conv '{conv.node}' output '{conv.output}' has shape "
                                 f"{tuple(z.shape)}, not {conv.out_channels} channels")
        pooled = out[head.pooling.output]
        if pooled.size != n * head.num_features:
            raise ModelError(f"the pooling output '{head.pooling.output}' has shape "
                             f"{pooled.shape}, not {head.num_features} features per sample")
