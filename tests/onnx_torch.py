"""A small float64 torch interpreter of ONNX graphs (the ops of the committed fixtures), as an
independent autograd reference: the graph's own nodes, none of onnxflat's reading."""

from __future__ import annotations

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b=None, **a):
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID", "NOTSET", "VALID"):
        raise NotImplementedError("auto_pad SAME")
    x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    return F.conv2d(x, w, b, tuple(a.get("strides", (1, 1))), 0,
                    tuple(a.get("dilations", (1, 1))), a.get("group", 1))


def _bn(x, s, b, m, v, epsilon=1e-5, **_):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - m.reshape(shape)) / torch.sqrt(v.reshape(shape) + epsilon) * s.reshape(shape) \
        + b.reshape(shape)


def _reshape(x, shape, **_):
    dims = [x.shape[i] if int(d) == 0 else int(d) for i, d in enumerate(shape.tolist())]
    return x.reshape(dims)


def _slice(x, starts, ends, axes=None, steps=None, **_):
    axes = range(len(starts)) if axes is None else axes.tolist()
    steps = [1] * len(starts) if steps is None else steps.tolist()
    idx = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts.tolist(), ends.tolist(), axes, steps):
        idx[ax] = slice(s, min(e, x.shape[ax]), st)
    return x[tuple(idx)]


def _squeeze(x, axes=None, **a):
    axes = a.get("axes") if axes is None else axes.tolist()
    return x.squeeze() if axes is None else x.squeeze(tuple(axes))


OPS = {
    "Conv": _conv, "BatchNormalization": _bn, "Reshape": _reshape, "Slice": _slice,
    "Squeeze": _squeeze, "Relu": lambda x, **_: F.relu(x),
    "Add": lambda a, b, **_: a + b, "Mul": lambda a, b, **_: a * b,
    "MatMul": lambda a, b, **_: a @ b, "Identity": lambda x, **_: x,
    "HardSigmoid": lambda x, alpha=0.2, beta=0.5, **_: (alpha * x + beta).clamp(0, 1),
    "GlobalAveragePool": lambda x, **_: x.mean(tuple(range(2, x.dim())), keepdim=True),
    "Transpose": lambda x, perm=None, **_: x.permute(*(perm or reversed(range(x.dim())))),
    "Shape": lambda x, **_: torch.tensor(x.shape, dtype=torch.int64),
    "Concat": lambda *xs, axis=0, **_: torch.cat(xs, axis),
}


def evaluate(model: onnx.ModelProto, x: torch.Tensor, params: dict | None = None,
             env: dict | None = None, only: set | None = None) -> dict:
    """Every tensor of the graph for input ``x``, float64. ``params`` replaces initializers by
    name (tensors autograd may differentiate); ``env``, ``only``: reuse the tensors of an
    earlier evaluation and recompute only the nodes named in ``only``."""
    if env is None:
        env = {}
        for t in model.graph.initializer:
            arr = torch.from_numpy(numpy_helper.to_array(t).copy())
            env[t.name] = arr.double() if arr.is_floating_point() else arr
        env[model.graph.input[0].name] = x.double()
    env = {**env, **(params or {})}
    for node in model.graph.node:
        if only is not None and node.name not in only:
            continue
        args = [env[i] if i else None for i in node.input]
        while args and args[-1] is None:
            args.pop()
        env[node.output[0]] = OPS[node.op_type](*args, **_attrs(node))
    return env


def _downstream(model: onnx.ModelProto, name: str) -> set:
    """Names of the nodes that depend on tensor ``name``."""
    live, nodes = {name}, set()
    for node in model.graph.node:
        if live & set(node.input):
            nodes.add(node.name)
            live |= set(node.output)
    return nodes


def hessian_measures(model: onnx.ModelProto, x, y, name: str, columns: bool = False):
    """(trace, kappa) of the mean cross-entropy's Hessian w.r.t. initializer ``name`` (rows:
    filters, or classes; ``columns``: a MatMul weight ``(F, C)`` whose classes are columns)."""
    with torch.no_grad():
        base = evaluate(model, x)
    only = _downstream(model, name)
    out = model.graph.output[0].name
    w0 = base[name].T if columns else base[name]

    def loss(w):
        env = evaluate(model, x, {name: w.T if columns else w}, base, only)
        return F.cross_entropy(env[out], y)

    # vmap costs seconds to warm up: worth it only for many rows of backward passes
    h = torch.autograd.functional.hessian(loss, w0, vectorize=w0.numel() > 256)
    rows = w0.shape[0]
    t = torch.einsum("aibi->ab", h.reshape(rows, -1, rows, w0[0].numel()))
    wf = w0.reshape(rows, -1)
    return float(torch.trace(t)), float((t * (wf @ wf.T)).sum())
