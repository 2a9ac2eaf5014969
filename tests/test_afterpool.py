"""Heads with a differentiable map after the pooling (MobileNetV3 MLP, VGG MLP, LayerNorm in
both spellings, timm conv_head, BatchNorm1d, residual, GELU/tanh curvature), both exporters:
conv trace and kappa and the classifier measures against float64 torch autograd."""

from __future__ import annotations

import copy

import pytest
import torch

import onnxflat
from onnxflat.graph import analyze_model
from onnxflat.measures import FlatnessAccumulator

from .afterpool_heads import CASES, CLASSES, HW, exported_case
from .helpers import rel
from .reference import hessian_measures
from .test_autograd import torch_activations

N = 10


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, 3, HW, HW, generator=g)
    return x, torch.randint(0, CLASSES, (N,), generator=g)


def _check(model, proto, tmp_path, tol, float64=False, fc="fc.weight"):
    x, y = _data()
    if float64:  # the math fed float64 activations (onnx's reference evaluator)
        head = analyze_model(proto)
        acc = FlatnessAccumulator(head)
        acc.update(torch_activations(model, proto, head, x), y.numpy())
        res = acc.result("m")
    else:
        path = tmp_path / "m.onnx"
        path.write_bytes(proto.SerializeToString())
        res = onnxflat.measure(path, x.numpy(), y.numpy(), batch_size=4)
    ref = copy.deepcopy(model).double()
    ref.reference = True
    (layer,) = res.layers
    trace, kappa = hessian_measures(copy.deepcopy(ref), x, y, "conv.weight")
    assert rel(layer.trace, trace) < tol, (layer.trace, trace)
    assert rel(layer.kappa, kappa) < tol, (layer.kappa, kappa)
    assert rel(sum(layer.per_filter["trace"]), layer.trace) < 1e-12
    assert rel(sum(layer.per_filter["kappa"]), layer.kappa) < 1e-12
    trace, kappa = hessian_measures(copy.deepcopy(ref), x, y, fc)
    assert rel(res.classifier.trace, trace) < tol, (res.classifier.trace, trace)
    assert rel(res.classifier.kappa, kappa) < tol, (res.classifier.kappa, kappa)
    return res


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_float32_pipeline_matches_autograd(case, tmp_path):
    model, proto = exported_case(case)
    _check(model, proto, tmp_path, 1e-5)


@pytest.mark.parametrize("name", ["mbv3_ts", "layernorm_ts13", "linear_ln_ts13",
                                  "conv_head_ts", "residual_ts", "gelu_op_mlp_ts20",
                                  "ln_mlp_ts13"])
def test_float64_matches_autograd(name, tmp_path):
    """(The TorchScript Erf spelling of GELU holds sqrt(2) as a float32 constant, 1e-8 off
    torch's: its float64 check is the Gelu op's.)"""
    case = next(c for c in CASES if c.name == name)
    model, proto = exported_case(case)
    _check(model, proto, tmp_path, 1e-10, float64=True)


def test_batchnorm1d_before_the_linear_keeps_the_stored_weight():
    """efficientvit-style BN1d -> Linear: the classifier is the Linear (its stored weight,
    its own input), not the BN folded into it."""
    _, proto = exported_case(next(c for c in CASES if c.head == "bn1d"))
    after = analyze_model(proto).after
    layer = after.classifier_layer
    bn = next(n for n in proto.graph.node if n.op_type == "BatchNormalization")
    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")
    assert layer.nodes == (gemm.name,) and layer.input_name == bn.output[0]
    w = next(t for t in proto.graph.initializer if t.name == gemm.input[1])
    assert tuple(layer.weight.shape) == tuple(w.dims)


def test_cli_names_the_classifier_layer_or_none(tmp_path):
    """`inspect` and `measure` say which layer the classifier measures refer to; a head without
    one (logits = pooled features) reports ``classifier: null`` (schema-valid) and says so."""
    import json
    import re

    import jsonschema
    import numpy as np
    from click.testing import CliRunner

    from onnxflat.cli import main

    from .heads import VARIANTS, exported_variant
    from .test_cli_compare_report import SCHEMA

    _, proto = exported_case(next(c for c in CASES if c.head == "bn1d"))
    path = tmp_path / "bn1d.onnx"
    path.write_bytes(proto.SerializeToString())
    r = CliRunner().invoke(main, ["inspect", str(path)])
    assert r.exit_code == 0, r.output
    assert "classifier measures: /fc/Gemm (weight 4x6, input '/bn/BatchNormalization" in r.output
    _, proto = exported_variant(next(v for v in VARIANTS if v.fc is None))
    path = tmp_path / "none.onnx"
    path.write_bytes(proto.SerializeToString())
    x, _ = _data()
    features = analyze_model(proto).num_features
    data = tmp_path / "d.npz"
    np.savez(data, x=x.numpy(), y=np.arange(N) % features)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["measure", str(path), "--data", str(data), "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert re.search(r"classifier:\s+none\s+the head has no classifier layer", r.output)
    doc = json.loads(out.read_text())
    assert doc["classifier"] is None
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def test_layernorm_without_bias():
    """LayerNormalization with a scale and no bias input (the dynamo export of
    ``F.layer_norm(x, (C,))`` on NHWC-pooled features) is read, not an internal error."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from onnxflat.graph.head import Dense, LayerNorm

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in
             (("W", (6, 3, 1, 1)), ("g", (6,)), ("fc", (4, 6)))]
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"]),
         helper.make_node("ReduceMean", ["c", "axes"], ["p"], keepdims=0),
         helper.make_node("LayerNormalization", ["p", "g"], ["ln"], epsilon=1e-5),
         helper.make_node("Gemm", ["ln", "fc"], ["logits"], transB=1)], "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])], inits)
    head = analyze_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    ln, fc = head.after.ops
    assert isinstance(ln, LayerNorm) and isinstance(fc, Dense)
    assert np.array_equal(ln.bias, np.zeros(6))
    assert np.allclose(ln.scale, numpy_helper.to_array(inits[1]))
