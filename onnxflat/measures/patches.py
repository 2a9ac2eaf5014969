"""Receptive-field patch algebra of a convolution with 1, 2 or 3 spatial axes: the Gram
``R = V V^T`` and ``||x_p||^2``.

For one sample, with ``X_g`` the ``P x d`` patch matrix of group ``g`` (padding entries 0),
``D`` the ``C_out x P`` matrix of ``phi'`` and ``v_j = (1/P) sum_p D_jp x_p`` (math note,
section 5), :func:`filter_factors` returns ``R_jj' = <v_j, v_j'>`` as two thin factors and
``||x^{g}_p||^2``. ``A_k`` is the ``C_in x P`` slice of the input that kernel offset ``k``
reads (one gather; the patch matrix is ``X = [A_1; ...; A_K]^T``, never formed whole, so no
copy grows with the kernel volume ``K``). Three exact routes; :func:`choose_route` takes the
cheapest:

- ``pixel``: Gram of the input positions ``T = A^T A`` (``M x M`` for ``M`` input
  positions), then ``S_pq = sum_k T[i_k(p), i_k(q)]``; groups = 1. For a 1x1, stride-1 conv
  this is the fast path ``S = A^T A``.
- ``patch``: ``S = X X^T = sum_k A_k^T A_k`` (groups = 1). Then ``R = D S D^T / P^2``.
- ``vector``: ``V = D X / P``, formed offset by offset (``D A_k^T / P``), ``R = V V^T``
  (any groups; best for depthwise).

``||x_p||^2`` is ``diag(S)`` (pixel, patch) or ``sum_k u[i_k(p)]`` with ``u`` the squared
norm of each input position's channels (vector).

A channels-last input ``(N, H, W, C_in)`` (a pointwise MatMul layer, a 1x1 stride-1 conv)
is its own patch matrix: ``X`` is a reshape, without a copy, and ``pixel`` is ``patch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace, device as _device


@dataclass(frozen=True)
class Geometry:
    """Shapes of one conv with ``r`` spatial axes: input ``(C_in, *size)``, output
    ``(C_out, *out)``, ``kernel`` (``r`` sizes), groups.

    index: ``(P, K)`` int array (``P`` output positions, ``K`` kernel offsets); entry
    ``[p, k]`` is the flat input position that offset ``k`` of output position ``p`` reads,
    or ``pixels`` (a zero sentinel) in the padding.
    channels_last: the input is ``(N, *size, C_in)`` (only for 1x1, stride 1, no padding).
    """

    c_in: int
    size: tuple[int, ...]
    c_out: int
    out: tuple[int, ...]
    kernel: tuple[int, ...]
    groups: int
    index: np.ndarray
    channels_last: bool = False
    channels_last: bool = False

    @property
    def positions(self) -> int:
        """Output positions ``P``."""
        return math.prod(self.out)

    @property
    def pixels(self) -> int:
        """Input positions ``M`` (pixels, samples of a sequence, voxels)."""
        return math.prod(self.size)

    @property
    def offsets(self) -> int:
        """Kernel volume ``K``."""
        return math.prod(self.kernel)

    @property
    def d(self) -> int:
        return self.c_in // self.groups * self.offsets


def resolve_pads(size: tuple[int, ...], out: tuple[int, ...], kernel: tuple[int, ...],
                 strides, dilations, pads, auto_pad: str) -> tuple[int, ...]:
    """Explicit ``(begin..., end...)`` pads, two per spatial axis, resolving ONNX ``auto_pad``."""
    if auto_pad in ("NOTSET", "", None):
        return tuple(int(p) for p in pads)
    if auto_pad == "VALID":
        return (0,) * (2 * len(size))
    begin, end = [], []
    for n, o, k, s, d in zip(size, out, kernel, strides, dilations):
        total = max((o - 1) * s + d * (k - 1) + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return tuple(begin + end)


def geometry(c_in: int, size: tuple[int, ...], kernel_shape: tuple[int, ...], groups: int,
             out: tuple[int, ...], strides, dilations, pads, auto_pad="NOTSET",
             channels_last: bool = False) -> Geometry:
    """Build the patch index of a conv over ``size`` (one entry per spatial axis) with an
    output of spatial shape ``out``; checks that ``out`` matches ONNX's rule.
    ``channels_last``: the input is channel-last (a pointwise layer: 1x1, stride 1, no
    padding)."""
    c_out, cg, *kernel = (int(k) for k in kernel_shape)
    r = len(kernel)
    size, out = tuple(int(n) for n in size), tuple(int(o) for o in out)
    if len(size) != r or len(out) != r:
        raise ValueError(f"conv input {size} and output {out} do not have the kernel's {r} "
                         "spatial axes")
    if cg * groups != c_in:
        raise ValueError(f"conv input has {c_in} channels, kernel expects {cg * groups}")
    pads = resolve_pads(size, out, tuple(kernel), strides, dilations, pads, auto_pad)
    want = tuple((n + pads[i] + pads[r + i] - dilations[i] * (k - 1) - 1) // strides[i] + 1
                 for i, (n, k) in enumerate(zip(size, kernel)))
    if want != out:
        raise ValueError(f"conv output {out} does not match the geometry {want}")
    flat = np.zeros(out + tuple(kernel), np.int64)
    inside = np.ones(out + tuple(kernel), bool)
    for i in range(r):  # axis i: output coordinate o_i (axis i), kernel offset k_i (axis r+i)
        shape = [1] * (2 * r)
        shape[i], shape[r + i] = out[i], kernel[i]
        coord = (np.arange(out[i])[:, None] * strides[i] - pads[i]
                 + np.arange(kernel[i])[None, :] * dilations[i]).reshape(shape)
        inside &= (coord >= 0) & (coord < size[i])
        flat = flat * size[i] + coord
    pixels = math.prod(size)
    index = np.where(inside, flat, pixels).reshape(math.prod(out), math.prod(kernel))
    if channels_last and (index.shape[1] > 1 or not np.array_equal(index[:, 0],
                                                                   np.arange(pixels))):
        raise ValueError("a channels-last input needs a 1x1, stride-1 conv without padding")
    return Geometry(c_in, size, c_out, out, tuple(kernel), groups, index, channels_last)


def route_costs(g: Geometry, full: bool) -> dict[str, float]:
    """Approximate multiply-adds per sample of each route (``full``: the whole R)."""
    p, m, d, c = g.positions, g.pixels, g.d, g.c_out
    r_cost = p * p * c + (p * c * c if full else p * c)
    costs = {"vector": p * d + c * p * d + (c * c * d if full else c * d)}
    if g.groups == 1:
        costs["pixel"] = m * m * g.c_in + g.offsets * p * p + r_cost
        costs["patch"] = p * d + p * p * d + r_cost
    return costs


def route_elements(g: Geometry, route: str) -> int:
    """Elements per sample of the route's largest intermediate (to size chunks)."""
    gathered = g.c_in * g.positions  # one A_k
    if route == "pixel":
        return max(g.pixels * g.pixels, g.positions * g.pixels)
    if route == "patch":
        return max(gathered, g.positions * g.positions)
    return max(gathered, g.c_out * g.d)


