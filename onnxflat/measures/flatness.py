"""Per-batch terms of the closed forms of ``docs/flatness-math.md`` and their accumulation.

For each sample n (math note sections 2-3), with ``p = softmax(f)``, ``delta = p - e_y``,
``gamma = W^T delta``, ``q = W^T p``, ``B = W^T diag(p) W - q q^T``, ``R_jj' = <v_j, v_j'>``,
``e_j = (1/P) sum_p phi''_jp ||x_p||^2`` and ``G = K K^T``:

    trace_conv = sum_j B_jj R_jj + gamma_j e_j
    kappa_conv = sum_jj' G_jj' B_jj' R_jj' + sum_j G_jj gamma_j e_j
    trace_fc   = ||g||^2 (1 - ||p||^2)
    kappa_fc   = ||g||^2 (sum_s (W W^T)_ss p_s - p^T W W^T p)

Everything is array-API code (NumPy, CuPy, torch); nothing here knows ONNX or onnxruntime.
"""

from __future__ import annotations

import contextvars
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace, device as _device, to_device
from threadpoolctl import ThreadpoolController

from ..errors import NumericalError
from ..graph.head import UNIT, Head, Layer
from . import afterpool, jets
from .dense import STRIP_ELEMENTS, kappa_rows
from .patches import Geometry, choose_route, filter_factors, geometry, route_elements
from .result import ClassifierResult, LayerResult, Result
from .samples import SampleSink
from .stats import Moments

# Largest intermediate (elements) of the per-chunk products. Kept well under glibc's 32 MiB
# mmap ceiling, so freed chunks are reused from the heap instead of being page-faulted in
# afresh for every chunk (which costed more than the products themselves).
CHUNK_ELEMENTS = 1 << 22
# Per-chunk intermediates on NumPy (elements): 4 MiB in float32, resident in cache.
CACHE_ELEMENTS = 1 << 18
# Steps whose output is not the shape of their conv-dependent input (axes moved, added or
# dropped; channels taken or joined).
RESHAPING = ("transpose", "unsqueeze", "squeeze", "take", "concat")
# Fewest samples per thread worth a thread of its own.
MIN_PART_SAMPLES = 2


@dataclass(frozen=True)
class Options:
    """kappa: compute the filter-wise kappa (the dense ``C x C_out^2`` part);
    route: force a patch route ('pixel', 'patch', 'vector') instead of the cheapest;
    float64: run the large products in float64 even on float32 activations (by default they
    run in the activations' dtype, with float64 reductions; tests/test_perf_precision.py
    bounds the difference);
    threads: CPU threads for the NumPy math (default: the cores this process may use)."""

    kappa: bool = True
    route: str | None = None
    float64: bool = False
    threads: int | None = None


def available_cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@functools.cache
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()


def blas_threads(limit: int):
    """Context manager: BLAS libraries limited to ``limit`` threads."""
    return _threadpools().limit(limits=limit, user_api="blas")


def _take(tensors: dict, sl: slice, n: int) -> dict:
    """Samples ``sl`` of every tensor with a batch axis of length n (others whole)."""
    return {k: v[sl] if v.ndim and v.shape[0] == n else v for k, v in tensors.items()}


