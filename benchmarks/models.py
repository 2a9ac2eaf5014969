"""The benchmark models (issues 7 and 13) (torch definitions in nets.py), exported once.

(a) ``resnet18_cifar``: ResNet-18 CIFAR variant, 3x32x32, 10 classes, last conv 512->512 3x3
    at 4x4. (b) ``resnet50``: ResNet-50 (bottlenecks 3-4-6-3), 3x224x224, 1000 classes, last
    conv 1x1 512->2048 at 7x7. (c) ``efficientnet_b0``: EfficientNet-B0 (MBConv with SiLU and
    squeeze-excitation), 3x224x224, head conv 1x1 320->1280 -> SiLU -> GAP -> 1000 classes.
    (d) ``mobilenet_v3_large_style``: MobileNetV3-Large's stages, head conv 1x1 160->960 ->
    Hardswish -> GAP -> Linear 960->1280 -> Hardswish -> Linear 1280->1000 (non-linear head).
    (e) ``convnext_tiny``: ConvNeXt-T, 3x224x224, last layer the pointwise MatMul 3072->768 of
    the last block at 7x7 -> layer scale -> + residual -> GAP -> LayerNorm -> 1000 classes.

Weights are random (seeded), BatchNorm statistics random and folded into the convs by the
exporter, as in a deployed file; data are standard-normal images with uniform random labels.
Speed does not depend on the values; the measures are exact either way.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"


@dataclass(frozen=True)
class Spec:
    """One benchmark model: builder, input size, classes, default N, last-conv parameter."""

    name: str  # also the key of benchmarks.nets.NETS
    hw: int
    classes: int
    n: int
    conv_param: str  # the kernel the measures (and Hutchinson) refer to
    positions: int  # P, output positions of that conv

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}.onnx"

    def torch_model(self):
        """The seeded torch model (BatchNorm not folded)."""
        import torch

        from . import nets

        torch.manual_seed(0)
        model = nets.NETS[self.name]().eval()
        for m in model.modules():  # Kaiming init; the small last-BN scale keeps deep stacks O(1)
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        return model

    def data(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, 3, self.hw, self.hw), dtype=np.float32)
        return x, rng.integers(0, self.classes, n).astype(np.int64)


SPECS = {
    "a": Spec("resnet18_cifar", 32, 10, 1024, "layers.7.c2.weight", 16),
    "b": Spec("resnet50", 224, 1000, 128, "layers.15.c3.weight", 49),
    "c": Spec("efficientnet_b0", 224, 1000, 128, "head.0.weight", 49),
    "d": Spec("mobilenet_v3_large_style", 224, 1000, 128, "head.0.weight", 49),
    "e": Spec("convnext_tiny", 224, 1000, 128, "features.25.pw2.weight", 49),
}


def folded(key: str):
    """The torch model of spec ``key`` with BatchNorm folded, as in its ONNX file."""
    from .nets import fold_bn

    return fold_bn(SPECS[key].torch_model())


def export(key: str) -> Path:
    """The ONNX file of spec ``key`` (exported on first use, then cached)."""
    import onnx
    import torch

    spec = SPECS[key]
    path = spec.path
    if not path.exists():
        model = folded(key)
        CACHE.mkdir(exist_ok=True)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(2, 3, spec.hw, spec.hw),), buf, dynamo=False,
                              input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "n"}})
        onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
        path.write_bytes(buf.getvalue())
    return path


def flops_per_sample(key: str) -> float:
    """Multiply-adds of one forward pass of the convs and linear layers."""
    import torch
    import torch.nn as nn

    model = SPECS[key].torch_model()
    total, hw = 0.0, SPECS[key].hw
    hooks = []

    def hook(m, inp, out):
        nonlocal total
        total += m.weight[0].numel() * out.numel() / out.shape[0]

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, hw, hw))
    for h in hooks:
        h.remove()
    return total
