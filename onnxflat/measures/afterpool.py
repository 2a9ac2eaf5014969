"""The head after the pooling as math: logits, the loss gradient gamma and curvature Ahat
w.r.t. the pooled features g, for any :class:`~onnxflat.graph.head.AfterPool` (math note,
section 6).

Per sample, with ``J_k = dv_k/dg`` (forward mode; None while it is the identity, shared by
all samples until the first non-linear op), adjoints ``beta_k = dl/dv_k`` (reverse mode) and
``A_f = diag(p) - p p^T``:

    gamma = beta_0
    Ahat  = J^T A_f J + sum_pointwise J_in^T diag(beta_out s'') J_in
                      + sum_layernorm J_in^T H_ln(beta_out) J_in

given as factors ``Ahat = X Y^T + diag(d)``: the PSD part ``Zt Zt^T`` with
``Zt = (J - 1 q^T)^T diag(sqrt p)``, ``q = J^T p`` (centred: no cancellation when p is
peaked), and each curvature term as a thin pair. With ``c = P(a * beta)``,
``xhat = P x / sigma``, ``m = c . xhat``, ``P = I - 1 1^T / w`` the LayerNorm's contracted
Hessian is ``(1 / (w sigma^2)) [-(c xhat^T + xhat c^T) - m P + 3 m xhat xhat^T / w]``.
Array-API code, float64; nothing here knows ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from array_api_compat import device as _device

from ..graph.head import AfterPool, Dense, LayerNorm, Pointwise
from . import jets


@dataclass
class Forward:
    """Values ``(N, w_k)`` of every op, and what the derivatives need: per Pointwise op its
    ``s'`` and ``s''`` (None when 0), per LayerNorm its ``xhat`` and ``sigma`` ``(N, 1)``."""

    values: list
    slopes: dict = field(default_factory=dict)
    norms: dict = field(default_factory=dict)
    _consts: dict = field(default_factory=dict)

    def const(self, xp, a, dtype):
        """The weight ``a`` (NumPy) on the values' device in ``dtype``, converted once."""
        key = (id(a), dtype)
        if key not in self._consts:
            self._consts[key] = xp.asarray(a, dtype=dtype, device=_device(self.values[0]))
        return self._consts[key]

    @property
    def logits(self):
        return self.values[-1]


def forward(after: AfterPool, g, xp) -> Forward:
    """Values of the head for pooled features g ``(N, F)`` float64."""
    fwd = Forward([g])
    for k, op in enumerate(after.ops, 1):
        if isinstance(op, Dense):
            x = fwd.values[op.input]
            w, c = (fwd.const(xp, t, xp.float64) for t in (op.weight, op.bias))
            v = (x * w if op.weight.ndim == 1 else xp.matmul(x, w.T)) + c
        elif isinstance(op, Pointwise):
            x = fwd.values[op.input]
            env = {op.source: jets.Jet(x, xp.ones_like(x))}
            for step in op.steps:
                args = [env[o.name] if o.kind == "dep" else fwd.const(xp, o.value, xp.float64)
                        for o in step.inputs]
                env[step.output] = jets.FUNCTIONS[step.fn](*args, **step.params)
            out = env[op.output]
            v = out.v
            fwd.slopes[k] = (out.d1, out.d2)
        elif isinstance(op, LayerNorm):
            x = fwd.values[op.input]
            xc = x - xp.mean(x, axis=1, keepdims=True)
            sigma = xp.sqrt(xp.mean(xc * xc, axis=1, keepdims=True) + op.epsilon)
            xhat = xc / sigma
            fwd.norms[k] = (xhat, sigma)
            v = xhat * fwd.const(xp, op.scale, xp.float64) + fwd.const(xp, op.bias, xp.float64)
        else:
            v = fwd.values[op.inputs[0]] + fwd.values[op.inputs[1]]
        fwd.values.append(v)
    return fwd


