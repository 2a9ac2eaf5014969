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
    assert head.num_classes == 1000


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


def test_mean_over_the_features_after_the_pooling_is_no_pooling():
    """A decomposed LayerNorm after the pooling starts with a ReduceMean over the features:
    the head's pooling stays the GlobalAveragePool (a mean of a rank-2 tensor pools no map)."""
    from onnxflat.graph.analyze import _the_pooling
    from onnxflat.graph.model import GraphIndex

    m = sample()
    flat = node_index(m, "Flatten")
    f = m.graph.node[flat].output[0]
    m.graph.initializer.append(numpy_helper.from_array(np.array([-1]), "last"))
    ln = [helper.make_node("ReduceMean", [f, "last"], ["mu"], name="ln_mean"),
          helper.make_node("Sub", [f, "mu"], ["centred"], name="ln_sub")]
    for k, n in enumerate(ln):
        m.graph.node.insert(flat + 1 + k, n)
    m.graph.node[node_index(m, "Gemm")].input[0] = "centred"
    assert _the_pooling(GraphIndex(m)).op_type == "GlobalAveragePool"


@pytest.mark.parametrize("axes", [[1], [1, 2, 3], [0, 2, 3], [2]])
def test_mean_over_other_axes_than_the_map_is_no_pooling(axes):
    """A ReduceMean of a rank-4 tensor pools only two non-batch axes (the map's): over the
    channels (a spatial attention gate), channels and map, or with the batch, it is refused
    by name."""
    m = sample()
    gap = m.graph.node[node_index(m, "GlobalAveragePool")]
    m.graph.initializer.append(numpy_helper.from_array(np.array(axes), "axes"))
    replace_node(m, "GlobalAveragePool", helper.make_node(
        "ReduceMean", [gap.input[0], "axes"], list(gap.output), name="mean"))
    with pytest.raises(HeadNotFoundError) as e:
        analyze_model(m, "m.onnx")
    assert e.value.node == "mean" and "not the conv's spatial axes" in e.value.reason


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


# ---- quantized and half-precision weights ------------------------------------------------

def stored_as(m: onnx.ModelProto, store) -> onnx.ModelProto:
    """Every float initializer W replaced by ``store(W)`` -> (initializers, nodes computing
    W from them); returns the model."""
    inits = [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT]
    nodes = []
    for t in inits:
        new_inits, new_nodes = store(t.name, numpy_helper.to_array(t))
        m.graph.initializer.remove(t)
        m.graph.initializer.extend(new_inits)
        nodes += new_nodes
    for k, n in enumerate(nodes):
        m.graph.node.insert(k, n)
    return m


