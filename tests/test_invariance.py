"""Invariances of the math note, section 4, and independence of batching, through real exports."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

import onnxflat

from .zoo import ConvNeXtBlock, TinyCnn, export, fold_bn_into_conv


def _save(model, tmp_path, name, **kw):
    x = torch.randn(4, 3, 8, 8)
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(export(model, x, **kw).SerializeToString())
    return path


@pytest.fixture(scope="module")
def xy():
    g = torch.Generator().manual_seed(3)
    return torch.randn(40, 3, 8, 8, generator=g).numpy(), torch.randint(0, 5, (40,),
                                                                        generator=g).numpy()


def _rescale_filters(model: TinyCnn, lam: torch.Tensor) -> TinyCnn:
    """Scale conv filter j by lam_j and classifier column j by 1/lam_j (ReLU: same function)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.conv.weight.mul_(lam[:, None, None, None])
        m.conv.bias.mul_(lam)
        m.fc.weight.div_(lam[None, :])
    return m


def test_kappa_invariant_under_filter_rescaling(tmp_path, xy):
    base = TinyCnn(nn.ReLU(), seed=4).eval()
    lam = torch.tensor([0.5, 2.0, 3.0, 0.25, 1.5, 4.0])
    a = onnxflat.measure(_save(base, tmp_path, "a"), *xy)
    b = onnxflat.measure(_save(_rescale_filters(base, lam), tmp_path, "b"), *xy)
    assert b.loss == pytest.approx(a.loss, rel=1e-6)
    assert b.layers[0].kappa == pytest.approx(a.layers[0].kappa, rel=1e-5)
    assert b.layers[0].trace != pytest.approx(a.layers[0].trace, rel=1e-2)
    assert b.layers[0].kappa_layerwise != pytest.approx(a.layers[0].kappa_layerwise, rel=1e-2)


@pytest.mark.parametrize("act", [nn.GELU(), nn.ReLU()], ids=["gelu", "relu"])
def test_pointwise_kappa_invariant_under_filter_rescaling(act, tmp_path, xy):
    """ConvNeXt's pwconv2 (a MatMul): column j of the stored W (row j of torch's weight) and
    its bias scaled by lam_j, the layer scale by 1/lam_j: the same function, the same kappa."""
    base = ConvNeXtBlock(act, seed=4).eval()
    scaled = copy.deepcopy(base)
    lam = torch.tensor([0.5, 2.0, 3.0, 0.25, 1.5, 4.0])
    with torch.no_grad():
        scaled.pw2.weight.mul_(lam[:, None])
        scaled.pw2.bias.mul_(lam)
        scaled.gamma.div_(lam)
    a = onnxflat.measure(_save(base, tmp_path, "a"), *xy)
    b = onnxflat.measure(_save(scaled, tmp_path, "b"), *xy)
    assert a.layers[0].description.startswith("MatMul")
    assert b.loss == pytest.approx(a.loss, rel=1e-6)
    assert b.layers[0].kappa == pytest.approx(a.layers[0].kappa, rel=1e-5)
    assert b.layers[0].trace != pytest.approx(a.layers[0].trace, rel=1e-2)


def test_classifier_kappa_invariant_under_feature_rescaling(tmp_path, xy):
    base = TinyCnn(nn.ReLU(), seed=5).eval()
    lam = 3.0
    scaled = _rescale_filters(base, torch.full((6,), 1.0 / lam))  # g / lam, W * lam
    a = onnxflat.measure(_save(base, tmp_path, "a"), *xy)
    b = onnxflat.measure(_save(scaled, tmp_path, "b"), *xy)
    assert b.classifier.kappa == pytest.approx(a.classifier.kappa, rel=1e-5)
    assert b.classifier.trace == pytest.approx(a.classifier.trace / lam ** 2, rel=1e-5)


@pytest.mark.parametrize("kind", ["mbv3", "gelu_mlp"])
def test_kappa_invariant_with_a_non_linear_head(tmp_path, xy, kind):
    """Filter j scaled by lam_j and column j of the first Linear after the pooling by 1/lam_j
    (an MLP head after a ReLU): kappa unchanged, the trace not; any batch size."""
    import torch.nn.functional as F

    from .afterpool_heads import CLASSES, Body
    base = Body(kind, seed=9, act=F.relu).eval()
    lam = torch.tensor([0.5, 2.0, 3.0, 0.25, 1.5, 4.0])
    scaled = copy.deepcopy(base)
    with torch.no_grad():
        scaled.conv.weight.mul_(lam[:, None, None, None])
        scaled.conv.bias.mul_(lam)
        scaled.hidden.weight.div_(lam[None, :])
    x, y = xy[0], xy[1] % CLASSES
    a = onnxflat.measure(_save(base, tmp_path, "a", opset=17), x, y)
    b = onnxflat.measure(_save(scaled, tmp_path, "b", opset=17), x, y, batch_size=7)
    assert b.loss == pytest.approx(a.loss, rel=1e-6)
    assert b.layers[0].kappa == pytest.approx(a.layers[0].kappa, rel=1e-5)
    assert b.layers[0].trace != pytest.approx(a.layers[0].trace, rel=1e-2)
    assert b.classifier.kappa == pytest.approx(a.classifier.kappa, rel=1e-5)


def test_kappa_invariant_under_bn_folding(tmp_path, xy):
    model = TinyCnn(nn.ReLU(), bn="before", seed=6).eval()
    kept = _save(model, tmp_path, "kept", keep_bn=True)
    folded = _save(fold_bn_into_conv(copy.deepcopy(model)), tmp_path, "folded")
    assert "affine" in onnxflat.analyze(kept).describe()
    assert "affine" not in onnxflat.analyze(folded).describe()
    a, b = onnxflat.measure(kept, *xy), onnxflat.measure(folded, *xy)
    assert b.layers[0].kappa == pytest.approx(a.layers[0].kappa, rel=1e-5)
    assert b.layers[0].trace != pytest.approx(a.layers[0].trace, rel=1e-2)


def _flat(res):
    layer = res.layers[0]
    return np.array([res.loss, res.accuracy, layer.trace, layer.kappa, res.classifier.trace,
                     res.classifier.kappa, *layer.per_filter["kappa"]])


def test_batch_size_and_order_do_not_matter(tmp_path, xy):
    path = _save(TinyCnn(nn.SiLU(), seed=7).eval(), tmp_path, "m")
    x, y = xy
    ref = _flat(onnxflat.measure(path, x, y, batch_size=64))
    for b in (1, 7):
        np.testing.assert_allclose(_flat(onnxflat.measure(path, x, y, batch_size=b)), ref,
                                   rtol=1e-6)
    perm = np.random.default_rng(0).permutation(len(y))
    np.testing.assert_allclose(_flat(onnxflat.measure(path, x[perm], y[perm], batch_size=7)),
                               ref, rtol=1e-6)


def test_fixed_batch_one_export_equals_dynamic(tmp_path, xy):
    model = TinyCnn(nn.ReLU6(), stride=2, seed=8).eval()
    fixed = _save(model, tmp_path, "fixed", fixed_batch=True)
    dynamic = _save(model, tmp_path, "dynamic")
    assert onnxflat.analyze(fixed).input_shape[0] == 1
    a = onnxflat.measure(fixed, *xy, batch_size=16)
    b = onnxflat.measure(dynamic, *xy, batch_size=16)
    np.testing.assert_allclose(_flat(a), _flat(b), rtol=1e-6)