def channelwise_derivatives(layer: Layer, tensors: dict, xp, dtype=None):
    """``phi'`` and ``phi''`` ``(N, C_out, P)`` (``phi''`` None when identically 0), computed
    in ``dtype`` (default float64)."""
    dtype = xp.float64 if dtype is None else dtype
    z = xp.astype(xp.asarray(tensors[layer.conv.output]), dtype, copy=False)
    env = {layer.conv.output: jets.Jet(z, xp.ones_like(z))}
    dev = _device(z)
    for step in layer.steps:
        args = []
        for op in step.inputs:
            if op.kind == "dep":
                args.append(env[op.name])
            elif op.kind == "const":
                args.append(xp.asarray(op.value, dtype=dtype, device=dev))
            else:
                args.append(xp.astype(xp.asarray(tensors[op.name]), dtype, copy=False))
        out = jets.FUNCTIONS[step.fn](*args, **step.params)
        dep_shape = next(tuple(x.v.shape) for x in args if isinstance(x, jets.Jet))
        if step.fn not in RESHAPING and tuple(out.v.shape) != dep_shape:
            raise NumericalError(f"step '{step.node}' broadcasts the conv output "
                                 f"{dep_shape} to {tuple(out.v.shape)}")
        env[step.output] = out
    final = env[layer.steps[-1].output] if layer.steps else env[layer.conv.output]
    units = tuple(i for i, ax in enumerate(layer.layout) if ax == UNIT)
    if units:  # unit axes an Unsqueeze added: dropped, the conv's axes remain
        final = jets.squeeze(final, units)
    layout = [ax for ax in layer.layout if ax != UNIT]
    if layout != sorted(layout):  # back to the conv's order (a squeezed axis has size 1)
        final = jets.transpose(final, tuple(sorted(range(len(layout)), key=layout.__getitem__)))
    if layer.jet_order:  # back to the conv's channel order
        final = jets.take(final, tuple(np.argsort(layer.jet_order).tolist()), axis=1)
    n, c = final.v.shape[0], final.v.shape[1]
    d1 = xp.astype(xp.reshape(final.d1, (n, c, -1)), dtype, copy=False)
    d2 = None if final.d2 is None else xp.astype(xp.reshape(final.d2, (n, c, -1)), dtype,
                                                 copy=False)
    return d1, d2


def _spread(xp, p, top, w_cat):
    """The p-variance of the classifier's columns and ``q = p^T W``, both ``(N, F)``.

    Per feature i: ``sum_s p_s W_si^2 - (p^T W_i)^2`` (the diagonal of
    ``B = W^T diag(p) W - q q^T``; summed over i it is ``sum_s p_s ||w_s||^2 - ||q||^2``).
    Centred at the top class t, so that it is formed from the tail: ``sum_s p_s (W_si -
    W_ti)^2 - u_i^2`` with ``u = (p - e_t)^T W``. ``p`` ``(N, C)``, ``top`` its one-hot
    argmax, ``w_cat = [W, W ** 2]`` ``(C, 2F)`` (one product for both)."""
    f = w_cat.shape[1] // 2
    t = xp.argmax(xp.astype(top, xp.float64), axis=1)
    w_t = xp.take(w_cat[:, :f], t, axis=0)  # (N, F)
    rest = xp.where(top, 0.0, p)  # p - e_t = rest - (sum rest) e_t
    srest = xp.sum(rest, axis=1, keepdims=True)
    both = xp.matmul(rest, w_cat)
    rw, rw2 = both[:, :f], both[:, f:]
    first = rw2 - 2.0 * w_t * rw + srest * w_t * w_t  # sum_s p_s (W_s - W_t)^2
    u = rw - srest * w_t
    p_t = xp.sum(xp.where(top, p, 0.0), axis=1, keepdims=True)
    return first - u * u, rw + p_t * w_t