def holding(values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The float32 sample holding ``values`` as its weights."""
    m = sample()
    for t in m.graph.initializer:
        if t.name in values:
            t.CopyFrom(numpy_helper.from_array(values[t.name].astype(np.float32), t.name))
    return m


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_weights_behind_cast(dtype, xy, tmp_path):
    import ml_dtypes
    np_dtype = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]
    rounded = {}

    def store(name, w):
        rounded[name] = w.astype(np_dtype).astype(np.float32)
        t = numpy_helper.from_array(w.astype(np_dtype), name + "_half")
        return [t], [helper.make_node("Cast", [t.name], [name], to=TensorProto.FLOAT)]
    m = stored_as(sample(), store)
    (layer,) = analyze_model(m).layers
    assert f"measured kernel: stored as {dtype}" in layer.conv.describe()
    np.testing.assert_allclose(measures(m, xy, tmp_path),
                               measures(holding(rounded), xy, tmp_path, "ref.onnx"), rtol=RTOL)


@pytest.mark.parametrize("opset", [13, 20])
def test_int8_weights_behind_dequantize_linear(opset, xy, tmp_path):
    """Per-axis int8 kernels and per-tensor uint8 others, dequantized as the graph does."""
    dequantized = {}

    def store(name, w):
        per_axis = w.ndim == 4
        axes = tuple(range(1, w.ndim))
        scale = (np.abs(w).max(axis=axes) if per_axis else np.abs(w).max()) / 100
        scale = scale.astype(np.float32)
        s = scale.reshape((-1,) + (1,) * (w.ndim - 1)) if per_axis else scale
        if per_axis:
            zero = np.zeros(len(scale), np.int8)
            q = np.clip(np.round(w / s), -127, 127).astype(np.int8)
        else:
            zero = np.array(128, np.uint8)
            q = np.clip(np.round(w / s) + 128, 0, 255).astype(np.uint8)
        dequantized[name] = (q.astype(np.float32) - zero.astype(np.float32).reshape(
            s.shape if per_axis else ())) * s
        inits = [numpy_helper.from_array(q, name + "_q"),
                 numpy_helper.from_array(scale, name + "_scale"),
                 numpy_helper.from_array(zero, name + "_zero")]
        return inits, [helper.make_node("DequantizeLinear", [t.name for t in inits], [name],
                                        **({"axis": 0} if per_axis else {}))]
    m = stored_as(sample(), store)
    del m.opset_import[:]
    m.opset_import.append(helper.make_opsetid("", opset))
    (layer,) = analyze_model(m).layers
    assert "measured kernel: dequantized from int8 by DequantizeLinear" in layer.conv.describe()
    np.testing.assert_allclose(measures(m, xy, tmp_path),
                               measures(holding(dequantized), xy, tmp_path, "ref.onnx"),
                               rtol=RTOL)


def test_float16_model_with_float32_io(xy, tmp_path):
    """onnxconverter-common's float16 conversion (float32 input and output, a trailing
    Softmax -> Cast): within the stated tolerance of the float32 model, and says so."""
    from onnxconverter_common import float16

    from onnxflat.graph.analyze import FLOAT16_TOLERANCE
    m = sample()
    m.graph.node.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
    m.graph.output[0].name = "probs"
    ref = measures(m, xy, tmp_path, "ref.onnx")
    m16 = float16.convert_float_to_float16(m, keep_io_types=True)
    assert m16.graph.node[-1].op_type == "Cast"
    (layer,) = analyze_model(m16).layers
    assert "float16 activations" in layer.conv.describe()
    got = measures(m16, xy, tmp_path)
    np.testing.assert_allclose(got, ref, rtol=FLOAT16_TOLERANCE)
    assert np.max(np.abs(got / ref - 1)) > 1e-6  # it is float16 arithmetic


def calibration(n=16):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            with np.load(TRAIN) as z:
                self.batches = iter([{"image": x[None]} for x in z["x"][:n]])

        def get_next(self):
            return next(self.batches, None)
    return Reader()


@pytest.mark.parametrize("how", ["dynamic", "static_qdq"])
def test_onnxruntime_quantized_sample_refused(how, tmp_path):
    """onnxruntime.quantization's outputs quantize the head's activations: refused, telling
    the user to measure the float model."""
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static
    out = tmp_path / f"{how}.onnx"
    if how == "dynamic":
        quantize_dynamic(MODEL, out)
    else:
        quantize_static(MODEL, out, calibration(), quant_format=QuantFormat.QDQ)
    with pytest.raises(HeadNotFoundError) as exc:
        analyze(out)
    assert "quantized" in exc.value.reason and "measure the float model" in exc.value.reason
    op = {n.name: n.op_type for n in onnx.load(out).graph.node}[exc.value.node]
    assert op == ("ConvInteger" if how == "dynamic" else "DequantizeLinear")


# ---- torchvision / timm exports ---------------------------------------------------------

def efficientnet_v2_s_narrow():
    """torchvision's efficientnet_v2_s at its full depth (40 blocks: the graph that once
    hit the recursion limit) with 8 channels."""
    from functools import partial

    import torch

    from .zoo import torchvision_ops
    torchvision_ops()
    from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig
    cfg = [FusedMBConvConfig(1, 3, 1, 8, 8, 2), FusedMBConvConfig(4, 3, 2, 8, 8, 4),
           FusedMBConvConfig(4, 3, 2, 8, 8, 4), MBConvConfig(4, 3, 2, 8, 8, 6),
           MBConvConfig(6, 3, 1, 8, 8, 9), MBConvConfig(6, 3, 2, 8, 8, 15)]
    return EfficientNet(cfg, dropout=0.2, last_channel=8, num_classes=5,
                        norm_layer=partial(torch.nn.BatchNorm2d, eps=1e-3))


def dpn_narrow():
    """timm's DPN blocks (dpn68's dual paths: the last conv's channels are sliced into the
    residual and the dense path, then concatenated) with a few channels."""
    import torch.nn as nn
    import torch.nn.functional as F

    from .zoo import torchvision_ops
    torchvision_ops()
    from timm.models.dpn import DualPathBlock

    from .architectures import bn

    class TinyDPN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 2, 1)
            self.b1 = DualPathBlock(8, 4, 4, 6, 2, 2, "proj")
            self.b2 = DualPathBlock(12, 4, 4, 6, 2, 2, "normal")
            self.norm = bn(14)
            self.classifier = nn.Conv2d(14, 5, 1)

        def forward(self, x):
            h = self.b2(self.b1(F.relu(self.stem(x))))
            g = F.adaptive_avg_pool2d(F.relu(self.norm(h)), 1)
            return self.classifier(g).flatten(1)
    return TinyDPN()


@pytest.mark.parametrize("build, param, steps, keep_bn, hw", [
    (efficientnet_v2_s_narrow, "features.7.0.weight", ("affine", "sigmoid", "mul"), True, 32),
    # the exporter's constant folding (timm's default export) makes the Slice bounds static;
    # the measured conv follows its BatchNorm (pre-activation), so it is not fused
    (dpn_narrow, "b2.c1x1_c.conv.weight", ("take", "take", "add", "concat", "affine", "relu"),
     False, 64),
], ids=["tv_efficientnet_v2_s", "timm_dpn"])
def test_export_measured_against_autograd(build, param, steps, keep_bn, hw, tmp_path):
    import torch

    from .reference import hessian_measures
    from .zoo import export
    torch.manual_seed(0)
    model = build().eval()
    for m in model.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "m.onnx"
    onnx.save(export(model, torch.randn(2, 3, hw, hw), keep_bn=keep_bn, opset=17), path)
    (layer,) = analyze(path).layers
    assert tuple(s.fn for s in layer.steps) == steps
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, hw, hw, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    (got,) = onnxflat.measure(path, x.numpy(), y.numpy(), batch_size=4).layers
    trace, kappa = hessian_measures(model, x, y, param)
    assert abs(got.trace - trace) < 1e-5 * abs(trace), (got.trace, trace)
    assert abs(got.kappa - kappa) < 1e-5 * abs(kappa), (got.kappa, kappa)


def _timm_narrow(name):
    from .zoo import torchvision_ops
    torchvision_ops()
    from timm.models import nfnet
    from timm.models.resnet import BasicBlock, Bottleneck, ResNet
    if name == "seresnet18":
        return ResNet(BasicBlock, (2, 2, 2, 2), num_classes=5, stem_width=8,
                      channels=(8, 8, 16, 16), block_args=dict(attn_layer="se"))
    if name == "ecaresnet26t":
        return ResNet(Bottleneck, (2, 2, 2, 2), num_classes=5, stem_width=8,
                      stem_type="deep_tiered", avg_down=True, channels=(4, 4, 8, 8),
                      block_args=dict(attn_layer="eca"))
    return nfnet.NormFreeNet(nfnet._nfres_cfg(depths=(2, 2, 2, 2), channels=(16, 16, 32, 32)),
                             num_classes=5)


@pytest.mark.parametrize("name, block, reason", [
    ("seresnet18", "/layer4/layer4.1/", "squeeze-excitation"),
    ("ecaresnet26t", "/layer4/layer4.1/", "squeeze-excitation"),
    ("nf_resnet26", "/stages/stages.3/stages.3.1/", "computed by BatchNormalization"),
])
def test_timm_refusals_name_the_last_block(name, block, reason):
    """timm's layouts at a few channels: the refusal names a node of the last block (the one
    nearest the pooling), found without trying the gates' poolings as heads."""
    import torch

    from .zoo import export
    torch.manual_seed(0)
    proto = export(_timm_narrow(name).eval(), torch.randn(2, 3, 64, 64), opset=17)
    with pytest.raises(HeadNotFoundError) as exc:
        analyze_model(proto)
    assert exc.value.node.startswith(block) and reason in exc.value.reason, exc.value