def choose_route(g: Geometry, full: bool) -> str:
    costs = route_costs(g, full)
    return min(costs, key=costs.get)


def _padded(xp, a, g: Geometry):
    """The input ``(N, C_in, M + 1)``: positions flattened, one zero (the padding) appended."""
    n = a.shape[0]
    flat = xp.reshape(a, (n, g.c_in, g.pixels))
    return xp.concat([flat, xp.zeros((n, g.c_in, 1), dtype=a.dtype, device=_device(a))], axis=2)


def _offsets(xp, flat, g: Geometry):
    """``A_k`` ``(N, C_in, P)`` for each kernel offset k, one at a time."""
    dev = _device(flat)
    for k in range(g.offsets):
        yield xp.take(flat, xp.asarray(g.index[:, k], device=dev), axis=2)


def _pixel_gram(xp, a, g: Geometry):
    """``S = X X^T`` ``(N, P, P)`` from the Gram of the input positions."""
    n, m = a.shape[0], g.pixels
    flat = xp.reshape(a, (n, g.c_in, m))
    t = xp.matmul(xp.permute_dims(flat, (0, 2, 1)), flat)  # (N, M, M)
    if g.offsets == 1 and np.array_equal(g.index[:, 0], np.arange(m)):
        return t
    zc = xp.zeros((n, m, 1), dtype=a.dtype, device=_device(a))
    t = xp.concat([t, zc], axis=2)
    t = xp.concat([t, xp.zeros((n, 1, m + 1), dtype=a.dtype, device=_device(a))], axis=1)
    s = None
    for k in range(g.offsets):
        idx = xp.asarray(g.index[:, k], device=_device(a))
        part = xp.take(xp.take(t, idx, axis=1), idx, axis=2)
        s = part if s is None else s + part
    return s