class FlatnessAccumulator:
    """Accumulates the per-sample terms of all measures of a head over batches.

    ``update(tensors, y)`` takes the fetched tensors of one batch (by name, see
    ``Head.fetches``) and integer labels ``(N,)``; ``merge`` combines accumulators of
    shards; ``result()`` gives the final :class:`Result`. A ``sink`` also receives each
    batch's per-sample terms (opt-in, see :mod:`.samples`).
    """

    def __init__(self, head: Head, options: Options = Options(), sink: SampleSink | None = None):
        self.head = head
        self.options = options
        self.sink = sink
        names = ["loss", "correct"]
        if head.after.classifier is not None:
            names += ["fc.trace", "fc.kappa"]
        for i in range(len(head.layers)):
            names += [f"{i}.trace"] + ([f"{i}.kappa"] if options.kappa else [])
        self.moments = Moments(tuple(names))
        self._geometry: dict[tuple, Geometry] = {}
        self._xp_consts: dict = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def _const(self, xp, key, fn, dev):
        k = (id(xp), key)
        with self._lock:  # computed once, not by every thread of the first batch
            if k not in self._xp_consts:
                self._xp_consts[k] = xp.asarray(fn(), device=dev)
        return self._xp_consts[k]

    def _geom(self, layer: Layer, a_shape, z_shape) -> Geometry:
        """The conv's geometry from its input and output shapes (in ``conv.layout``)."""
        c = layer.conv
        _, c_in, *size = c.nchw(a_shape)
        out = tuple(c.nchw(z_shape)[2:])
        key = (c.node, (c_in, *size), out)
        if key not in self._geometry:
            try:
                self._geometry[key] = geometry(c_in, tuple(size), c.kernel.shape, c.groups, out,
                                               c.strides, c.dilations, c.pads, c.auto_pad,
                                               channels_last=c.layout[1] != 1)
            except ValueError as exc:
                raise NumericalError(f"conv '{c.node}': {exc}") from None
        return self._geometry[key]

    def update(self, tensors: dict, y, index=None) -> None:
        """Add one batch; ``index`` ``(N,)``: the samples' indices for the sink (default:
        their positions in the order the batches are given). With NumPy the samples are
        split across ``options.threads`` threads (BLAS limited to one thread each): NumPy's
        elementwise passes and the strips of the kappa's dense part use one core per call,
        so the split is what uses all cores."""
        g0 = tensors[self.head.pooling.output]
        n = g0.shape[0]
        parts, threads = 1, self.options.threads or available_cores()
        if array_namespace(g0).__name__.endswith("numpy"):
            parts = max(1, min(threads, n // MIN_PART_SAMPLES))
        if parts == 1:
            results = [self._terms(tensors, y)]
        else:
            bounds = [n * i // parts for i in range(parts + 1)]
            slices = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
            ctx = contextvars.copy_context()  # the caller's np.errstate, in every thread
            if self._pool is None:
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix="onnxflat-math")
            with blas_threads(1):
                results = list(self._pool.map(lambda sl: ctx.copy().run(
                    self._terms, _take(tensors, sl, n), y[sl]), slices))
        host = [({k: np.asarray(to_device(v, "cpu")) for k, v in terms.items()},
                 {k: np.asarray(to_device(v, "cpu")) for k, v in vectors.items()})
                for terms, vectors in results]
        bad = sorted({k for terms, _ in host for k, v in terms.items()
                      if not np.all(np.isfinite(v))})
        if bad:
            raise NumericalError(f"non-finite {', '.join(bad)} (the model's activations or "
                                 "logits overflow on this data)")
        if self.sink is not None:
            start = self.moments.n
            self.sink.add(np.arange(start, start + n) if index is None else index, y,
                          {k: np.concatenate([terms[k] for terms, _ in host])
                           for k in host[0][0]})
        for terms, vectors in host:
            self.moments.add(terms, vectors)

    def _terms(self, tensors: dict, y) -> tuple[dict, dict]:
        """Per-sample terms ``(N,)`` and per-filter sums of one batch, in its namespace."""
        head = self.head
        g0 = tensors[head.pooling.output]
        xp = array_namespace(g0)
        dev = _device(g0)
        n = g0.shape[0]
        y = xp.asarray(y, device=dev)
        g = xp.astype(xp.reshape(xp.asarray(g0), (n, -1)), xp.float64)
        after = head.after
        fwd = None
        if after.affine:  # the fast path: one affine map from g to the logits
            w = self._const(xp, "W", lambda: after.compose()[0], dev)
            f = xp.matmul(g, w.T) + self._const(xp, "c", lambda: after.compose()[1], dev)
        else:
            fwd = afterpool.forward(after, g, xp)
            f = fwd.logits
        self._check_logits(xp, f, tensors.get(after.logits))
        # Softmax with its tail (the classes other than the top one, t) kept exact: on a
        # confident sample 1 - p_t, p_y - 1 and the curvatures are O(tail) differences of
        # O(1) numbers, so they are formed from the tail, never by subtraction.
        classes = xp.arange(f.shape[1], device=dev)[None, :]
        top = classes == xp.argmax(f, axis=1)[:, None]
        m = xp.max(f, axis=1, keepdims=True)
        tail = xp.sum(xp.where(top, 0.0, xp.exp(f - m)), axis=1, keepdims=True)
        logp = f - m - xp.log1p(tail)
        p = xp.exp(logp)
        q_rest = -xp.expm1(logp)  # 1 - p_s
        onehot = classes == y[:, None]
        terms = {"loss": -xp.sum(xp.where(onehot, logp, 0.0), axis=1),
                 "correct": xp.astype(xp.argmax(f, axis=1) == y, xp.float64)}
        delta = xp.where(onehot, -q_rest, p)  # p - e_y
        spread = q = head_factors = None
        if fwd is None:
            spread, q = _spread(xp, p, top, self._const(xp, "W|W2", lambda: np.concatenate(
                [after.compose()[0], after.compose()[0] ** 2], axis=1), dev))
            gamma = xp.matmul(delta, w)  # J^T (p - e_y), (N, F)
        else:
            betas = afterpool.backward(after, fwd, delta, xp)
            gamma = betas[0]

            def head_factors(sl, dtype):
                return afterpool.factors(after, fwd, betas, p, sl, xp, dtype)
        if after.classifier is not None:
            terms.update(self._classifier_terms(xp, g, fwd, p, q_rest, top, spread, dev))
        vectors = {}
        for i, layer in enumerate(head.layers):
            t, k, tf, kf = self._layer_terms(xp, i, layer, tensors, p, gamma, spread, q,
                                             head_factors)
            terms[f"{i}.trace"], vectors[f"{i}.trace"] = t, tf
            if self.options.kappa:
                terms[f"{i}.kappa"], vectors[f"{i}.kappa"] = k, kf
        return terms, vectors

    def _classifier_terms(self, xp, g, fwd, p, q_rest, top, spread, dev) -> dict:
        """Petzka's trace and kappa w.r.t. the stored weight W of the classifier layer, with
        its own input h as the features and the affine map M after it (logits =
        M (W h + b) + c): ``||h||^2 tr(M^T A M)`` and ``||h||^2 tr((MW)^T A (MW))``, each a
        sum of column p-variances (:func:`_spread`); M = I is the plain Linear."""
        after = self.head.after
        k = after.classifier
        layer = after.ops[k]
        if fwd is not None:
            h = fwd.values[layer.input]
        elif layer.input == 0:
            h = g
        else:
            pre = self._const(xp, "fcP", lambda: after.compose(0, layer.input)[0], dev)
            h = xp.matmul(g, pre.T) + self._const(
                xp, "fcd", lambda: after.compose(0, layer.input)[1], dev)
        hn2 = xp.sum(h * h, axis=1)
        if k == len(after.ops) - 1:
            if spread is None or layer.input != 0 or k != 0:
                spread, _ = _spread(xp, p, top, self._const(xp, "fcW|W2", lambda: np.concatenate(
                    [layer.weight, layer.weight ** 2], axis=1), dev))
            return {"fc.trace": hn2 * xp.sum(p * q_rest, axis=1),
                    "fc.kappa": hn2 * xp.sum(spread, axis=1)}

        def post():
            m = after.compose(k + 1)[0]
            mw = m @ layer.weight
            return np.concatenate([m, m ** 2, mw, mw ** 2], axis=1)
        both = self._const(xp, "fcM", post, dev)
        c = after.widths[k + 1]
        s_m, _ = _spread(xp, p, top, both[:, :2 * c])
        s_mw, _ = _spread(xp, p, top, both[:, 2 * c:])
        return {"fc.trace": hn2 * xp.sum(s_m, axis=1), "fc.kappa": hn2 * xp.sum(s_mw, axis=1)}

    @staticmethod
    def _check_logits(xp, f, model_logits) -> None:
        """The folded classifier must reproduce the model's own logits (float32 tolerance)."""
        if model_logits is None:
            return
        ref = xp.astype(xp.reshape(xp.asarray(model_logits), f.shape), xp.float64)
        if not bool(xp.all(xp.isfinite(ref))):  # else an infinite scale would accept anything
            raise NumericalError("the model's logits are non-finite (NaN or Inf)")
        err = float(xp.max(xp.abs(f - ref)))
        scale = float(xp.max(xp.abs(ref))) + 1.0
        if not err <= 1e-3 * scale:
            if not np.isfinite(err):
                raise NumericalError("non-finite logits")
            raise NumericalError(f"the folded classifier disagrees with the model's logits "
                                 f"(max error {err:.3g}); the head was not recognised correctly")

    def _layer_terms(self, xp, i: int, layer: Layer, tensors: dict, p, gamma, spread, q,
                     head_factors=None):
        """The layer's per-sample trace and kappa ``(N,)`` and their per-filter sums
        ``(C_out,)``; gamma ``(N, F)`` from :meth:`_terms`. An affine head gives spread, q
        ``(N, F)`` (``B``'s diagonal and ``J^T p``); any other gives ``head_factors(sl, dtype)``,
        :class:`afterpool.Factors` of ``Ahat`` for samples ``sl`` in dtype ``dtype``
        (the pipeline's: float32 unless fed float64 or ``options.float64``)."""
        conv = layer.conv
        a0 = xp.asarray(tensors[conv.input])
        ft = xp.float64 if self.options.float64 or a0.dtype == xp.float64 else xp.float32
        z_shape = tuple(tensors[conv.output].shape)
        geo = self._geom(layer, a0.shape, z_shape)
        dev = _device(a0)
        c_out = conv.out_channels
        cols = self._const(xp, f"cols{i}", lambda: layer.feature_index, dev)
        every = np.array_equal(layer.feature_index, np.arange(self.head.num_features))

        def select(t):
            """The layer's channels among the pooled features (axis 1)."""
            return t if every else xp.take(t, cols, axis=1)

        gamma = select(gamma)
        if head_factors is None:
            bdiag, q = select(spread), select(q)  # bdiag: B's diag
            classes = self.head.num_classes
        else:
            classes = afterpool.width(self.head.after)
        kflat = conv.kernel.reshape(c_out, -1)
        knorm2 = self._const(xp, f"|K|2{i}", lambda: np.sum(kflat * kflat, axis=1), dev)
        full = self.options.kappa
        if full:
            kdt = np.float64 if ft == xp.float64 else np.float32
            kk_ft = self._const(xp, f"G{i}{kdt.__name__}", lambda: (
                kflat.astype(kdt) @ kflat.astype(kdt).T), dev)  # G = K K^T
            if head_factors is None:
                wst = self._const(xp, f"Wt{i}{kdt.__name__}", lambda: (  # (C_out, C)
                    self.head.after.compose()[0][:, layer.feature_index].T.astype(kdt)), dev)
        route = self.options.route or choose_route(geo, full)
        n = a0.shape[0]
        # Per-sample elements of the chunk's largest intermediates; NumPy takes chunks that
        # stay in cache (the jets make ~10 elementwise passes over the conv output), other
        # namespaces (GPU) chunks as large as memory allows.
        largest = max(c_out * classes if full else 0, geo.positions * c_out,
                      0 if head_factors is None else self.head.num_features * 2 * classes,
                      geo.c_in * geo.pixels, route_elements(geo, route))
        numpy = xp.__name__.endswith("numpy")
        step = max(1, (CACHE_ELEMENTS if numpy else CHUNK_ELEMENTS) // largest)
        budget = STRIP_ELEMENTS if numpy else CHUNK_ELEMENTS
        traces, kappas = [], []
        for s in range(0, n, step):
            sl = slice(s, min(n, s + step))
            d1, d2 = channelwise_derivatives(layer, _take(tensors, sl, n), xp, ft)
            left, right, sq = filter_factors(xp.astype(a0[sl], ft, copy=False), d1, geo, route)
            e = 0.0 if d2 is None else xp.sum(
                xp.astype(d2, xp.float64) * xp.astype(sq, xp.float64), axis=2) / geo.positions
            rdiag = xp.astype(xp.sum(left * right, axis=2), xp.float64)  # diag of R
            if head_factors is not None:
                fac = head_factors(sl, ft)
                ahat = xp.astype(select(fac.diagonal(xp)), xp.float64)  # diag of Ahat
                traces.append(ahat * rdiag + gamma[sl] * e)
                if full:
                    x, y = (select(t) for t in fac.joined(xp))
                    rows = kappa_rows(xp, kk_ft, left, right, x, budget, y)
                    if fac.d is not None:
                        rows = rows + knorm2[None, :] * rdiag * xp.astype(select(fac.d),
                                                                           xp.float64)
                    kappas.append(rows + knorm2[None, :] * gamma[sl] * e)
                continue
            traces.append(bdiag[sl] * rdiag + gamma[sl] * e)
            if full:
                # B = W^T diag(p) W - q q^T = Zt Zt^T with Zt = (W - 1 q^T)^T diag(sqrt p):
                # centred, so no cancellation when p is peaked (float32 is safe).
                pf = xp.astype(p[sl], ft)
                zt = (wst[None, :, :] - xp.astype(q[sl], ft)[:, :, None]) * xp.sqrt(pf)[:, None, :]
                rows = kappa_rows(xp, kk_ft, left, right, zt, budget)
                kappas.append(rows + knorm2[None, :] * gamma[sl] * e)
        tf = xp.concat(traces, axis=0)
        kf = xp.concat(kappas, axis=0) if full else None
        return (xp.sum(tf, axis=1), None if kf is None else xp.sum(kf, axis=1),
                xp.sum(tf, axis=0), None if kf is None else xp.sum(kf, axis=0))

    def merge(self, other: FlatnessAccumulator) -> None:
        self.moments.merge(other.moments)

    def result(self, model: str, provider: str | None = None) -> Result:
        return assemble(self.moments, HeadSummary.of(self.head), self.options.kappa, model,
                        provider)


@dataclass(frozen=True)
class HeadSummary:
    """What a :class:`Result` needs from the head besides the statistics (JSON-ready, so
    partial results can be merged without the model): the head's description, per layer
    ``(conv node, description, ||K||^2, kernel shape)``, and the layer the classifier
    measures refer to (None: the head has no classifier)."""

    description: str
    layers: tuple[tuple[str, str, float, list[int]], ...]
    classifier: str | None = None

    @classmethod
    def of(cls, head: Head) -> HeadSummary:
        after = head.after
        return cls(head.describe(), tuple(
            (layer.conv.node, layer.describe(), float(np.sum(layer.conv.kernel ** 2)),
             [int(d) for d in layer.conv.kernel.shape])
            for layer in head.layers),
            None if after.classifier is None else after.describe_classifier())


def assemble(mo: Moments, head: HeadSummary, kappa: bool, model: str,
             provider: str | None = None) -> Result:
    """The final :class:`Result` from merged statistics."""
    layers = []
    for i, (conv, description, k2, kernel_shape) in enumerate(head.layers):
        tr = mo.value(f"{i}.trace")
        stderr = {"trace": mo.stderr(f"{i}.trace"),
                  "kappa_layerwise": k2 * mo.stderr(f"{i}.trace")}
        per_filter = {"trace": mo.vector_mean(f"{i}.trace").tolist()}
        kap = None
        if kappa:
            kap = mo.value(f"{i}.kappa")
            stderr["kappa"] = mo.stderr(f"{i}.kappa")
            per_filter["kappa"] = mo.vector_mean(f"{i}.kappa").tolist()
        layers.append(LayerResult(conv, description, tr, kap, k2 * tr, stderr, per_filter,
                                  list(kernel_shape)))
    clf = None
    if "fc.trace" in mo.names:
        clf = ClassifierResult(mo.value("fc.trace"), mo.value("fc.kappa"),
                               {"trace": mo.stderr("fc.trace"), "kappa": mo.stderr("fc.kappa")},
                               head.classifier or "")
    return Result(model=model, n_samples=mo.n, loss=mo.value("loss"),
                  accuracy=mo.value("correct"),
                  stderr={"loss": mo.stderr("loss"), "accuracy": mo.stderr("correct")},
                  layers=layers, classifier=clf, provider=provider,
                  head=head.description)
