"""Closed forms vs an independent autograd Hessian (float64), through real exports."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import onnxflat
from onnxflat.graph import analyze_model
from onnxflat.measures import FlatnessAccumulator

from .helpers import rel
from .reference import hessian_measures, loss_accuracy
from .zoo import CASES

N = 24


def data(case):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, *case.sample_shape, generator=g)
    y = torch.randint(0, 5, (N,), generator=g)
    return x, y


_references: dict = {}


def references(case, model, x, y):
    """The autograd references of the case's data (computed once: both tests share them)."""
    key = (case.name, x.numpy().tobytes(), y.numpy().tobytes())
    if key not in _references:
        _references[key] = _references_of(case, model, x, y)
    return _references[key]


def _references_of(case, model, x, y):
    ref_model = copy.deepcopy(model)
    layers = [hessian_measures(copy.deepcopy(ref_model), x, y, p) for p in case.convs]
    fc = hessian_measures(copy.deepcopy(ref_model), x, y, case.fc)
    return layers, fc, loss_accuracy(copy.deepcopy(ref_model), x, y)



@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_measure_matches_autograd(case, exported, tmp_path):
    model, proto = exported(case)
    x, y = data(case)
    path = tmp_path / f"{case.name}.onnx"
    path.write_bytes(proto.SerializeToString())
    res = onnxflat.measure(path, x.numpy(), y.numpy(), batch_size=10)
    layers, fc, (loss, acc) = references(case, model, x, y)
    assert len(res.layers) == len(layers)
    for got, (trace, kappa) in zip(res.layers, layers):
        assert rel(got.trace, trace) < 1e-5, (got.trace, trace)
        assert rel(got.kappa, kappa) < 1e-5, (got.kappa, kappa)
        assert np.isclose(sum(got.per_filter["trace"]), got.trace, rtol=1e-10)
        assert np.isclose(sum(got.per_filter["kappa"]), got.kappa, rtol=1e-10)
    assert rel(res.classifier.trace, fc[0]) < 1e-5
    assert rel(res.classifier.kappa, fc[1]) < 1e-5
    assert rel(res.loss, loss) < 1e-5
    assert res.accuracy == pytest.approx(acc)
    assert res.n_samples == N


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_math_core_float64(case, exported):
    """Fed float64 activations computed by torch, the math agrees to 1e-10."""
    model, proto = exported(case)
    if case.fixed_batch:
        pytest.skip("same graph as a dynamic export")
    head = analyze_model(proto)
    x, y = data(case)
    tensors = torch_activations(model, proto, head, x)
    layers, fc, _ = references(case, model, x, y)
    for route in (None, "vector"):
        acc = FlatnessAccumulator(head, onnxflat.measures.Options(route=route))
        acc.update(tensors, y.numpy())
        res = acc.result("m")
        for got, (trace, kappa) in zip(res.layers, layers):
            assert rel(got.trace, trace) < case.f64_tol
            assert rel(got.kappa, kappa) < case.f64_tol
        assert rel(res.classifier.trace, fc[0]) < case.f64_tol
        assert rel(res.classifier.kappa, fc[1]) < case.f64_tol


def torch_activations(model, proto, head, x):
    """The fetched tensors, computed in float64 by onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    m = copy.deepcopy(proto)
    for t in m.graph.initializer:
        if t.data_type == 1:
            arr = onnx.numpy_helper.to_array(t).astype(np.float64)
            t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))
    m = to_double(m)
    for name in head.fetches:
        m.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = ReferenceEvaluator(m)
    names = [n for n in head.fetches if n != head.input_name]
    outs = sess.run(names, {head.input_name: x.double().numpy()})
    res = dict(zip(names, outs))
    res[head.input_name] = x.double().numpy()
    return res


import onnx  # noqa: E402


def to_double(m):
    """Switch every float tensor type and Constant of the graph to float64."""
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        if vi.type.tensor_type.elem_type == 1:
            vi.type.tensor_type.elem_type = 11
    for node in m.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == 1:
                arr = onnx.numpy_helper.to_array(a.t).astype(np.float64)
                a.t.CopyFrom(onnx.numpy_helper.from_array(arr))
            if node.op_type == "Cast" and a.name == "to" and a.i == 1:
                a.i = 11
    del m.graph.value_info[:]
    return m
