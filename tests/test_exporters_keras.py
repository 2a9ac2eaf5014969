"""Keras models exported by tf2onnx: head detection, refusals, and measures vs TF autograd.

The fixtures in tests/fixtures/keras are real tf2onnx exports with reference values
computed by TensorFlow (float64 Hessians, nested GradientTape) at generation time:
see tools/make_keras_fixtures.py. The ONNX runtime runs float32, hence the 1e-5 tolerance.
"""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner

from onnxflat.cli import main
from onnxflat.graph import analyze

from .framework_exports import (
    ROOT,
    assert_after_pool,
    assert_measure_matches,
    assert_refusal,
    data,
    references,
)
from .helpers import rel

FIXTURES = ROOT / "keras"
REFS = references("keras")
MEASURED = sorted(n for n, e in REFS.items() if "layers" in e)
NHWC = (0, 2, 3, 1)
NCHW = (0, 1, 2, 3)

# case -> (pooling op, layout of the pooling input, trailing softmax, channel-wise fns)
HEADS = {
    "conv_bn_relu": ("GlobalAveragePool", NCHW, False, ["relu"]),
    "relu6_dense_softmax": ("GlobalAveragePool", NCHW, True, ["clip"]),
    "swish_stride2_same": ("GlobalAveragePool", NCHW, False, ["sigmoid", "mul"]),
    "gelu_tanh_keepdims": ("ReduceMean", NCHW, False,
                           ["mul", "pow", "mul", "add", "mul", "tanh", "add", "mul"]),
    "dilated_valid_bn_after_relu": ("GlobalAveragePool", NCHW, False, ["relu", "mul", "add"]),
    "depthwise_bn_relu6": ("GlobalAveragePool", NCHW, True, ["mul", "add", "clip"]),
    "leaky_stride2_valid": ("GlobalAveragePool", NCHW, False, ["leaky_relu"]),
    "residual_add": ("ReduceMean", NHWC, False, ["add", "relu"]),
    "concat_branches": ("GlobalAveragePool", NCHW, False, None),
    "erf_gelu_transposes": ("ReduceMean", NHWC, False, ["mul", "mul", "erf", "add", "mul"]),
    "erf_gelu_transposes_op18": ("ReduceMean", NHWC, False,
                                 ["mul", "mul", "erf", "add", "mul"]),
    # channel-last per-channel constants (BN as Mul/Add) and a Concat on axis 3
    "bn_after_relu_nhwc": ("ReduceMean", NHWC, False, ["relu", "mul", "add"]),
    "concat_branches_nhwc": ("ReduceMean", NHWC, False, None),
    "swish_inputs_as_nchw": ("GlobalAveragePool", NCHW, False, ["sigmoid", "mul"]),
    "relu6_fixed_batch": ("ReduceMean", NHWC, True, ["clip"]),
    "separable_relu": ("GlobalAveragePool", NCHW, False, ["relu"]),  # the pointwise conv
    # Dense on a feature map (Reshape -> MatMul -> Reshape): a pointwise MatMul layer, NHWC;
    # tf2onnx moves the residual add to NCHW (a transpose step after the bias)
    "dense_pointwise_residual": ("GlobalAveragePool", NCHW, False, ["add", "add", "relu"]),
    "dense_pointwise_swish_nhwc": ("ReduceMean", NHWC, False, ["add", "sigmoid", "mul"]),
}

# case -> (node named by the refusal, substring of the reason); None: no node applies
REFUSALS = {
    "refuse_maxpool_before_gap": ("refuse_maxpool_before_gap_1/max_pooling2d_1/MaxPool2d",
                                  "MaxPool is a spatial operation between the conv and the "
                                  "pooling"),
    "refuse_flatten_dense": (None, "no global average pooling"),
    "refuse_global_max_pool": ("refuse_global_max_pool_1/global_max_pooling2d_1/Max",
                               "GlobalMaxPool is not a global average pooling"),
    # the head conv's output also feeds the gate's pooling; the gate conv is rejected too
    # ("is broadcast to"), but the head conv's reason is the one reported
    "refuse_squeeze_excitation": (
        "refuse_squeeze_excitation_1/global_average_pooling2d_1_1/Mean", "squeeze-excitation"),
}


# Fixtures once refused for an MLP after the pooling, now measured: the head after the pooling
# as the analyzer reads it (op kinds in order) and the classifier layer's nodes.
AFTER_POOL = {"refuse_mlp_after_gap": (("Dense", "Pointwise", "Dense"),
                                       ("refuse_mlp_after_gap_1/dense_1/MatMul",
                                        "refuse_mlp_after_gap_1/dense_1/BiasAdd"))}


@pytest.mark.parametrize("name", sorted(AFTER_POOL))
def test_keras_mlp_head_is_measured(name):
    assert_after_pool("keras", REFS[name], *AFTER_POOL[name])


def test_fixtures_are_tf2onnx_exports():
    assert set(HEADS) == set(MEASURED)
    assert set(REFUSALS) | set(MEASURED) | set(AFTER_POOL) == set(REFS)
    opsets = set()
    for entry in REFS.values():
        m = onnx.load(FIXTURES / entry["file"])
        assert m.producer_name == "tf2onnx"
        opsets.add(entry["opset"])
        first = m.graph.node[0]  # Keras feeds NHWC: the export starts with NHWC -> NCHW
        if entry["input_layout"] == "NHWC":
            assert first.op_type == "Transpose" and list(first.attribute[0].ints) == [0, 3, 1, 2]
        dims = m.graph.input[0].type.tensor_type.shape.dim
        assert dims[3 if entry["input_layout"] == "NHWC" else 1].dim_value == 3
    assert len(opsets) >= 3


