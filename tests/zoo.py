"""Small torch CNNs with a conv-GAP-linear head, exported to ONNX for the tests.

Each case names the parameters the reference differentiates: ``convs`` (kernel parameter
names, one per expected layer, in graph order) and ``fc`` (classifier weight name).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _bn(c: int, seed: int, dims: int = 2) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    bn = BATCHNORM[dims](c)
    with torch.no_grad():
        bn.weight.copy_(0.5 + torch.rand(c, generator=g))
        bn.bias.copy_(0.3 * torch.randn(c, generator=g))
        bn.running_mean.copy_(0.2 * torch.randn(c, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(c, generator=g))
    return bn


class TinyCnn(nn.Module):
    """stem conv -> ReLU -> last conv -> channel-wise ops -> pooling -> classifier."""

    def __init__(self, act=None, *, c_in=3, c_mid=4, c_out=6, classes=5, k=3, stride=1, pad=1,
                 dilation=1, groups=1, bias=True, bn=None, pool="gap", matmul=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(c_in, c_mid, 3, padding=1)
        self.conv = nn.Conv2d(c_mid, c_out, k, stride=stride, padding=pad, dilation=dilation,
                              groups=groups, bias=bias)
        self.bn = _bn(c_out, seed + 1) if bn else None
        self.bn_where = bn
        self.act = act if act is not None else nn.ReLU()
        self.pool = pool
        self.matmul = matmul
        self.fc = nn.Linear(c_out, classes)
        with torch.no_grad():
            self.conv.weight.mul_(2.0)
            self.fc.weight.mul_(3.0)

    def features(self, x):
        h = F.relu(self.stem(x))
        z = self.conv(h)
        if self.bn_where == "before":
            z = self.bn(z)
        a = self.act(z)
        if self.bn_where == "after":
            a = self.bn(a)
        return a

    def forward(self, x):
        a = self.features(x)
        g = a.mean(dim=(2, 3)) if self.pool == "mean" else F.adaptive_avg_pool2d(a, 1).flatten(1)
        if self.matmul:
            return torch.matmul(g, self.fc.weight.t()) + self.fc.bias
        return self.fc(g)


class Residual(nn.Module):
    """A ResNet basic block as the last stage; ``project`` adds a 1x1 conv shortcut."""

    def __init__(self, project=False, classes=5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv1 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn1 = _bn(6, seed + 1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn2 = _bn(6, seed + 2)
        self.short = nn.Conv2d(4, 6, 1, bias=False) if project else None
        self.fc = nn.Linear(6, classes)
        with torch.no_grad():
            self.fc.weight.mul_(3.0)

    def forward(self, x):
        h = F.relu(self.stem(x))
        s = self.short(h) if self.short is not None else torch.cat([h, h[:, :2]], 1)
        out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h))))) + s)
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


class HeadNd(nn.Module):
    """A 1-D or 3-D CNN: stem ConvNd -> ReLU -> conv -> BN -> act -> AdaptiveAvgPoolNd(1)
    (or a mean over the spatial axes) -> Linear."""

    def __init__(self, dims, act, *, c_in=2, c_mid=4, c_out=6, classes=5, k=3, stride=1,
                 pad=1, dilation=1, groups=1, pool="gap", channel_last=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.dims, self.pool, self.channel_last = dims, pool, channel_last
        self.stem = CONV[dims](c_in, c_mid, 3, padding=1)
        self.conv = CONV[dims](c_mid, c_out, k, stride=stride, padding=pad, dilation=dilation,
                               groups=groups)
        self.bn = _bn(c_out, seed + 1, dims)
        self.act = act
        self.fc = nn.Linear(c_out, classes)
        with torch.no_grad():
            self.conv.weight.mul_(2.0)
            self.fc.weight.mul_(3.0)

    def forward(self, x):
        z = self.bn(self.conv(F.relu(self.stem(x))))
        if self.channel_last:  # N, spatial..., C, then a mean over the spatial axes
            a = self.act(z.permute(0, *range(2, 2 + self.dims), 1))
            return self.fc(a.mean(tuple(range(1, 1 + self.dims))))
        a = self.act(z)
        if self.pool == "mean":
            g = a.mean(tuple(range(2, 2 + self.dims)))
        else:
            pool = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d,
                    3: F.adaptive_avg_pool3d}[self.dims]
            g = pool(a, 1).flatten(1)
        return self.fc(g)

    def fold_bn(self):
        self.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(self.conv, self.bn)
        self.bn = nn.Identity()


class ResidualNd(nn.Module):
    """A ResNet basic block as the last stage of a 1-D or 3-D CNN: ``act(bn2(conv2(relu(
    bn1(conv1(h))))) + shortcut(h))``, the shortcut a strided 1x..x1 conv with BN
    (``project``) or the identity."""

    def __init__(self, dims, act, *, project=True, width=4, stride=2, dilation=1, groups=1,
                 classes=5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        conv = CONV[dims]
        stem = 4 if project else width
        self.stem = conv(3, stem, 3, padding=1)
        self.conv1 = conv(stem, width, 3, stride=stride if project else 1, padding=1,
                          bias=False)
        self.bn1 = _bn(width, seed + 1, dims)
        self.conv2 = conv(width, width, 3, padding=dilation, dilation=dilation, groups=groups,
                          bias=False)
        self.bn2 = _bn(width, seed + 2, dims)
        self.short = conv(stem, width, 1, stride=stride, bias=False) if project else None
        self.bn_s = _bn(width, seed + 3, dims) if project else None
        self.act = act
        self.fc = nn.Linear(width, classes)
        with torch.no_grad():
            self.fc.weight.mul_(3.0)

    def forward(self, x):
        h = F.relu(self.stem(x))
        s = self.bn_s(self.short(h)) if self.short is not None else h
        out = self.act(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h))))) + s)
        return self.fc(out.mean(tuple(range(2, out.dim()))))

    def fold_bn(self):
        fuse = torch.nn.utils.fusion.fuse_conv_bn_eval
        self.conv1, self.conv2 = fuse(self.conv1, self.bn1), fuse(self.conv2, self.bn2)
        self.bn1 = self.bn2 = nn.Identity()
        if self.short is not None:
            self.short, self.bn_s = fuse(self.short, self.bn_s), nn.Identity()
class ConvNeXtBlock(nn.Module):
    """A ConvNeXt stage's last block as the head: patchify stem -> depthwise 7x7 -> NHWC ->
    LayerNorm -> Linear (pwconv1) -> act -> Linear (pwconv2: the head layer, a MatMul over
    the channel axis) -> layer scale -> NCHW -> residual add -> pooling -> classifier.
    ``scale_nchw``: the layer scale after the permute back, a ``(C, 1, 1)`` constant
    (torchvision's CNBlock), else before it (the paper, timm)."""

    def __init__(self, act=None, *, c=6, expand=4, classes=5, scale_nchw=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, c, 2, stride=2)
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1 = nn.Linear(c, expand * c)
        self.act = act if act is not None else nn.GELU()
        self.pw2 = nn.Linear(expand * c, c)
        self.gamma = nn.Parameter(0.5 + torch.rand(c))
        self.scale_nchw = scale_nchw
        self.fc = nn.Linear(c, classes)
        with torch.no_grad():
            self.pw2.weight.mul_(2.0)
            self.fc.weight.mul_(3.0)

    def forward(self, x):
        h = self.stem(x)
        y = self.pw2(self.act(self.pw1(self.norm(self.dw(h).permute(0, 2, 3, 1)))))
        if self.scale_nchw:
            y = self.gamma[:, None, None] * y.permute(0, 3, 1, 2)
        else:
            y = (self.gamma * y).permute(0, 3, 1, 2)
        return self.fc(F.adaptive_avg_pool2d(h + y, 1).flatten(1))


class WithSoftmax(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.softmax(self.inner(x), dim=1)


@dataclass
class Case:
    name: str
    build: object
    convs: list[str]
    fc: str = "fc.weight"
    softmax: bool = False
    dynamo: bool = False
    keep_bn: bool = False
    fixed_batch: bool = False
    input_hw: int = 8
    # one sample's shape; None: a 2-D image (3, input_hw, input_hw)
    sample: tuple[int, ...] | None = None
    # The exported graph writes the activation's constants (sqrt 2, 0.044715, ...) in float32,
    # so it computes a function 1e-8 away from torch's float64 one: the float64 comparison
    # of such cases can only reach that.
    f64_tol: float = 1e-10

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.sample or (3, self.input_hw, self.input_hw)


CASES = [
    Case("stride2_pad_relu", lambda: TinyCnn(stride=2, pad=1), ["conv.weight"]),
    Case("dilation_nobias_relu6_mean", lambda: TinyCnn(nn.ReLU6(), dilation=2, pad=2, bias=False,
                                                    pool="mean"), ["conv.weight"]),
    Case("groups_bn_before_silu", lambda: TinyCnn(nn.SiLU(), groups=2, bn="before", c_mid=4,
                                               c_out=6), ["conv.weight"], keep_bn=True),
    Case("bn_after_relu", lambda: TinyCnn(bn="after"), ["conv.weight"]),
    Case("residual_identity", lambda: Residual(False), ["conv2.weight"], keep_bn=True),
    Case("residual_projection", lambda: Residual(True), ["short.weight", "conv2.weight"]),
    Case("gelu_softmax", lambda: TinyCnn(nn.GELU(), pad=0), ["conv.weight"], softmax=True,
         f64_tol=1e-8),
    Case("tanh_gelu_matmul_add", lambda: TinyCnn(nn.GELU(approximate="tanh"), matmul=True),
         ["conv.weight"], f64_tol=1e-7),
    Case("leaky_depthwise", lambda: TinyCnn(nn.LeakyReLU(0.1), groups=4, c_mid=4, c_out=8),
         ["conv.weight"], f64_tol=1e-8),  # alpha is the float32 0.1
    Case("tanh_1x1", lambda: TinyCnn(nn.Tanh(), k=1, pad=0), ["conv.weight"]),
    Case("hardswish_stride2_nopad", lambda: TinyCnn(nn.Hardswish(), stride=2, pad=0, k=3),
         ["conv.weight"], f64_tol=1e-7),  # onnx's reference HardSwish uses float32 1/6
    Case("elu_softplus_bn", lambda: TinyCnn(nn.Sequential(nn.ELU(), nn.Softplus()), bn="before"),
         ["conv.weight"], keep_bn=True),
    Case("dynamo_silu_bn", lambda: TinyCnn(nn.SiLU(), bn="before"), ["conv.weight"], dynamo=True),
    Case("dynamo_residual_gelu_mean",
         lambda: TinyCnn(nn.GELU(), pool="mean", dilation=2, pad=2), ["conv.weight"], dynamo=True,
         f64_tol=1e-8),
    Case("fixed_batch_1", lambda: TinyCnn(nn.ReLU6(), stride=2), ["conv.weight"],
         fixed_batch=True),
    # 1-D (sequences): (N, 2, 16); 3-D (clips, volumes): (N, 3, 4, 6, 6)
    Case("conv1d_stride_dilation_relu",
         lambda: HeadNd(1, nn.ReLU(), stride=2, pad=3, dilation=2, k=4), ["conv.weight"],
         sample=(2, 16)),
    Case("conv1d_groups_silu_bn_mean", lambda: HeadNd(1, nn.SiLU(), groups=2, pool="mean"),
         ["conv.weight"], keep_bn=True, sample=(2, 16)),
    Case("dynamo_conv1d_relu_groups", lambda: HeadNd(1, nn.ReLU(), groups=2, stride=3, pad=0),
         ["conv.weight"], dynamo=True, sample=(2, 16)),
    Case("dynamo_conv1d_gelu", lambda: HeadNd(1, nn.GELU(), dilation=3, pad=2, k=2),
         ["conv.weight"], dynamo=True, sample=(2, 16), f64_tol=1e-8),
    Case("conv3d_channel_last_gelu_stride",
         lambda: HeadNd(3, nn.GELU(), c_out=4, stride=2, channel_last=True), ["conv.weight"],
         sample=(2, 4, 5, 6), f64_tol=1e-8),
    Case("conv3d_residual_projection_relu", lambda: ResidualNd(3, nn.ReLU()),
         ["short.weight", "conv2.weight"], sample=(3, 4, 6, 6)),
    Case("conv3d_residual_identity_silu_bn",
         lambda: ResidualNd(3, nn.SiLU(), project=False, dilation=2, groups=2),
         ["conv2.weight"], keep_bn=True, sample=(3, 4, 6, 6)),
    Case("dynamo_conv3d_residual_projection_silu", lambda: ResidualNd(3, nn.SiLU()),
         ["short.weight", "conv2.weight"], dynamo=True, sample=(3, 4, 6, 6)),
    Case("dynamo_conv3d_residual_identity_relu",
         lambda: ResidualNd(3, nn.ReLU(), project=False, groups=4, dilation=2),
         ["conv2.weight"], dynamo=True, sample=(3, 4, 6, 6)),
    # GELU before the head layer: onnx's reference Gelu (its function body) has float32
    # constants, so the float64 patches it computes are 1e-10 away from torch's
    Case("convnext_pointwise_gelu", lambda: ConvNeXtBlock(nn.GELU()), ["pw2.weight"],
         f64_tol=1e-8),
    Case("convnext_pointwise_relu_scale_nchw", lambda: ConvNeXtBlock(nn.ReLU(), scale_nchw=True),
         ["pw2.weight"]),
    Case("dynamo_convnext_pointwise_gelu", lambda: ConvNeXtBlock(nn.GELU(), scale_nchw=True),
         ["pw2.weight"], dynamo=True, f64_tol=1e-8),
    Case("dynamo_convnext_pointwise_relu", lambda: ConvNeXtBlock(nn.ReLU()), ["pw2.weight"],
         dynamo=True),
]


_exported: dict = {}


def exported_case(case: Case) -> tuple[nn.Module, onnx.ModelProto]:
    """(torch model, exported ONNX model) of a case, exported once per process."""
    if case.name not in _exported:
        model = case.build().eval()
        if not case.keep_bn:  # fold first, so the file and the reference share weights
            model = fold_bn_into_conv(model)
        x = torch.randn(4, *case.sample_shape)
        _exported[case.name] = (model, export(model, x, softmax=case.softmax,
                                              dynamo=case.dynamo, keep_bn=case.keep_bn,
                                              fixed_batch=case.fixed_batch))
    return _exported[case.name]


def fold_bn_into_conv(model: nn.Module) -> nn.Module:
    """The model as the TorchScript exporter sees it with constant folding (BN fused)."""
    if hasattr(model, "fold_bn"):
        model.fold_bn()
    if isinstance(model, TinyCnn) and model.bn_where == "before":
        model.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(model.conv, model.bn)
        model.bn_where, model.bn = None, None
    if isinstance(model, Residual):
        model.conv2 = torch.nn.utils.fusion.fuse_conv_bn_eval(model.conv2, model.bn2)
        model.conv1 = torch.nn.utils.fusion.fuse_conv_bn_eval(model.conv1, model.bn1)
        model.bn1 = model.bn2 = nn.Identity()
    return model


def export(model: nn.Module, x: torch.Tensor, *, softmax=False, dynamo=False, keep_bn=False,
           fixed_batch=False, opset=None, dynamic_hw=False) -> onnx.ModelProto:
    """Export with the real torch exporter (``opset``: its default when None;
    ``dynamic_hw``: free height and width in the TorchScript export)."""
    model = model.eval()
    wrapped = WithSoftmax(model) if softmax else model
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            prog = torch.onnx.export(wrapped, (x,), dynamo=True, verbose=False,
                                     opset_version=opset,
                                     dynamic_shapes=None if fixed_batch else
                                     {"x": {0: torch.export.Dim("n")}})
            return prog.model_proto
        torch.onnx.export(wrapped, (x[:1] if fixed_batch else x,), buf, dynamo=False,
                          input_names=["x"], output_names=["out"],
                          dynamic_axes=None if fixed_batch else
                          {"x": {0: "n", 2: "h", 3: "w"} if dynamic_hw else {0: "n"}},
                          do_constant_folding=not keep_bn, opset_version=opset)
    return onnx.load_from_string(buf.getvalue())


def randomized(src, dst, seed: int = 0):
    """The ONNX model at ``src`` with every initializer redrawn at random (scaled by 1/sqrt of
    its fan-in): an untrained network of the same structure, saved at ``dst``."""
    import numpy as np
    from onnx import numpy_helper

    proto = onnx.load(str(src))
    rng = np.random.default_rng(seed)
    for t in proto.graph.initializer:
        a = numpy_helper.to_array(t)
        fan_in = a[0].size if a.ndim > 1 else 1
        t.CopyFrom(numpy_helper.from_array(
            (rng.standard_normal(a.shape) / np.sqrt(fan_in)).astype(a.dtype), t.name))
    onnx.save(proto, str(dst))
    return dst


def torchvision_ops() -> None:
    """Declare torchvision's custom ops when its compiled extension cannot load (a wheel
    built for another device): its pure-Python parts (models, transforms) import after that."""
    try:
        import torchvision  # noqa: F401
    except RuntimeError:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        torchvision_ops.lib = lib  # the definitions live as long as the library object
