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

    @property
    def logits(self):
        return self.values[-1]


def _const(xp, a, dev):
    return xp.asarray(a, dtype=xp.float64, device=dev)


def forward(after: AfterPool, g, xp) -> Forward:
    """Values of the head for pooled features g ``(N, F)`` float64."""
    dev = _device(g)
    fwd = Forward([g])
    for k, op in enumerate(after.ops, 1):
        if isinstance(op, Dense):
            x = fwd.values[op.input]
            w = _const(xp, op.weight, dev)
            v = (x * w if op.weight.ndim == 1 else xp.matmul(x, w.T)) + _const(xp, op.bias, dev)
        elif isinstance(op, Pointwise):
            x = fwd.values[op.input]
            env = {op.source: jets.Jet(x, xp.ones_like(x))}
            for step in op.steps:
                args = [env[o.name] if o.kind == "dep" else _const(xp, o.value, dev)
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
            v = xhat * _const(xp, op.scale, dev) + _const(xp, op.bias, dev)
        else:
            v = fwd.values[op.inputs[0]] + fwd.values[op.inputs[1]]
        fwd.values.append(v)
    return fwd


def backward(after: AfterPool, fwd: Forward, delta, xp) -> list:
    """Adjoints ``beta_k = dl/dv_k`` ``(N, w_k)`` from ``delta = dl/dlogits``."""
    dev = _device(delta)
    betas = [None] * (len(after.ops) + 1)
    betas[-1] = delta

    def add(i, b):
        betas[i] = b if betas[i] is None else betas[i] + b

    for k in range(len(after.ops), 0, -1):
        op, b = after.ops[k - 1], betas[k]
        if b is None:
            continue
        if isinstance(op, Dense):
            w = _const(xp, op.weight, dev)
            add(op.input, b * w if op.weight.ndim == 1 else xp.matmul(b, w))
        elif isinstance(op, Pointwise):
            add(op.input, b * fwd.slopes[k][0])
        elif isinstance(op, LayerNorm):
            xhat, sigma = fwd.norms[k]
            c = _centre(xp, b * _const(xp, op.scale, dev))
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


def jacobians(after: AfterPool, fwd: Forward, sl: slice, xp) -> list:
    """``J_k = dv_k/dg`` for samples ``sl``: None (identity), ``(w, F)`` shared or
    ``(n, w, F)``."""
    g = fwd.values[0][sl]
    dev = _device(g)
    n, f = g.shape
    eye = None

    def dense(j):
        nonlocal eye
        if j is None:
            eye = xp.eye(f, dtype=xp.float64, device=dev) if eye is None else eye
            return eye
        return j

    js = [None]
    for k, op in enumerate(after.ops, 1):
        if isinstance(op, Dense):
            j = js[op.input]
            w = _const(xp, op.weight, dev)
            if op.weight.ndim == 1:
                js.append(w[:, None] * dense(j))
            else:
                js.append(w if j is None else xp.matmul(w, j))
        elif isinstance(op, Pointwise):
            s1 = fwd.slopes[k][0][sl]
            js.append(s1[:, :, None] * dense(js[op.input]))
        elif isinstance(op, LayerNorm):
            xhat, sigma = (t[sl] for t in fwd.norms[k])
            j = dense(js[op.input])
            jm = j - xp.mean(j, axis=-2, keepdims=True)
            proj = xp.matmul(xhat[:, None, :], j) / xhat.shape[1]  # (n, 1, F)
            scale = _const(xp, op.scale, dev)[None, :, None] / sigma[:, :, None]
            js.append(scale * (jm - xhat[:, :, None] * proj))
        else:
            a, b = js[op.inputs[0]], js[op.inputs[1]]
            js.append(dense(a) + dense(b))
    return js


def factors(after: AfterPool, fwd: Forward, betas: list, p, sl: slice, xp):
    """``Ahat = X Y^T + diag(d)`` for samples ``sl``: X, Y ``(n, F, k)``, d ``(n, F)`` or
    None; float64."""
    js = jacobians(after, fwd, sl, xp)
    n, f = fwd.values[0][sl].shape
    ps = p[sl]
    xs, ys, d = [], [], None

    def term(j, left, right):
        """Add ``J^T left right^T J`` (left, right ``(n, w, r)``)."""
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
        if j is None:
            d = c if d is None else d + c
        else:
            jt = _tr(xp, j)
            xs.append(jt * c[:, None, :])
            ys.append(xp.broadcast_to(jt, (n,) + tuple(jt.shape[-2:])))

    jf = js[-1]
    if jf is None:  # no classifier: logits = g
        zt = xp.eye(f, dtype=xp.float64, device=_device(ps))[None, :, :] - ps[:, :, None]
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
        if isinstance(op, Pointwise) and fwd.slopes[k][1] is not None:
            diag(js[op.input], b[sl] * fwd.slopes[k][1][sl])
        elif isinstance(op, LayerNorm):
            xhat, sigma = (t[sl] for t in fwd.norms[k])
            w = xhat.shape[1]
            c = _centre(xp, b[sl] * _const(xp, op.scale, _device(xhat)))
            m = xp.sum(c * xhat, axis=1, keepdims=True)  # (n, 1)
            kf = 1.0 / (w * sigma * sigma)  # (n, 1)
            ones = xp.ones_like(xhat)
            left = xp.stack([-kf * c, -kf * xhat, kf * m / w * ones, 3.0 * kf * m / w * xhat],
                            axis=2)
            right = xp.stack([xhat, c, ones, xhat], axis=2)
            term(js[op.input], left, right)
            diag(js[op.input], xp.broadcast_to(-kf * m, (n, w)))
    x = xp.concat(xs, axis=2) if len(xs) > 1 else xs[0]
    y = xp.concat(ys, axis=2) if len(ys) > 1 else ys[0]
    return x, y, d


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