@pytest.mark.parametrize("name", MEASURED)
def test_keras_head_detected(name):
    entry = REFS[name]
    pool_op, layout, softmax, fns = HEADS[name]
    head = analyze(FIXTURES / entry["file"])
    assert sorted(layer.conv.node for layer in head.layers) == sorted(
        ref["onnx_conv"] for ref in entry["layers"])
    assert head.pooling.op == pool_op
    assert all(layer.layout == layout for layer in head.layers)
    assert (head.after.softmax is not None) == softmax
    ops = {n.name: n.op_type for n in onnx.load(FIXTURES / entry["file"]).graph.node}
    # with a fixed batch size tf2onnx fuses the Dense MatMul + Add into a Gemm
    dense = ["Gemm"] if name == "relu6_fixed_batch" else ["MatMul", "Add"]
    assert [ops[n] for n in head.after.nodes] == dense
    if fns is None:  # Concatenate([4 channels, 3 channels])
        assert sorted(layer.channel_offset for layer in head.layers) == [0, 4]
    else:
        (layer,) = head.layers
        assert [s.fn for s in layer.steps if s.fn not in ("transpose", "identity")] == fns


@pytest.mark.parametrize("name", MEASURED)
def test_keras_measure_matches_tensorflow(name):
    assert_measure_matches("keras", REFS[name])


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_keras_refusal_names_node_and_reason(name):
    assert_refusal("keras", REFS[name], *REFUSALS[name])


# Keras Conv1D -> GlobalAveragePooling1D -> Dense (tests/fixtures/keras_conv1d): tf2onnx writes
# the Conv1D as Unsqueeze -> a 1 x k Conv -> Squeeze, so the pooled tensor holds the conv's
# axes N, C, W (NCW, its H of size 1 squeezed) or N, W, C (NWC, channel-last).
REFS_1D = references("keras_conv1d")
NCW, NWC = (0, 1, 3), (0, 3, 1)
HEADS_1D = {  # case -> (pooling op, layout of the pooling input, channel-wise fns)
    "conv1d_bn_relu": ("GlobalAveragePool", NCW, ["mul", "add", "relu"]),
    "conv1d_swish_stride2_softmax": ("GlobalAveragePool", NCW, ["add", "sigmoid", "mul"]),
    "conv1d_causal_dilated_gelu_tanh": (
        "ReduceMean", NWC, ["add", "mul", "pow", "mul", "add", "mul", "tanh", "add", "mul"]),
    "conv1d_residual_leaky": ("ReduceMean", NWC, ["add", "add", "leaky_relu"]),
    "conv1d_bn_relu_nlc": ("ReduceMean", NWC, ["mul", "add", "relu"]),
}


@pytest.mark.parametrize("name", sorted(REFS_1D))
def test_keras_conv1d_head_and_measures(name):
    entry = REFS_1D[name]
    pool_op, layout, fns = HEADS_1D[name]
    head = analyze(ROOT / "keras_conv1d" / entry["file"])
    (layer,) = head.layers
    assert layer.conv.node == entry["layers"][0]["onnx_conv"]
    assert layer.conv.kernel_size[0] == 1 and head.input_shape[1:] == (16, 2)
    assert head.pooling.op == pool_op and layer.layout == layout
    assert [s.fn for s in layer.steps if s.fn not in ("transpose", "squeeze")] == fns
    assert_measure_matches("keras_conv1d", entry)


def test_keras_cli_measure_and_inspect(tmp_path):
    """The CLI on an NHWC tf2onnx export: same numbers as the API; a refusal exits 2."""
    entry = REFS["erf_gelu_transposes"]
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["measure", str(FIXTURES / entry["file"]), "--data",
                                  str(FIXTURES / "data.npz"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert rel(res["layers"][0]["kappa"], entry["layers"][0]["kappa"]) < 1e-5
    assert rel(res["classifier"]["trace"], entry["classifier"]["trace"]) < 1e-5
    refused = FIXTURES / REFS["refuse_global_max_pool"]["file"]
    r = CliRunner().invoke(main, ["inspect", str(refused)])
    assert r.exit_code == 2 and "global_max_pooling2d_1/Max" in r.output


def test_keras_pointwise_map_of_another_rank_refused():
    """Shape inference does not follow tf2onnx's Reshape back to the map: its rank is checked
    on the fetched tensors (a map that is not 4-D is refused, not misread)."""
    from onnxflat.errors import ModelError
    from onnxflat.runtime import Extractor
    path = FIXTURES / REFS["dense_pointwise_swish_nhwc"]["file"]
    head = analyze(path)
    conv = head.layers[0].conv
    assert conv.op == "MatMul" and conv.output.endswith("Tensordot:0")
    extractor = Extractor(onnx.load(path), head, device="cpu")
    x, _ = data("keras")
    out = extractor.run(x[:4])
    out[conv.output] = out[conv.output].reshape(4, -1, conv.out_channels)
    with pytest.raises(ModelError, match="not a 4-D map"):
        extractor._check_shapes(out, 4)