def backward(after: AfterPool, fwd: Forward, delta, xp) -> list:
    """Adjoints ``beta_k = dl/dv_k`` ``(N, w_k)`` from ``delta = dl/dlogits``."""
    betas = [None] * (len(after.ops) + 1)
    betas[-1] = delta

    def add(i, b):
        betas[i] = b if betas[i] is None else betas[i] + b

    for k in range(len(after.ops), 0, -1):
        op, b = after.ops[k - 1], betas[k]
        if b is None:
            continue
        if isinstance(op, Dense):
            w = fwd.const(xp, op.weight, xp.float64)
            add(op.input, b * w if op.weight.ndim == 1 else xp.matmul(b, w))
        elif isinstance(op, Pointwise):
            add(op.input, b * fwd.slopes[k][0])
        elif isinstance(op, LayerNorm):
            xhat, sigma = fwd.norms[k]
            c = _centre(xp, b * fwd.const(xp, op.scale, xp.float64))
            add(op.input, (c - xhat * xp.mean(c * xhat, axis=1, keepdims=True)) / sigma)
        else:
            add(op.inputs[0], b)
            add(op.inputs[1], b)
    return betas


def _centre(xp, a):
    return a - xp.mean(a, axis=1, keepdims=True)


def _tr(xp, j):
    """``J^T`` of a shared ``(w, F)`` or per-sample ``(n, w, F)`` Jacobian."""
    return j.T if j.ndim == 2 else xp.permute_dims(j, (0, 2, 1))


@dataclass
class NormJacobian:
    """The Jacobian of a LayerNorm of g itself, kept factored: ``J = diag(d) (I - (1 1^T +
    xhat xhat^T) / F)`` per sample, d ``= scale / sigma`` and xhat ``(n, F)``; a Dense after
    it costs ``O(out F)`` a sample instead of a ``(out, F) x (F, F)`` product."""

    d: object
    xhat: object

    def dense(self, xp):
        """``(n, F, F)``."""
        f = self.xhat.shape[1]
        eye = xp.eye(f, dtype=self.d.dtype, device=_device(self.d))
        return self.d[:, :, None] * (eye - (1.0 + self.xhat[:, :, None] * self.xhat[:, None, :])
                                     / f)

    def left(self, w, xp):
        """``W J`` ``(n, out, F)`` for W ``(out, F)``."""
        a = w[None, :, :] * self.d[:, None, :]
        u = xp.sum(a, axis=2)
        v = xp.sum(a * self.xhat[:, None, :], axis=2)
        return a - (u[:, :, None] + v[:, :, None] * self.xhat[:, None, :]) / self.xhat.shape[1]


def _dense(j, xp):
    return j.dense(xp) if isinstance(j, NormJacobian) else j


def jacobians(after: AfterPool, fwd: Forward, sl: slice, xp, dtype) -> list:
    """``J_k = dv_k/dg`` for samples ``sl`` in ``dtype``: None (identity), ``(w, F)`` shared,
    ``(n, w, F)``, or a :class:`NormJacobian`."""
    g = fwd.values[0][sl]
    n, f = g.shape
    eye = None

    def cast(t):
        return xp.astype(t, dtype, copy=False)

    def dense(j):
        nonlocal eye
        if isinstance(j, NormJacobian):
            return j.dense(xp)
        if j is None:
            eye = xp.eye(f, dtype=dtype, device=_device(g)) if eye is None else eye
            return eye
        return j

    js = [None]
    for k, op in enumerate(after.ops, 1):
        if isinstance(op, Dense):
            j = js[op.input]
            w = fwd.const(xp, op.weight, dtype)
            if isinstance(j, NormJacobian):
                js.append(NormJacobian(w[None, :] * j.d, j.xhat) if op.weight.ndim == 1
                          else j.left(w, xp))
            elif op.weight.ndim == 1:
                js.append(w[:, None] * dense(j))
            else:
                js.append(w if j is None else xp.matmul(w, j))
        elif isinstance(op, Pointwise):
            s1 = cast(fwd.slopes[k][0][sl])
            js.append(s1[:, :, None] * dense(js[op.input]))
        elif isinstance(op, LayerNorm):
            xhat, sigma = (cast(t[sl]) for t in fwd.norms[k])
            scale = fwd.const(xp, op.scale, dtype)
            if js[op.input] is None:
                js.append(NormJacobian(scale[None, :] / sigma, xhat))
                continue
            j = dense(js[op.input])
            jm = j - xp.mean(j, axis=-2, keepdims=True)
            proj = xp.matmul(xhat[:, None, :], j) / xhat.shape[1]  # (n, 1, F)
            js.append(scale[None, :, None] / sigma[:, :, None] * (jm - xhat[:, :, None] * proj))
        else:
            a, b = (dense(js[i]) for i in op.inputs)
            js.append(a + b)
    return js


