"""PaddlePaddle models exported by paddle2onnx: heads, refusals, measures vs Paddle autograd.

The fixtures in tests/fixtures/paddle are real paddle2onnx 2.1 exports (Paddle 3.3,
``paddle.jit.save`` + ``paddle2onnx.export``) with float64 references from Paddle's
autograd computed at generation time: see tools/make_paddle_fixtures.py.
"""

from __future__ import annotations

import onnx
import pytest

from onnxflat.graph import analyze

from .framework_exports import (
    ROOT,
    assert_after_pool,
    assert_measure_matches,
    assert_refusal,
    references,
)

FIXTURES = ROOT / "paddle"
REFS = references("paddle")
MEASURED = sorted(n for n, e in REFS.items() if "layers" in e)

# case -> (pooling op, channel-wise fns, classifier op types, trailing softmax)
HEADS = {
    "hswish_bn_dropout_fc": ("GlobalAveragePool", ["affine", "hard_swish"],
                             ["Mul", "MatMul", "Add"], False),
    "hswish_conv1x1_classifier": ("GlobalAveragePool", ["affine", "hard_sigmoid", "mul"],
                                  ["Conv", "Add"], False),
    "avgpool_full_map_softmax": ("AveragePool", ["add", "relu"], ["MatMul", "Add"], True),
    "depthwise_relu6_mean": ("ReduceMean", ["add", "affine", "clip"], ["MatMul", "Add"], False),
    "swish_dilated": ("GlobalAveragePool", ["add", "sigmoid", "mul"], ["MatMul", "Add"], False),
    "gelu_residual": ("GlobalAveragePool", ["add", "add", "div", "erf", "add", "mul", "mul"],
                      ["MatMul", "Add"], False),
    "hardsigmoid_gate": ("GlobalAveragePool", ["add", "hard_sigmoid", "mul"],
                         ["MatMul", "Add"], False),
}

REFUSALS = {
    "refuse_maxpool_before_gap": ("MaxPool.0", "MaxPool is a spatial operation"),
    "refuse_se_block": ("GlobalAveragePool.0", "squeeze-excitation"),
}


# Fixtures once refused for a non-linear head after the pooling, now measured: the ops after
# the pooling as read (the 1x1 conv and the Linear with their bias Adds, hardswish as
# HardSigmoid * x, inference dropout as a Mul by 0.8) and the classifier layer's nodes.
AFTER_POOL = {
    "refuse_mobilenetv3_head": (("Dense", "Pointwise", "Dense"), ("MatMul.0", "Add.4")),
    # paddle.vision.models.mobilenet_v3_small: pool -> 1x1 conv -> hardswish -> dropout -> FC
    "refuse_vision_mobilenet_v3_small": (("Dense", "Pointwise", "Dense"),
                                         ("MatMul.1", "Add.52")),
}


@pytest.mark.parametrize("name", sorted(AFTER_POOL))
def test_paddle_mobilenetv3_heads_are_measured(name):
    assert_after_pool("paddle", REFS[name], *AFTER_POOL[name])


def test_fixtures_are_paddle2onnx_exports():
    assert set(HEADS) == set(MEASURED)
    assert set(REFUSALS) | set(MEASURED) | set(AFTER_POOL) == set(REFS)
    opsets = set()
    for entry in REFS.values():
        m = onnx.load(FIXTURES / entry["file"])
        opsets.add(m.opset_import[0].version)
        assert m.opset_import[0].version == entry["opset"]
        # paddle2onnx names nodes <Op>.<k> and tensors p2o.pd_op.<paddle op>.<k>.<out>
        assert all(n.name.startswith(n.op_type + ".") for n in m.graph.node)
        assert any(o.startswith("p2o.pd_op.") for n in m.graph.node for o in n.output)
    assert len(opsets) >= 4


@pytest.mark.parametrize("name", MEASURED)
def test_paddle_head_detected(name):
    entry = REFS[name]
    pool_op, fns, classifier, softmax = HEADS[name]
    head = analyze(FIXTURES / entry["file"])
    (layer,) = head.layers
    assert layer.conv.node == entry["layers"][0]["onnx_conv"]
    assert head.pooling.op == pool_op
    assert [s.fn for s in layer.steps if s.fn not in ("identity", "transpose")] == fns
    assert [n.split(".")[0] for n in head.after.nodes] == classifier
    assert (head.after.softmax is not None) == softmax


@pytest.mark.parametrize("name", MEASURED)
def test_paddle_measure_matches_paddle_autograd(name):
    assert_measure_matches("paddle", REFS[name])


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_paddle_refusal_names_node_and_reason(name):
    assert_refusal("paddle", REFS[name], *REFUSALS[name])
