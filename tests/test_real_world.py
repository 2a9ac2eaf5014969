"""Real-world graph forms: computed weights, model-zoo graphs, padded pooling, Caffe2 Sum,
deep graphs, and refusals reached in bounded memory.

The model zoo graphs are the ``light_*`` models the ``onnx`` wheel ships for its backend
tests (full-size graphs whose weights are ``ConstantOfShape`` fills).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxflat
from onnxflat.errors import HeadNotFoundError, ModelError
from onnxflat.graph import analyze, analyze_model

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
RTOL = 1e-6


@pytest.fixture(scope="module")
def xy():
    with np.load(TRAIN) as z:
        return z["x"][:64].copy(), z["y"][:64].copy()


def sample() -> onnx.ModelProto:
    return onnx.load(MODEL)


def measures(model: onnx.ModelProto, xy, tmp_path: Path, name: str = "m.onnx") -> np.ndarray:
    """(trace, kappa, kappa_layerwise) of the layer and (trace, kappa) of the classifier."""
    p = tmp_path / name
    onnx.save(model, p)
    r = onnxflat.measure(p, *xy, batch_size=32)
    (layer,) = r.layers
    return np.array([layer.trace, layer.kappa, layer.kappa_layerwise, r.classifier.trace,
                     r.classifier.kappa, r.loss])


def node_index(m: onnx.ModelProto, op: str) -> int:
    return next(i for i, n in enumerate(m.graph.node) if n.op_type == op)


def replace_node(m: onnx.ModelProto, op: str, *new: onnx.NodeProto) -> None:
    i = node_index(m, op)
    del m.graph.node[i]
    for k, n in enumerate(new):
        m.graph.node.insert(i + k, n)


# ---- model zoo --------------------------------------------------------------------------

ZOO = {  # name -> op of the pooling found, layers; or the op of the node named in the refusal
    "light_resnet50": ("AveragePool", 1), "light_shufflenet": ("AveragePool", 1),
    "light_squeezenet": ("GlobalAveragePool", 1), "light_densenet121": ("GlobalAveragePool", 1),
    "light_inception_v1": ("AveragePool", 4), "light_inception_v2": ("AveragePool", 4),
    "light_bvlc_alexnet": "MaxPool", "light_vgg19": "MaxPool", "light_zfnet512": "MaxPool",
}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_model_zoo_graph(name):
    path = LIGHT / f"{name}.onnx"
    expect = ZOO[name]
    if isinstance(expect, str):
        with pytest.raises(HeadNotFoundError) as exc:
            analyze(path)
        ops = {n.name: n.op_type for n in onnx.load(path).graph.node}
        assert ops[exc.value.node] == expect, exc.value
        assert "not a global average pooling" in exc.value.reason
        return
    head = analyze(path)
    assert (head.pooling.op, len(head.layers)) == expect
    assert head.classifier.weight.shape[0] == 1000


def test_densenet_transition_pools_are_not_composed():
    """DenseNet-121's 2x2 transition AveragePools are no candidates: analysing it allocates
    a small multiple of its head's weights (not a 100352^2 identity)."""
    tracemalloc.start()
    analyze(LIGHT / "light_densenet121.onnx")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 200 << 20, peak


@pytest.mark.parametrize("name", ["light_squeezenet", "light_shufflenet"])
def test_model_zoo_measure_random_data(name):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    r = onnxflat.measure(LIGHT / f"{name}.onnx", x, np.array([3, 7]), batch_size=2)
    assert all(np.isfinite(v) for layer in r.layers for v in (layer.trace, layer.kappa))


# ---- computed weights -------------------------------------------------------------------

def as_constant_nodes(m: onnx.ModelProto) -> onnx.ModelProto:
    """Every initializer as a Constant node (how some exporters write weights)."""
    nodes = [helper.make_node("Constant", [], [t.name], value=t) for t in m.graph.initializer]
    del m.graph.initializer[:]
    for k, n in enumerate(nodes):
        m.graph.node.insert(k, n)
    return m


def test_weights_as_constant_nodes(xy, tmp_path):
    ref = measures(sample(), xy, tmp_path, "ref.onnx")
    got = measures(as_constant_nodes(sample()), xy, tmp_path)
    np.testing.assert_allclose(got, ref, rtol=RTOL)


