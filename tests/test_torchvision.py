"""torchvision's own MobileNetV3 (small and large; random init, width 0.1, 32x32 inputs):
`Linear -> Hardswish -> Dropout -> Linear` after the pooling, measured against float64
autograd for the last conv and the classifier. The reference differentiates the model from
the last conv block on, fed that block's input computed by torch (the same function of the
kernel: exact, and fast)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import onnxflat
from onnxflat.graph.head import Dense, Pointwise

from .reference import hessian_measures
from .zoo import export


def _torchvision():
    """torchvision's model definitions; a wheel whose C ops do not load (a CUDA build on a CPU
    machine) gets stand-in op schemas, which the models never call."""
    import sys
    try:
        import torchvision
        return torchvision
    except ImportError:
        pytest.skip("torchvision is not installed")
    except RuntimeError:
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _torchvision.lib = lib  # keep the definitions alive
        import torchvision
        return torchvision


torchvision = _torchvision()

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
