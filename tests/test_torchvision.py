"""torchvision's own MobileNetV3 (small and large; random init, width 0.1, 32x32 inputs):
`Linear -> Hardswish -> Dropout -> Linear` after the pooling, measured against float64
autograd for the last conv and the classifier. The reference differentiates the model from
the last conv block on, fed that block's input computed by torch (the same function of the
kernel: exact, and fast)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

import onnxflat
from onnxflat.graph.head import Dense, Pointwise

from .reference import hessian_measures
from .zoo import export, torchvision_ops

torchvision_ops()
torchvision = pytest.importorskip("torchvision")

N, CLASSES, HW = 6, 5, 32


class _Hardswish(nn.Module):
    """Hardswish by its formula (torch has no double backward of hardswish)."""

    def forward(self, t):
        return t * (t + 3).clamp(0, 6) / 6


def _tail(model: nn.Module) -> nn.Module:
    """The last conv block, pooling and classifier, with Hardswish by its formula."""
    tail = copy.deepcopy(nn.Sequential(model.features[-1], model.avgpool, nn.Flatten(1),
                                       model.classifier))
    for m in tail.modules():
        for name, child in m.named_children():
            if isinstance(child, nn.Hardswish):
                setattr(m, name, _Hardswish())
    return tail


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "mobilenet_v3_large"])
def test_mobilenet_v3_matches_autograd(arch, tmp_path):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(width_mult=0.1, num_classes=CLASSES).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    x = torch.randn(N, 3, HW, HW, generator=g)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    path = tmp_path / f"{arch}.onnx"
    path.write_bytes(export(model, x[:2], keep_bn=True, opset=17).SerializeToString())
    head = onnxflat.analyze(path)
    assert [type(op) for op in head.after.ops] == [Dense, Pointwise, Dense]
    assert head.after.classifier_layer.nodes == ("/classifier/classifier.3/Gemm",)
    (layer,) = head.layers
    assert layer.conv.node == f"/features/features.{len(model.features) - 1}/" \
                              f"features.{len(model.features) - 1}.0/Conv"
    res = onnxflat.measure(path, x.numpy(), y.numpy(), batch_size=4)
    with torch.no_grad():
        a = model.features[:-1].double()(x.double())
    tail = _tail(model)
    trace, kappa = hessian_measures(copy.deepcopy(tail), a, y, "0.0.weight")
    (got,) = res.layers
    assert abs(got.trace - trace) < 1e-5 * abs(trace), (got.trace, trace)
    assert abs(got.kappa - kappa) < 1e-5 * abs(kappa), (got.kappa, kappa)
    trace, kappa = hessian_measures(copy.deepcopy(tail), a, y, "3.3.weight")
    assert abs(res.classifier.trace - trace) < 1e-5 * trace
    assert abs(res.classifier.kappa - kappa) < 1e-5 * kappa


def _convnext(torch_dtype=torch.float32):
    """torchvision's ConvNeXt at reduced widths (8 -> 16 channels, one block a stage; layer
    scale 0.5 so the last block's branch matters), random BatchNorm-free weights."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt
    torch.manual_seed(0)
    model = ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)],
                     layer_scale=0.5, num_classes=CLASSES).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():  # non-trivial LayerNorm affines, a classifier with margin
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.3, generator=g)
        model.classifier[2].weight.mul_(4.0)
    return model


@pytest.mark.parametrize("opset", [13, 17, "dynamo"])
def test_convnext_matches_autograd(opset, tmp_path):
    """ConvNeXt: the last block's pwconv2 (a MatMul on the NHWC map) -> layer scale -> +
    residual -> GAP -> LayerNorm2d -> Linear; opset 13 spells the LayerNorms out, the dynamo
    exporter the pooling's ``as_strided`` (Reshape to 1-D, Gather of indices computed from the
    batch size). Through the float32 pipeline, and fed float64 activations (the math alone)."""
    from onnxflat.measures import FlatnessAccumulator, Options

    from .test_autograd import torch_activations

    model = _convnext()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, 3, HW, HW, generator=g)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    dynamo = opset == "dynamo"
    proto = export(model, x[:2], opset=None if dynamo else opset, dynamo=dynamo)
    path = tmp_path / "convnext.onnx"
    path.write_bytes(proto.SerializeToString())
    head = onnxflat.analyze(path)
    (layer,) = head.layers
    assert layer.conv.op == "MatMul"
    # the as_strided Gather is proven an identity re-view (not a head op)
    assert ("Gather" in [n.op_type for n in proto.graph.node]) == dynamo
    kinds = [type(op).__name__ for op in head.after.ops]  # opset 13: LN scale, bias a Dense
    assert kinds in (["LayerNorm", "Dense"], ["LayerNorm", "Dense", "Dense"]), kinds
    res32 = onnxflat.measure(path, x.numpy(), y.numpy(), batch_size=4)
    acc = FlatnessAccumulator(head, Options())
    acc.update(torch_activations(model, proto, head, x), y.numpy())
    res64 = acc.result("m")
    with torch.no_grad():
        a = model.features[:-1].double()(x.double())
    tail = nn.Sequential(model.features[-1], model.avgpool, model.classifier)
    trace, kappa = hessian_measures(copy.deepcopy(tail), a, y, "0.0.block.5.weight")
    fc_trace, fc_kappa = hessian_measures(copy.deepcopy(tail), a, y, "2.2.weight")
    # float64: 1e-8, as the graph's constants stay float32 (GELU's sqrt(2), the LayerNorms'
    # epsilon 1e-6 as 9.99999997e-7): 2.1e-9 seen
    for res, tol in ((res32, 1e-5), (res64, 1e-8)):
        (got,) = res.layers
        # kappa sums filter terms of both signs (here 42x its size): float32 rounding is
        # relative to the terms
        scale = max(abs(kappa), float(np.abs(got.per_filter["kappa"]).sum()))
        assert abs(got.trace - trace) < tol * abs(trace), (got.trace, trace)
        assert abs(got.kappa - kappa) < tol * scale, (got.kappa, kappa)
        assert sum(got.per_filter["kappa"]) == pytest.approx(got.kappa, rel=1e-9, abs=1e-15)
        assert abs(res.classifier.trace - fc_trace) < tol * fc_trace
        assert abs(res.classifier.kappa - fc_kappa) < tol * fc_kappa
