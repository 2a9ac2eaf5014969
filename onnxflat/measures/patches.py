"""Receptive-field patch algebra of a 2-D convolution: the Gram ``R = V V^T`` and ``||x_p||^2``.

For one sample, with ``X_g`` the ``P x d`` patch matrix of group ``g`` (padding entries 0),
``D`` the ``C_out x P`` matrix of ``phi'`` and ``v_j = (1/P) sum_p D_jp x_p`` (math note,
section 5), :func:`filter_factors` returns ``R_jj' = <v_j, v_j'>`` as two thin factors and
``||x^{g}_p||^2``. Three exact routes; :func:`choose_route` takes the cheapest:

- ``pixel``: Gram of pixel vectors ``T = A^T A`` (``HW x HW``), then ``S_pq = sum_k T[i_k(p),
  i_k(q)]`` over kernel offsets ``k``; no im2col copy (groups = 1). For a 1x1, stride-1 conv
  this is the fast path ``S = A^T A``.
- ``patch``: im2col ``X``, ``S = X X^T`` (groups = 1). Then ``R = D S D^T / P^2``.
- ``vector``: im2col, ``V = D X / P``, ``R = V V^T`` (any groups; best for depthwise).

A channels-last input ``(N, H, W, C_in)`` (a pointwise MatMul layer, a 1x1 stride-1 conv)
is its own patch matrix: ``X`` is a reshape, without a copy, and ``pixel`` is ``patch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace, device as _device


@dataclass(frozen=True)
class Geometry:
    """Shapes of one conv: input ``(C_in, H, W)``, output ``(C_out, Ho, Wo)``, kernel, groups.

    index: ``(P, kh*kw)`` int array; entry ``[p, k]`` is the flat input pixel that kernel
    offset ``k`` of output position ``p`` reads, or ``H*W`` (a zero sentinel) in padding.
    channels_last: the input is ``(N, H, W, C_in)`` (only for 1x1, stride 1, no padding).
    """

    c_in: int
    h: int
    w: int
    c_out: int
    ho: int
    wo: int
    kh: int
    kw: int
    groups: int
    index: np.ndarray
    channels_last: bool = False

    @property
    def positions(self) -> int:
        return self.ho * self.wo

    @property
    def d(self) -> int:
        return self.c_in // self.groups * self.kh * self.kw


def resolve_pads(size: tuple[int, int], out: tuple[int, int], kernel: tuple[int, int],
                 strides, dilations, pads, auto_pad: str) -> tuple[int, int, int, int]:
    """Explicit ``(top, left, bottom, right)`` pads, resolving ONNX ``auto_pad``."""
    if auto_pad in ("NOTSET", "", None):
        return tuple(int(p) for p in pads)
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    begin, end = [], []
    for n, o, k, s, d in zip(size, out, kernel, strides, dilations):
        total = max((o - 1) * s + d * (k - 1) + 1 - n, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return (begin[0], begin[1], end[0], end[1])


def geometry(c_in: int, h: int, w: int, kernel_shape: tuple[int, ...], groups: int,
             out_hw: tuple[int, int], strides, dilations, pads, auto_pad="NOTSET",
             channels_last: bool = False) -> Geometry:
    """Build the patch index of a conv; checks that the output size matches ONNX's rule.
    ``channels_last``: the input is NHWC (a pointwise layer: 1x1, stride 1, no padding)."""
    c_out, cg, kh, kw = kernel_shape
    if cg * groups != c_in:
        raise ValueError(f"conv input has {c_in} channels, kernel expects {cg * groups}")
    pt, pl, pb, pr = resolve_pads((h, w), out_hw, (kh, kw), strides, dilations, pads, auto_pad)
    (sh, sw), (dh, dw) = strides, dilations
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if (ho, wo) != tuple(out_hw):
        raise ValueError(f"conv output {tuple(out_hw)} does not match the geometry ({ho}, {wo})")
    rows = np.arange(ho)[:, None, None, None] * sh - pt + np.arange(kh)[None, None, :, None] * dh
    cols = np.arange(wo)[None, :, None, None] * sw - pl + np.arange(kw)[None, None, None, :] * dw
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    index = np.where(inside, rows * w + cols, h * w).reshape(ho * wo, kh * kw)
    if channels_last and (kh * kw > 1 or not np.array_equal(index[:, 0], np.arange(h * w))):
        raise ValueError("a channels-last input needs a 1x1, stride-1 conv without padding")
    return Geometry(c_in, h, w, c_out, ho, wo, kh, kw, groups, index.astype(np.int64),
                    channels_last)


def route_costs(g: Geometry, full: bool) -> dict[str, float]:
    """Approximate multiply-adds per sample of each route (``full``: the whole R)."""
    p, hw, d, c = g.positions, g.h * g.w, g.d, g.c_out
    r_cost = p * p * c + (p * c * c if full else p * c)
    costs = {"vector": p * d * g.groups + c * p * d + (c * c * d if full else c * d)}
    if g.groups == 1:
        costs["pixel"] = hw * hw * g.c_in + g.kh * g.kw * p * p + r_cost
        costs["patch"] = p * d + p * p * d + r_cost
    return costs


def choose_route(g: Geometry, full: bool) -> str:
    costs = route_costs(g, full)
    return min(costs, key=costs.get)


def _im2col(xp, a, g: Geometry):
    """Patches ``(N, G, P, d)`` with d ordered as the kernel's ``(C_in/G, kh, kw)``."""
    n = a.shape[0]
    if g.channels_last:
        return xp.reshape(a, (n, 1, g.h * g.w, g.c_in))
    flat = xp.reshape(a, (n, g.c_in, g.h * g.w))
    flat = xp.concat([flat, xp.zeros((n, g.c_in, 1), dtype=a.dtype, device=_device(a))], axis=2)
    idx = xp.asarray(g.index.reshape(-1), device=_device(a))
    x = xp.take(flat, idx, axis=2)  # (N, C_in, P*K)
    k = g.kh * g.kw
    x = xp.reshape(x, (n, g.groups, g.c_in // g.groups, g.positions, k))
    x = xp.permute_dims(x, (0, 1, 3, 2, 4))
    return xp.reshape(x, (n, g.groups, g.positions, g.d))


def _pixel_gram(xp, a, g: Geometry):
    """``S = X X^T`` ``(N, P, P)`` from the pixel Gram, without im2col."""
    n = a.shape[0]
    hw = g.h * g.w
    flat = xp.reshape(a, (n, g.c_in, hw))
    t = xp.matmul(xp.permute_dims(flat, (0, 2, 1)), flat)  # (N, HW, HW)
    zc = xp.zeros((n, hw, 1), dtype=a.dtype, device=_device(a))
    t = xp.concat([t, zc], axis=2)
    t = xp.concat([t, xp.zeros((n, 1, hw + 1), dtype=a.dtype, device=_device(a))], axis=1)
    if g.kh * g.kw == 1 and np.array_equal(g.index[:, 0], np.arange(hw)):
        return t[:, :hw, :hw]
    s = None
    for k in range(g.kh * g.kw):
        idx = xp.asarray(g.index[:, k], device=_device(a))
        part = xp.take(xp.take(t, idx, axis=1), idx, axis=2)
        s = part if s is None else s + part
    return s


def filter_factors(a, d1, g: Geometry, route: str | None = None):
    """Thin factors of ``R`` and the squared patch norms for a batch.

    a: ``(N, C_in, H, W)`` conv input (``(N, H, W, C_in)`` if ``g.channels_last``);
    d1: ``(N, C_out, P)`` = ``phi'``.
    Returns ``(L, Q, sq)`` with ``R = L Q^T`` ``(N, C_out, C_out)`` (never formed here; its
    diagonal is ``sum(L * Q, axis=2)``), L and Q ``(N, C_out, k)`` with ``k = P`` (pixel,
    patch: ``L = D S / P^2``, ``Q = D``) or ``k = d`` (vector: ``L = Q = V``); sq is
    ``(N, C_out, P)``-broadcastable ``||x^{g(j)}_p||^2``, shape ``(N, 1, P)`` for groups = 1
    and ``(N, C_out, P)`` otherwise.
    """
    xp = array_namespace(a, d1)
    route = route or choose_route(g, True)
    p = g.positions
    if route in ("pixel", "patch"):
        if g.groups != 1:
            raise ValueError(f"route {route!r} needs groups = 1")
        if route == "pixel" and not g.channels_last:
            s = _pixel_gram(xp, a, g)
        else:
            x = _im2col(xp, a, g)[:, 0]
            s = xp.matmul(x, xp.permute_dims(x, (0, 2, 1)))
        sq = xp.reshape(xp.linalg.diagonal(s), (a.shape[0], 1, p))
        return xp.matmul(d1, s) / (p * p), d1, sq
    if route != "vector":
        raise ValueError(f"unknown route {route!r}")
    x = _im2col(xp, a, g)  # (N, G, P, d)
    n, cg = a.shape[0], g.c_out // g.groups
    dg = xp.reshape(d1, (n, g.groups, cg, p))
    v = xp.reshape(xp.matmul(dg, x), (n, g.c_out, g.d)) / p
    sq = xp.sum(x * x, axis=3)  # (N, G, P)
    sq = xp.reshape(xp.broadcast_to(sq[:, :, None, :], (n, g.groups, cg, p)), (n, g.c_out, p))
    return v, v, sq
