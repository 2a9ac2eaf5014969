"""The float32 products of the measures (the default on float32 activations) against the same
math in float64, on heads as wide as the benchmarks' and with peaked softmax outputs.

Stated tolerance: 1e-5 relative on every measure and on every per-filter value above 1e-3 of
the largest. The classifier curvature ``B = W^T diag(p) W - q q^T`` is formed centred, so a
confident model (``1 - p_max`` ~ 1e-4) does not lose the digits that cancel.
"""

from __future__ import annotations

import numpy as np
import pytest

from onnxflat.graph.head import AfterPool, Conv, Dense, Head, Layer, Operand, Pooling, Step
from onnxflat.measures import FlatnessAccumulator, Options
from onnxflat.measures.dense import kappa_rows

TOL = 1e-5


def wide_head(c_in, c_out, classes, k, act, seed=0, confident=0.0) -> Head:
    """``confident``: bias of class 0 (large: every sample predicts 0 with p ~ 1)."""
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)
    conv = Conv("conv", "a", "z", kernel, None, (1, 1), (k // 2,) * 4, (1, 1), 1)
    steps = (Step("act", act, (Operand("dep", "z"),), "h"),)
    bias = rng.standard_normal(classes)
    bias[0] += confident
    w = rng.standard_normal((classes, c_out)) / np.sqrt(c_out)
    clf = AfterPool(c_out, (Dense(0, w, bias, ("fc",), True, "g"),), "logits", classifier=0)
    return Head("m", "x", ("N", 3, 8, 8), "float32", (Layer(conv, steps),),
                Pooling("gap", "GlobalAveragePool", "h", "g"), clf)


def tensors_for(head: Head, n, hw, seed=1) -> dict:
    """float32 activations: the conv input, its output and the pooled features."""
    rng = np.random.default_rng(seed)
    conv = head.layers[0].conv
    a = rng.standard_normal((n, conv.kernel.shape[1], hw, hw)).astype(np.float32)
    z = rng.standard_normal((n, conv.out_channels, hw, hw)).astype(np.float32)
    g = np.maximum(z, 0).mean(axis=(2, 3)) * 3.0  # any features: only the dtype path matters
    return {"a": a, "z": z, "g": g.astype(np.float32)}


def run(head, tensors, y, float64):
    acc = FlatnessAccumulator(head, Options(float64=float64))
    acc.update(tensors, y)
    return acc.result("m")


@pytest.mark.parametrize("c_in,c_out,classes,k,act,confident", [
    (64, 512, 10, 3, "relu", 0.0),       # ResNet-18-like head (scaled down in C_in)
    (32, 256, 1000, 1, "swish", 0.0),    # EfficientNet-like 1x1 head, 1000 classes, SiLU
    (32, 256, 100, 1, "relu", 16.0),     # confident model: 1 - p_max < 1e-4 on every sample
])
def test_float32_products_match_float64(c_in, c_out, classes, k, act, confident):
    head = wide_head(c_in, c_out, classes, k, act, confident=confident)
    tensors = tensors_for(head, 12, 4 if k == 3 else 5)
    y = np.arange(12) % classes
    fast, ref = run(head, tensors, y, False), run(head, tensors, y, True)
    if confident:  # every sample must really be peaked, or the case shows nothing
        fc = head.after.classifier_layer
        f = tensors["g"].astype(np.float64) @ fc.weight.T + fc.bias
        p = np.exp(f - f.max(1, keepdims=True))
        assert np.max(1 - 1 / p.sum(1)) < 1e-4
    lf, lr = fast.layers[0], ref.layers[0]
    assert lf.trace == pytest.approx(lr.trace, rel=TOL)
    assert lf.kappa == pytest.approx(lr.kappa, rel=TOL)
    for key in ("trace", "kappa"):
        a, b = np.asarray(lf.per_filter[key]), np.asarray(lr.per_filter[key])
        big = np.abs(b) > 1e-3 * np.abs(b).max()
        np.testing.assert_allclose(a[big], b[big], rtol=TOL)
    assert fast.classifier.kappa == pytest.approx(ref.classifier.kappa, rel=1e-12)


@pytest.mark.parametrize("classes", [5, 40])
@pytest.mark.parametrize("budget", [1, 7 * 3, 7 * 7, 7 * 7 * 3, 10 ** 6])
def test_kappa_rows_matches_full_product(classes, budget):
    """Every strip size (one row, uneven strips, whole matrices, several samples at once),
    both routes (``M Zt`` for few classes, the Gram's upper triangle for many): equal to
    ``sum_j' G_jj' R_jj' (Zt Zt^T)_jj'`` formed whole."""
    rng = np.random.default_rng(3)
    n, c_out, k = 3, 7, 4
    zt = rng.standard_normal((n, c_out, classes))
    gm = rng.standard_normal((c_out, c_out))
    gm = gm + gm.T
    left = rng.standard_normal((n, c_out, k))
    s = rng.standard_normal((n, k, k))
    right = left @ (s + s.transpose(0, 2, 1))  # R = left right^T symmetric, left != right
    r = left @ right.transpose(0, 2, 1)
    want = np.sum(gm * r * (zt @ zt.transpose(0, 2, 1)), axis=2)
    np.testing.assert_allclose(kappa_rows(np, gm, left, right, zt, budget), want, rtol=1e-12)
    f32 = [v.astype(np.float32) for v in (gm, left, right, zt)]
    np.testing.assert_allclose(kappa_rows(np, *f32, budget), want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max())