def test_deep_graph_and_deep_weight_chain():
    """1500 nodes on the trunk and a kernel behind 1500 Identity/Reshape nodes: analysed
    without recursion."""
    m = sample()
    relu = node_index(m, "Relu")
    out = m.graph.node[relu].output[0]
    for k in range(1500):
        m.graph.node.insert(relu + 1 + k, helper.make_node("Relu", [out], [f"deep{k}"]))
        out = f"deep{k}"
    conv2 = next(n for n in m.graph.node if n.op_type == "Conv" and n.input[0] != "image")
    conv2.input[0] = out
    w = conv2.input[1]
    shape = numpy_helper.from_array(np.array([32, 16, 3, 3], np.int64), "kshape")
    m.graph.initializer.append(shape)
    chain = []
    for k in range(1500):
        op = ("Identity", "Reshape")[k % 2]
        chain.append(helper.make_node(op, [w] + (["kshape"] if op == "Reshape" else []),
                                      [f"w{k}"]))
        w = f"w{k}"
    conv2.input[1] = w
    for k, n in enumerate(chain):
        m.graph.node.insert(k, n)
    (layer,) = analyze_model(m).layers
    np.testing.assert_array_equal(layer.conv.kernel, numpy_helper.to_array(
        next(t for t in m.graph.initializer if t.name == "onnx::Conv_20")))


def test_computed_weight_over_the_fold_limit_refused(monkeypatch):
    from onnxflat.graph import model as gm
    monkeypatch.setattr(gm, "MAX_FOLD_ELEMENTS", 1000)
    m = sample()  # conv2's kernel as a fill of its shape (Caffe2's light models)
    m.graph.initializer.append(numpy_helper.from_array(np.array([32, 16, 3, 3]), "kshape"))
    m.graph.node.insert(0, helper.make_node("ConstantOfShape", ["kshape"], ["filled"],
                                            value=helper.make_tensor("v", 1, [1], [0.01])))
    m.graph.node[3].input[1] = "filled"
    with pytest.raises(ModelError, match="would hold 4608 elements"):
        analyze_model(m)


# ---- pooling ----------------------------------------------------------------------------

def with_average_pool(kernel, pads, count_include_pad=0) -> onnx.ModelProto:
    """The sample with its GlobalAveragePool (over a 4x4 map) as an AveragePool."""
    m = sample()
    gap = m.graph.node[node_index(m, "GlobalAveragePool")]
    replace_node(m, "GlobalAveragePool", helper.make_node(
        "AveragePool", list(gap.input), list(gap.output), kernel_shape=kernel, pads=pads,
        count_include_pad=count_include_pad))
    return m


def test_padded_average_pool_covering_the_map_is_global(xy, tmp_path):
    """Caffe2's form: a 5x5 window with end padding on the 4x4 map, padding not counted."""
    ref = measures(sample(), xy, tmp_path, "ref.onnx")
    got = measures(with_average_pool([5, 5], [0, 0, 1, 1]), xy, tmp_path)
    np.testing.assert_allclose(got, ref, rtol=RTOL)


@pytest.mark.parametrize("kernel, pads, cip, reason", [
    ([5, 5], [0, 0, 1, 1], 1, "counts the padding"),
    ([2, 2], [0, 0, 0, 0], 0, "the pooling is not global"),
    ([3, 3], [0, 0, 0, 0], 0, "the pooling is not global"),
])
def test_average_pool_not_the_mean_refused(kernel, pads, cip, reason):
    m = with_average_pool(kernel, pads, cip)
    if kernel == [2, 2]:  # the features after it go through a Relu: the pooling is named
        i = node_index(m, "Gemm")
        m.graph.node.insert(i, helper.make_node("Relu", [m.graph.node[i].input[0]], ["r"]))
        m.graph.node[i + 1].input[0] = "r"
        m.graph.node[i].input[0] = m.graph.node[i - 1].output[0]
    with pytest.raises(HeadNotFoundError) as exc:
        analyze_model(m)
    assert exc.value.node == m.graph.node[node_index(m, "AveragePool")].name or \
        exc.value.node.startswith("AveragePool"), exc.value
    assert reason in exc.value.reason


def test_two_input_sum_is_an_add(xy, tmp_path):
    def with_op(op):
        m = sample()
        m.graph.initializer.append(numpy_helper.from_array(
            np.linspace(-0.2, 0.3, 32, dtype=np.float32).reshape(32, 1, 1), "shift"))
        relu2 = [n for n in m.graph.node if n.op_type == "Relu"][1]
        relu2.input[0], src = "shifted", relu2.input[0]
        m.graph.node.insert(node_index(m, "GlobalAveragePool") - 1,
                            helper.make_node(op, [src, "shift"], ["shifted"]))
        return m
    np.testing.assert_allclose(measures(with_op("Sum"), xy, tmp_path),
                               measures(with_op("Add"), xy, tmp_path, "ref.onnx"), rtol=RTOL)


def test_quantized_convs_named(tmp_path):
    """A model whose convs are ConvInteger is told its convs are quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    out = tmp_path / "dyn.onnx"
    quantize_dynamic(MODEL, out, op_types_to_quantize=["Conv"], weight_type=QuantType.QUInt8)
    assert any(n.op_type == "ConvInteger" for n in onnx.load(out).graph.node)
    with pytest.raises(HeadNotFoundError, match="quantized"):
        analyze(out)
