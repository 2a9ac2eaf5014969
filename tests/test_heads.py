"""Real torch exports of many head spellings: the analyzer's reading, and measure vs autograd."""

from __future__ import annotations

import copy

import pytest
import torch

import onnxflat
from onnxflat.graph import analyze_model

from .heads import CLASSES, HW, VARIANTS, exported_variant, reference_model
from .helpers import rel
from .reference import hessian_measures, loss_accuracy

N = 12



@pytest.mark.parametrize("v", VARIANTS, ids=lambda v: v.name)
def test_analyzer_reads_head(v):
    _, proto = exported_variant(v)
    head = analyze_model(proto)
    assert [s.fn for s in head.layers[0].steps] == list(v.steps)
    assert len(head.layers) == len(v.convs)
    offsets = v.offsets or (0,) * len(v.convs)
    assert tuple(layer.channel_offset for layer in head.layers) == offsets
    assert head.pooling.op == v.pool
    assert (head.after.classifier is not None) == (v.fc is not None)
    assert bool(head.after.nodes) == (v.fc is not None)
    assert head.num_classes == (CLASSES if v.fc else head.num_features)
    softmax_op = None
    if head.after.softmax:
        softmax_op = next(n.op_type for n in proto.graph.node
                          if (n.name or "") == head.after.softmax)
    assert softmax_op == v.softmax


@pytest.mark.parametrize("v", VARIANTS, ids=lambda v: v.name)
def test_measure_matches_autograd(v, tmp_path):
    model, proto = exported_variant(v)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, HW, HW, generator=g)
    classes = CLASSES if v.fc else analyze_model(proto).num_features
    y = torch.randint(0, classes, (N,), generator=g)
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    res = onnxflat.measure(path, x.numpy(), y.numpy(), batch_size=5)
    ref = reference_model(model)
    assert len(res.layers) == len(v.convs)
    for got, param in zip(res.layers, v.convs):
        trace, kappa = hessian_measures(copy.deepcopy(ref), x, y, param)
        assert rel(got.trace, trace) < v.tol, (param, got.trace, trace)
        assert rel(got.kappa, kappa) < v.tol, (param, got.kappa, kappa)
    assert (res.classifier is None) == (v.fc is None)
    if v.fc:
        trace, kappa = hessian_measures(copy.deepcopy(ref), x, y, v.fc)
        assert rel(res.classifier.trace, trace / v.fc_scale ** 2) < v.tol
        assert rel(res.classifier.kappa, kappa) < v.tol
    loss, acc = loss_accuracy(copy.deepcopy(ref), x, y)
    assert rel(res.loss, loss) < v.tol
    assert res.accuracy == pytest.approx(acc)
