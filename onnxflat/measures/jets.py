"""Second-order forward derivatives of the channel-wise path, ``phi'`` and ``phi''``.

A :class:`Jet` carries, for every element of a tensor on the path from the conv output
``z`` to the pooling input ``a``, its value and its first and second derivatives with
respect to the conv output at the same position (the path is elementwise, so these are
the diagonal ``da_jp/dz_jp`` and ``d2a_jp/dz_jp^2``). Composition follows the chain and
product rules, so multi-node activations (SiLU as Sigmoid*Mul, Erf-GELU, HardSigmoid*Mul)
need no special pattern. Works on any array-API namespace (NumPy, CuPy, torch).

Convention at kinks: the one-sided derivative the frameworks use (ReLU'(0) = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace


@dataclass
class Jet:
    """value, d1 = d value / dz, d2 = d2 value / dz2 (None means identically zero)."""

    v: Any
    d1: Any
    d2: Any = None


def _xp(*arrays):
    return array_namespace(*[a for a in arrays if a is not None and not isinstance(a, float)])


def _apply(u: Jet, f, f1, f2=None) -> Jet:
    """f(u) from f(v), f'(v) and f''(v) (f2 None: f'' = 0)."""
    d1 = f1 * u.d1
    d2 = None if f2 is None else f2 * u.d1 * u.d1
    if u.d2 is not None:
        d2 = f1 * u.d2 if d2 is None else d2 + f1 * u.d2
    return Jet(f, d1, d2)


def _add2(a, b):
    if a is None:
        return b
    return a if b is None else a + b


def add(u, w):
    if not isinstance(w, Jet):
        return Jet(u.v + w, u.d1, u.d2)
    if not isinstance(u, Jet):
        return add(w, u)
    return Jet(u.v + w.v, u.d1 + w.d1, _add2(u.d2, w.d2))


def neg(u: Jet) -> Jet:
    return Jet(-u.v, -u.d1, None if u.d2 is None else -u.d2)


def sub(u, w):
    if not isinstance(u, Jet):
        return add(neg(w), u)
    return add(u, neg(w) if isinstance(w, Jet) else -w)


def mul(u, w):
    if not isinstance(u, Jet):
        u, w = w, u
    if not isinstance(w, Jet):
        return Jet(u.v * w, u.d1 * w, None if u.d2 is None else u.d2 * w)
    d2 = 2 * u.d1 * w.d1
    d2 = _add2(d2, None if u.d2 is None else u.d2 * w.v)
    d2 = _add2(d2, None if w.d2 is None else u.v * w.d2)
    return Jet(u.v * w.v, u.d1 * w.v + u.v * w.d1, d2)


def reciprocal(u: Jet) -> Jet:
    r = 1.0 / u.v
    return _apply(u, r, -r * r, 2.0 * r * r * r)


def div(u, w):
    if not isinstance(w, Jet):
        return mul(u, 1.0 / w)
    return mul(u, reciprocal(w))


def _select(xp, cond, u, w):
    """Elementwise choice between two jets (or a jet and a constant)."""
    def pick(a, b):
        if a is None and b is None:
            return None
        a = 0.0 * cond if a is None else a
        b = 0.0 * cond if b is None else b
        return xp.where(cond, a, b)
    wv = w.v if isinstance(w, Jet) else w
    w1 = w.d1 if isinstance(w, Jet) else None
    w2 = w.d2 if isinstance(w, Jet) else None
    return Jet(xp.where(cond, u.v, wv), pick(u.d1, w1), pick(u.d2, w2))


def maximum(u, w):
    if not isinstance(u, Jet):
        u, w = w, u
    xp = _xp(u.v)
    wv = w.v if isinstance(w, Jet) else w
    return _select(xp, u.v > wv, u, w)


def minimum(u, w):
    if not isinstance(u, Jet):
        u, w = w, u
    xp = _xp(u.v)
    wv = w.v if isinstance(w, Jet) else w
    return _select(xp, u.v < wv, u, w)


def relu(u: Jet) -> Jet:
    xp = _xp(u.v)
    pos = xp.astype(u.v > 0, u.v.dtype)
    return Jet(u.v * pos, u.d1 * pos, None if u.d2 is None else u.d2 * pos)


def leaky_relu(u: Jet, alpha: float = 0.01) -> Jet:
    xp = _xp(u.v)
    slope = xp.where(u.v > 0, 1.0, alpha)
    return Jet(u.v * slope, u.d1 * slope, None if u.d2 is None else u.d2 * slope)


def prelu(u: Jet, slope) -> Jet:
    xp = _xp(u.v)
    s = xp.where(u.v > 0, xp.ones_like(u.v), slope * xp.ones_like(u.v))
    return Jet(u.v * s, u.d1 * s, None if u.d2 is None else u.d2 * s)


def clip(u: Jet, lo: float = -math.inf, hi: float = math.inf) -> Jet:
    xp = _xp(u.v)
    inside = xp.astype((u.v > lo) & (u.v < hi), u.v.dtype)
    return Jet(xp.clip(u.v, lo, hi), u.d1 * inside, None if u.d2 is None else u.d2 * inside)


def identity(u: Jet) -> Jet:
    return u


def transpose(u: Jet, perm: tuple[int, ...]) -> Jet:
    xp = _xp(u.v)
    return Jet(*(None if t is None else xp.permute_dims(t, perm) for t in (u.v, u.d1, u.d2)))


