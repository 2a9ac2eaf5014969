"""NumPy helpers shared by the fixture generators of other frameworks (Keras, Paddle).

Each generator computes a full Hessian with its framework's autograd; these helpers only
reduce it to the quantities of docs/flatness-math.md and locate a kernel in the export.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def trace_kappa(h: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """(trace, kappa, ||w||^2) from a Hessian ``h`` ``(C, d, C, d)`` and filters ``w`` ``(C, d)``.

    kappa = sum_{s,s'} <w_s, w_s'> Tr H_{s,s'} over rows s (conv filters or classes).
    """
    t = np.einsum("aibi->ab", h)
    return float(np.trace(t)), float(np.sum(t * (w @ w.T))), float(np.sum(w ** 2))


def stored_conv(proto: onnx.ModelProto, kernel: np.ndarray) -> tuple[str, np.ndarray]:
    """(Conv node name, per-filter ``s``) with the file's weight = ``s * kernel``.

    ``kernel`` is in ONNX layout ``(C_out, C_in/g, *k)``; the stored one may have extra unit
    axes (tf2onnx writes a Conv1D as a 1 x k Conv). Exporters fold per-channel
    scales (a BatchNormalization right after the conv) into the stored kernel; the
    references must differentiate the kernel as stored, so they need ``s``. A pointwise
    MatMul's weight ``W`` ``(C_in, C_out)`` is the kernel ``W^T`` of a 1x1 conv.
    """
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        w = inits.get(node.input[1]) if node.op_type in ("Conv", "MatMul") else None
        if node.op_type == "MatMul" and w is not None and w.ndim == 2:
            w = w.T[:, :, None, None]
        if w is None or w.shape[:2] != kernel.shape[:2] or [
                d for d in w.shape[2:] if d != 1] != [d for d in kernel.shape[2:] if d != 1]:
            continue
        ratio = w.reshape(w.shape[0], -1) / kernel.reshape(w.shape[0], -1)
        s = ratio[:, 0]
        if np.allclose(ratio, s[:, None], rtol=1e-5) and np.all(s > 0):
            return node.name, s.astype(np.float64)
    raise RuntimeError("the kernel is not found (up to a per-filter scale) in the export")