def test_bfloat16_model_noted_and_refused_by_the_runtime(tmp_path, xy):
    """A whole-model bfloat16 conversion: the analysis notes the precision; onnxruntime's CPU
    build has no bfloat16 Conv, which is told as the model's problem (exit 2)."""
    import ml_dtypes
    m = sample()
    for t in m.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(
            numpy_helper.to_array(t).astype(ml_dtypes.bfloat16), t.name))
    m.graph.node[0].input[0] = "image_bf16"
    m.graph.node.insert(0, helper.make_node("Cast", ["image"], ["image_bf16"],
                                            to=TensorProto.BFLOAT16))
    m.graph.node[-1].output[0] = "logits_bf16"
    m.graph.node.append(helper.make_node("Cast", ["logits_bf16"], ["logits"],
                                         to=TensorProto.FLOAT))
    (layer,) = analyze_model(m).layers
    assert "stored as bfloat16" in layer.conv.describe()
    assert "bfloat16 activations" in layer.conv.describe()
    path = tmp_path / "bf16.onnx"
    onnx.save(m, path)
    with pytest.raises(ModelError, match="onnxruntime"):
        onnxflat.measure(path, *xy)


def test_measured_kernel_named_in_inspect_json(tmp_path):
    from click.testing import CliRunner

    from onnxflat.cli import main
    m = stored_as(sample(), lambda name, w: (
        [numpy_helper.from_array(w.astype(np.float16), name + "_half")],
        [helper.make_node("Cast", [name + "_half"], [name], to=TensorProto.FLOAT)]))
    onnx.save(m, tmp_path / "m.onnx")
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "m.onnx"), "--json",
                                  str(tmp_path / "h.json")])
    assert r.exit_code == 0 and "measured kernel: stored as float16" in r.output
    import json
    (layer,) = json.loads((tmp_path / "h.json").read_text())["layers"]
    assert "measured kernel: stored as float16" in layer["summary"]