def _patch_gram(xp, a, g: Geometry):
    """``S = sum_k A_k^T A_k`` ``(N, P, P)``."""
    s = None
    for ak in _offsets(xp, _padded(xp, a, g), g):
        part = xp.matmul(xp.permute_dims(ak, (0, 2, 1)), ak)
        s = part if s is None else s + part
    return s


def filter_factors(a, d1, g: Geometry, route: str | None = None):
    """Thin factors of ``R`` and the squared patch norms for a batch.

    a: ``(N, C_in, *size)`` conv input (``(N, *size, C_in)`` if ``g.channels_last``);
    d1: ``(N, C_out, P)`` = ``phi'``.
    Returns ``(L, Q, sq)`` with ``R = L Q^T`` ``(N, C_out, C_out)`` (never formed here; its
    diagonal is ``sum(L * Q, axis=2)``), L and Q ``(N, C_out, k)`` with ``k = P`` (pixel,
    patch: ``L = D S / P^2``, ``Q = D``) or ``k = d`` (vector: ``L = Q = V``); sq is
    ``(N, C_out, P)``-broadcastable ``||x^{g(j)}_p||^2``, shape ``(N, 1, P)`` for groups = 1
    and ``(N, C_out, P)`` otherwise.
    """
    xp = array_namespace(a, d1)
    route = route or choose_route(g, True)
    n, p = a.shape[0], g.positions
    if g.channels_last:  # X (N, P, C_in) is the input itself
        x = xp.reshape(a, (n, p, g.c_in))
        sq = xp.reshape(xp.sum(x * x, axis=2), (n, 1, p))
        if route == "vector":
            v = xp.matmul(d1, x) / p
            return v, v, sq
        return xp.matmul(d1, xp.matmul(x, xp.permute_dims(x, (0, 2, 1)))) / (p * p), d1, sq
    if route in ("pixel", "patch"):
        if g.groups != 1:
            raise ValueError(f"route {route!r} needs groups = 1")
        s = _pixel_gram(xp, a, g) if route == "pixel" else _patch_gram(xp, a, g)
        sq = xp.reshape(xp.linalg.diagonal(s), (n, 1, p))
        return xp.matmul(d1, s) / (p * p), d1, sq
    if route != "vector":
        raise ValueError(f"unknown route {route!r}")
    gr, cg, ci = g.groups, g.c_out // g.groups, g.c_in // g.groups
    flat = _padded(xp, a, g)
    dg = xp.reshape(d1, (n, gr, cg, p))
    parts = [xp.matmul(dg, xp.permute_dims(xp.reshape(ak, (n, gr, ci, p)), (0, 1, 3, 2)))
             for ak in _offsets(xp, flat, g)]  # K x (N, G, C_out/G, C_in/G)
    # d ordered (k, C_in/G), not as the kernel's (C_in/G, k): R = V V^T does not depend on it
    v = xp.reshape(xp.stack(parts, axis=3), (n, g.c_out, g.d)) / p
    u = xp.sum(xp.reshape(flat * flat, (n, gr, ci, g.pixels + 1)), axis=2)  # (N, G, M + 1)
    sq = None
    for k in range(g.offsets):
        part = xp.take(u, xp.asarray(g.index[:, k], device=_device(a)), axis=2)
        sq = part if sq is None else sq + part  # (N, G, P)
    if gr > 1:
        sq = xp.reshape(xp.broadcast_to(sq[:, :, None, :], (n, gr, cg, p)), (n, g.c_out, p))
    return v, v, sq
