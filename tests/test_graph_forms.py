"""Spellings no torch exporter emits, made by editing real exports: Constant-node weights,
Dropout/Identity nodes on the path, the opset-24 Swish op, float16 models."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import helper

import onnxflat
from onnxflat.graph import analyze_model

from .heads import CLASSES, HW, Net, reference_model
from .helpers import rel
from .reference import hessian_measures
from .zoo import export

N = 12



def _data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(N, 3, HW, HW, generator=g), torch.randint(0, CLASSES, (N,), generator=g)


def _export(model, dtype=torch.float32):
    return export(model.eval(), torch.randn(2, 3, HW, HW, dtype=dtype), keep_bn=True, opset=17)


def _measure(proto, tmp_path, x, y, name="m.onnx"):
    path = tmp_path / name
    onnx.save(proto, path)
    return onnxflat.measure(path, x.numpy(), y.numpy(), batch_size=5)


def insert_after(proto, op_type, new_nodes_fn):
    """Put nodes after the last ``op_type`` node's output; consumers read the new output."""
    node = [n for n in proto.graph.node if n.op_type == op_type][-1]
    src = node.output[0]
    nodes, out = new_nodes_fn(src)
    for n in proto.graph.node:
        for i, name in enumerate(n.input):
            if name == src:
                n.input[i] = out
    idx = list(proto.graph.node).index(node)
    for k, n in enumerate(nodes):
        proto.graph.node.insert(idx + 1 + k, n)
    return proto


def set_opset(proto, version):
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = version
    return proto


def test_weights_as_constant_nodes_measure_the_same(tmp_path):
    proto = _export(Net("bn+relu"))
    x, y = _data()
    want = _measure(proto, tmp_path, x, y)
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in proto.graph.initializer]
    del proto.graph.initializer[:]
    for k, n in enumerate(consts):
        proto.graph.node.insert(k, n)
    assert not proto.graph.initializer
    head = analyze_model(proto)
    assert [s.fn for s in head.layers[0].steps] == ["affine", "relu"]
    got = _measure(proto, tmp_path, x, y, "c.onnx")
    assert rel(got.layers[0].trace, want.layers[0].trace) < 1e-12
    assert rel(got.layers[0].kappa, want.layers[0].kappa) < 1e-12


@pytest.mark.parametrize("nodes, path, opset", [
    (lambda src: ([helper.make_node("Identity", [src], ["i1"]),
                   helper.make_node("Dropout", ["i1", "ratio", "train"], ["d1"], name="drop")],
                  "d1"), "relu", 17),
    (lambda src: ([helper.make_node("Swish", [src], ["sw"], alpha=1.5, name="swish")], "sw"),
     "relu+swish", 24),
])
def test_inserted_nodes_match_autograd(nodes, path, opset, tmp_path):
    proto = set_opset(insert_after(_export(Net("relu")), "Relu", nodes), opset)
    proto.graph.initializer.extend([
        onnx.numpy_helper.from_array(torch.tensor(0.3).numpy(), "ratio"),
        onnx.numpy_helper.from_array(torch.tensor(False).numpy(), "train")])
    proto.ir_version = min(proto.ir_version, 10)
    head = analyze_model(proto)
    want_fns = ["relu", "identity", "identity"] if path == "relu" else ["relu", "swish"]
    assert [s.fn for s in head.layers[0].steps] == want_fns
    x, y = _data()
    res = _measure(proto, tmp_path, x, y)
    ref = reference_model(Net(path))
    trace, kappa = hessian_measures(ref, x, y, "conv.weight")
    assert rel(res.layers[0].trace, trace) < 1e-5
    assert rel(res.layers[0].kappa, kappa) < 1e-5


def test_dropout_in_training_mode_refused():
    from onnxflat.errors import HeadNotFoundError
    proto = insert_after(_export(Net("relu")), "Relu", lambda src: (
        [helper.make_node("Dropout", [src, "ratio", "train"], ["d1"], name="drop")], "d1"))
    proto.graph.initializer.extend([
        onnx.numpy_helper.from_array(torch.tensor(0.3).numpy(), "ratio"),
        onnx.numpy_helper.from_array(torch.tensor(True).numpy(), "train")])
    with pytest.raises(HeadNotFoundError) as exc:
        analyze_model(proto)
    assert exc.value.node == "drop" and "training mode" in exc.value.reason


def test_float16_model(tmp_path):
    """A float16 export measures what its float32 twin does, to float16 precision (2e-2)."""
    model = Net("bn+silu")
    proto16 = _export(model.half(), torch.float16)
    head = analyze_model(proto16)
    assert head.input_dtype == "float16" and [s.fn for s in head.layers[0].steps] == [
        "affine", "sigmoid", "mul"]
    x, y = _data()
    got = _measure(proto16, tmp_path, x, y)
    trace, kappa = hessian_measures(reference_model(model.float()), x, y, "conv.weight")
    assert rel(got.layers[0].trace, trace) < 2e-2
    assert rel(got.layers[0].kappa, kappa) < 2e-2
