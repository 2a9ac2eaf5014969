"""The array-API math through a second namespace: torch CPU tensors (array-api-compat).

On a GPU the same code runs on CuPy arrays; here torch tensors stand in for them, so every
line of the generic path (jets, patch routes, the kappa's dense products, the host
conversion of the per-sample terms) is exercised against the NumPy result.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onnxflat.graph import analyze_model
from onnxflat.measures import FlatnessAccumulator, Options
from onnxflat.measures.dense import kappa_rows
from onnxflat.runtime import Extractor

from .zoo import CASES


def _measures(head, tensors, y, **options):
    acc = FlatnessAccumulator(head, Options(**options))
    acc.update(tensors, y)
    return acc.result("m")


def _flat(res) -> np.ndarray:
    vals = [res.loss, res.classifier.trace, res.classifier.kappa]
    for layer in res.layers:
        vals += [layer.trace, layer.kappa, *layer.per_filter["trace"], *layer.per_filter["kappa"]]
    return np.asarray(vals)


@pytest.mark.parametrize("case", [c for c in CASES if not c.fixed_batch], ids=lambda c: c.name)
@pytest.mark.parametrize("route", [None, "vector"])
def test_torch_namespace_matches_numpy(case, route, exported):
    _, proto = exported(case)
    head = analyze_model(proto)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, *case.sample_shape)).astype(np.float32)
    y = rng.integers(0, 5, 9)
    tensors = Extractor(proto, head, device="cpu").run(x)
    as_torch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    for float64 in (False, True):
        ref = _flat(_measures(head, tensors, y, route=route, float64=float64))
        got = _flat(_measures(head, as_torch, torch.from_numpy(y), route=route,
                              float64=float64))
        scale = np.abs(ref).max()
        np.testing.assert_allclose(got, ref, rtol=1e-5 if not float64 else 1e-10,
                                   atol=1e-7 * scale)


@pytest.mark.parametrize("classes", [5, 40])
@pytest.mark.parametrize("budget", [6, 10 ** 6])
def test_kappa_rows_torch(classes, budget):
    """The strips (NumPy's choice) and the one batched product (the GPU's) through torch
    equal NumPy's strips."""
    from array_api_compat import array_namespace

    rng = np.random.default_rng(1)
    zt = rng.standard_normal((2, 6, classes))
    gm = rng.standard_normal((6, 6))
    gm = gm + gm.T
    left = rng.standard_normal((2, 6, 3))
    t = [torch.from_numpy(v) for v in (gm, left, left, zt)]
    got = kappa_rows(array_namespace(t[0]), *t, budget).numpy()
    np.testing.assert_allclose(got, kappa_rows(np, gm, left, left, zt, 6), rtol=1e-12)


def test_iobinding_run_matches_plain_run(exported):
    """The GPU path's IOBinding run (bound outputs, converted per OrtValue), here bound to
    the CPU: same tensors as a plain run. On CUDA the converter is ``cupy_view``."""
    case = next(c for c in CASES if c.name == "residual_projection")
    _, proto = exported(case)
    head = analyze_model(proto)
    x = np.random.default_rng(2).standard_normal((5, 3, 8, 8)).astype(np.float32)
    ex = Extractor(proto, head, device="cpu")
    assert ex.output_device == "cpu"
    plain = ex._run(x)
    bound = ex._run_bound(x, "cpu", lambda v: v.numpy())
    assert len(bound) == len(ex.fetches) > 2
    for name, value in zip(ex.fetches, bound):
        np.testing.assert_array_equal(value, plain[name])


@pytest.mark.parametrize("name", ["mbv3_ts", "ln_mlp_ts13", "residual_ts"])
def test_torch_namespace_non_linear_head(name):
    """The head-after-pooling math (Jacobians, adjoints, curvature factors) through torch
    equals NumPy's."""
    from . import afterpool_heads

    case = next(c for c in afterpool_heads.CASES if c.name == name)
    _, proto = afterpool_heads.exported_case(case)
    head = analyze_model(proto)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 3, afterpool_heads.HW, afterpool_heads.HW)).astype(np.float32)
    y = rng.integers(0, afterpool_heads.CLASSES, 7)
    tensors = Extractor(proto, head, device="cpu").run(x)
    as_torch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    ref = _flat(_measures(head, tensors, y, float64=True))
    got = _flat(_measures(head, as_torch, torch.from_numpy(y), float64=True))
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