def unsqueeze(u: Jet, axes: tuple[int, ...]) -> Jet:
    """Unit axes inserted at ``axes`` (positions in the output, ascending)."""
    xp = _xp(u.v)

    def grow(t):
        for ax in axes:
            t = xp.expand_dims(t, axis=ax)
        return t
    return Jet(*(None if t is None else grow(t) for t in (u.v, u.d1, u.d2)))


def squeeze(u: Jet, axes: tuple[int, ...]) -> Jet:
    """Unit axes ``axes`` removed."""
    xp = _xp(u.v)
    return Jet(*(None if t is None else xp.squeeze(t, axis=tuple(axes))
                 for t in (u.v, u.d1, u.d2)))
def take(u: Jet, index: tuple[int, ...], axis: int) -> Jet:
    """Channels ``index`` of ``u`` along ``axis`` (a channel Slice or Split)."""
    xp = _xp(u.v)
    idx = xp.asarray(index, dtype=xp.int64, device=getattr(u.v, "device", None))
    return Jet(*(None if t is None else xp.take(t, idx, axis=axis) for t in (u.v, u.d1, u.d2)))


def concat(*us: Jet, axis: int) -> Jet:
    """Jets joined along ``axis`` (a channel Concat of several conv-dependent tensors)."""
    xp = _xp(us[0].v)
    d2 = None if all(u.d2 is None for u in us) else xp.concat(
        [xp.zeros_like(u.v) if u.d2 is None else u.d2 for u in us], axis=axis)
    return Jet(xp.concat([u.v for u in us], axis=axis), xp.concat([u.d1 for u in us], axis=axis),
               d2)


def affine(u: Jet, scale, shift) -> Jet:
    return add(mul(u, scale), shift)


def sigmoid(u: Jet) -> Jet:
    xp = _xp(u.v)
    s = 1.0 / (1.0 + xp.exp(-u.v))
    s1 = s * (1.0 - s)
    return _apply(u, s, s1, s1 * (1.0 - 2.0 * s))


def tanh(u: Jet) -> Jet:
    xp = _xp(u.v)
    t = xp.tanh(u.v)
    t1 = 1.0 - t * t
    return _apply(u, t, t1, -2.0 * t * t1)


def exp(u: Jet) -> Jet:
    e = _xp(u.v).exp(u.v)
    return _apply(u, e, e, e)


def erf(u: Jet) -> Jet:
    xp = _xp(u.v)
    g = (2.0 / math.sqrt(math.pi)) * xp.exp(-u.v * u.v)
    return _apply(u, _erf(xp, u.v), g, -2.0 * u.v * g)


def _erf(xp, v):
    """erf in the namespace of ``v`` (the array API standard has none)."""
    mod = xp.__name__
    if "cupy" in mod:
        import cupyx.scipy.special as sp
        return sp.erf(v)
    if "torch" in mod:
        import torch
        return torch.special.erf(v)
    from scipy.special import erf as sp_erf
    return sp_erf(v)


def softplus(u: Jet) -> Jet:
    xp = _xp(u.v)
    s = 1.0 / (1.0 + xp.exp(-u.v))
    return _apply(u, xp.logaddexp(xp.zeros_like(u.v), u.v), s, s * (1.0 - s))


def elu(u: Jet, alpha: float = 1.0) -> Jet:
    xp = _xp(u.v)
    e = alpha * xp.exp(xp.minimum(u.v, 0.0))
    pos = u.v > 0
    return _apply(u, xp.where(pos, u.v, e - alpha), xp.where(pos, 1.0, e), xp.where(pos, 0.0, e))


def selu(u: Jet, alpha: float, gamma: float) -> Jet:
    return mul(elu(u, alpha), gamma)


def hard_sigmoid(u: Jet, alpha: float = 0.2, beta: float = 0.5) -> Jet:
    return clip(add(mul(u, alpha), beta), 0.0, 1.0)


def hard_swish(u: Jet) -> Jet:
    return mul(u, hard_sigmoid(u, 1.0 / 6.0, 0.5))


def swish(u: Jet, alpha: float = 1.0) -> Jet:
    return mul(u, sigmoid(mul(u, alpha)))


def mish(u: Jet) -> Jet:
    return mul(u, tanh(softplus(u)))


def power(u: Jet, k) -> Jet:
    k = float(k)
    xp = _xp(u.v)
    if k == 2.0:
        return mul(u, u)
    if k == 3.0:
        return mul(mul(u, u), u)
    return _apply(u, xp.pow(u.v, k), k * xp.pow(u.v, k - 1.0), k * (k - 1.0) * xp.pow(u.v, k - 2.0))


def gelu(u: Jet, approximate: str = "none") -> Jet:
    if approximate == "tanh":
        c = math.sqrt(2.0 / math.pi)
        inner = mul(add(u, mul(power(u, 3), 0.044715)), c)
        return mul(mul(u, 0.5), add(tanh(inner), 1.0))
    return mul(mul(u, 0.5), add(erf(mul(u, 1.0 / math.sqrt(2.0))), 1.0))


FUNCTIONS = {
    "identity": identity, "relu": relu, "leaky_relu": leaky_relu, "prelu": prelu, "clip": clip,
    "sigmoid": sigmoid, "tanh": tanh, "erf": erf, "exp": exp, "softplus": softplus, "elu": elu,
    "selu": selu, "hard_sigmoid": hard_sigmoid, "hard_swish": hard_swish, "swish": swish,
    "mish": mish, "gelu": gelu, "neg": neg, "reciprocal": reciprocal, "add": add, "sub": sub,
    "mul": mul, "div": div, "max": maximum, "min": minimum, "pow": power,
    "affine": affine, "transpose": transpose, "unsqueeze": unsqueeze, "squeeze": squeeze,
    "take": take, "concat": concat,
}