@dataclass
class Factors:
    """``Ahat = sum_i X_i Y_i^T + diag(d)`` of a chunk of n samples: X_i, Y_i ``(n, F, k_i)``
    (the PSD part, then one pair per curvature term), d ``(n, F)`` or None."""

    xs: list
    ys: list
    d: object = None

    def diagonal(self, xp):
        """``diag(Ahat)`` ``(n, F)``, without joining the factors."""
        out = sum(xp.sum(x * y, axis=2) for x, y in zip(self.xs, self.ys))
        return out if self.d is None else out + self.d

    def joined(self, xp) -> tuple:
        """X, Y ``(n, F, k)`` with all terms side by side (k: :func:`width`)."""
        return tuple(xp.concat(t, axis=2) if len(t) > 1 else t[0] for t in (self.xs, self.ys))


def factors(after: AfterPool, fwd: Forward, betas: list, p, sl: slice, xp,
            dtype=None) -> Factors:
    """``Ahat = X Y^T + diag(d)`` for samples ``sl``, in ``dtype`` (default float64: the
    per-sample Jacobians are the head's costliest products, C x H x F for an MLP)."""
    dtype = xp.float64 if dtype is None else dtype

    def cast(t):
        return xp.astype(t, dtype, copy=False)

    js = jacobians(after, fwd, sl, xp, dtype)
    n, f = fwd.values[0][sl].shape
    ps = cast(p[sl])
    xs, ys, d = [], [], None

    def term(j, left, right):
        """Add ``J^T left right^T J`` (left, right ``(n, w, r)``)."""
        j = _dense(j, xp)
        if j is None:
            xs.append(left)
            ys.append(right)
        else:
            jt = _tr(xp, j)
            xs.append(xp.matmul(jt, left))
            ys.append(xp.matmul(jt, right))

    def diag(j, c):
        """Add ``J^T diag(c) J`` (c ``(n, w)``)."""
        nonlocal d
        j = _dense(j, xp)
        if j is None:
            d = c if d is None else d + c
        else:
            jt = _tr(xp, j)
            xs.append(jt * c[:, None, :])
            ys.append(xp.broadcast_to(jt, (n,) + tuple(jt.shape[-2:])))

    jf = _dense(js[-1], xp)
    if jf is None:  # no classifier: logits = g
        zt = xp.eye(f, dtype=dtype, device=_device(ps))[None, :, :] - ps[:, :, None]
    else:
        jft = _tr(xp, jf)  # (F, C) or (n, F, C)
        q = xp.matmul(jft, ps[:, :, None])  # (n, F, 1)
        zt = jft - q
    zt = zt * xp.sqrt(ps)[:, None, :]
    xs.append(zt)
    ys.append(zt)
    for k, op in enumerate(after.ops, 1):
        b = betas[k]
        if b is None:
            continue
        b = cast(b[sl])
        if isinstance(op, Pointwise) and fwd.slopes[k][1] is not None:
            diag(js[op.input], b * cast(fwd.slopes[k][1][sl]))
        elif isinstance(op, LayerNorm):
            xhat, sigma = (cast(t[sl]) for t in fwd.norms[k])
            w = xhat.shape[1]
            c = _centre(xp, b * fwd.const(xp, op.scale, dtype))
            m = xp.sum(c * xhat, axis=1, keepdims=True)  # (n, 1)
            kf = 1.0 / (w * sigma * sigma)  # (n, 1)
            ones = xp.ones_like(xhat)
            left = xp.stack([-kf * c, -kf * xhat, kf * m / w * ones, 3.0 * kf * m / w * xhat],
                            axis=2)
            right = xp.stack([xhat, c, ones, xhat], axis=2)
            term(js[op.input], left, right)
            diag(js[op.input], xp.broadcast_to(-kf * m, (n, w)))
    return Factors(xs, ys, d)


def width(after: AfterPool) -> int:
    """Columns of the factors X, Y (the classes plus every curvature term's)."""
    k = after.num_classes
    widths = after.widths
    for i, op in enumerate(after.ops, 1):
        if isinstance(op, Pointwise):
            k += widths[i]
        elif isinstance(op, LayerNorm):
            k += 4 + widths[i]
    return k
