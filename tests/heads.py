"""Head variants (channel-wise path x pooling x classifier x exporter x opset) as torch models.

Each :class:`Variant` builds a tiny CNN ``stem -> ReLU -> conv -> path -> pool -> reshape ->
classifier -> final``, exports it with a real torch exporter, and states what the analyzer
must report: the step functions of each layer, the pooling op and the classifier nodes.
``convs`` names the kernel parameters the autograd reference differentiates (one per layer,
in graph order); ``fc`` the classifier weight (None: no classifier).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

C_MID, C_OUT, CLASSES, HW = 3, 4, 3, 6


def _rand(shape, seed, lo=0.5, hi=1.5):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(shape, generator=g)


class ChannelPath(nn.Module):
    """A named channel-wise path ``a = path(z)`` on the conv output ``(N, C, H, W)``."""

    def __init__(self, kind: str, c: int = C_OUT, seed: int = 0):
        super().__init__()
        self.kind = kind
        # reference mode: the same function in a form torch's float64 double-backward supports
        self.reference = False
        self.register_buffer("scale", _rand((1, c, 1, 1), seed))
        self.register_buffer("shift", _rand((1, c, 1, 1), seed + 1, -0.5, 0.5))
        self.prelu = nn.PReLU(c) if "prelu" in kind else None
        if self.prelu is not None:
            with torch.no_grad():
                self.prelu.weight.copy_(_rand((c,), seed + 2, 0.05, 0.4))
        self.bn = nn.BatchNorm2d(c) if "bn" in kind else None
        if self.bn is not None:
            with torch.no_grad():
                self.bn.weight.copy_(_rand((c,), seed + 3))
                self.bn.bias.copy_(_rand((c,), seed + 4, -0.3, 0.3))
                self.bn.running_mean.copy_(_rand((c,), seed + 5, -0.2, 0.2))
                self.bn.running_var.copy_(_rand((c,), seed + 6))

    def forward(self, z):
        for part in self.kind.split("+"):
            z = self._one(part, z)
        return z

    def _one(self, part, z):
        if part == "bn":
            return self.bn(z)
        if part == "prelu":
            return self.prelu(z)
        if part == "affine":  # per-channel Mul and Add by constants
            return z * self.scale + self.shift
        if part == "standardize":  # per-channel Sub and Div by constants
            return (z - self.shift) / self.scale
        if part == "hardsigmoid_mul":  # torch has no double backward of hardsigmoid
            return z * ((z / 6 + 0.5).clamp(0, 1) if self.reference else F.hardsigmoid(z))
        if part == "sigmoid_mul":
            return z * torch.sigmoid(z)
        if part == "cast":  # float32 -> float64 -> float32 on the path
            return z if self.reference else z.double().float()
        if part == "swish":  # what an ONNX Swish(alpha=1.5) node computes
            return z * torch.sigmoid(1.5 * z)
        if part == "dropout":
            return F.dropout(z, 0.3, training=False)
        return {
            "relu": F.relu, "relu6": F.relu6, "leaky": lambda t: F.leaky_relu(t, 0.2),
            "hardswish": F.hardswish, "silu": F.silu, "gelu": F.gelu,
            "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "softplus": F.softplus,
            "elu": lambda t: F.elu(t, 0.7), "tanh": torch.tanh, "identity": lambda t: t,
            "clamp": lambda t: t.clamp(-0.5, 0.8), "selu": F.selu, "mish": F.mish,
        }[part](z)


class Net(nn.Module):
    """stem conv -> ReLU -> conv -> path -> pool -> reshape -> classifier -> final."""

    def __init__(self, path="relu", pool="gap", reshape="flatten", cls="linear", final=None,
                 k=3, residual=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, C_MID, 3, padding=1)
        self.conv = nn.Conv2d(C_MID, C_OUT, k, padding=k // 2)
        self.short = nn.Conv2d(3, C_OUT, 1) if residual else None
        self.path = ChannelPath(path, seed=seed)
        self.pool, self.reshape, self.cls, self.final = pool, reshape, cls, final
        if cls == "conv1x1":
            self.fc = nn.Conv2d(C_OUT, CLASSES, 1)
        elif cls != "none":
            self.fc = nn.Linear(C_OUT, CLASSES)
        with torch.no_grad():
            self.conv.weight.mul_(2.0)
            if cls != "none":
                self.fc.weight.mul_(3.0)

    def forward(self, x):
        z = self.conv(F.relu(self.stem(x)))
        a = self.path(z)
        if self.short is not None:  # residual add of a branch that does not depend on conv
            a = F.relu(a + self.short(x).tanh())
        keep = self.cls == "conv1x1"
        g = {"gap": lambda: F.adaptive_avg_pool2d(a, 1),
             "mean": lambda: a.mean((2, 3), keepdim=keep),
             "mean_keep": lambda: a.mean((-2, -1), keepdim=True),
             "avgpool": lambda: F.avg_pool2d(a, HW)}[self.pool]()
        if self.cls == "conv1x1":
            f = self.fc(g if g.dim() == 4 else g[:, :, None, None]).flatten(1)
        else:
            if g.dim() == 4:
                g = {"flatten": lambda: g.flatten(1), "view": lambda: g.view(g.shape[0], -1),
                     "squeeze": lambda: g.squeeze(-1).squeeze(-1),
                     "reshape": lambda: g.reshape(-1, C_OUT)}[self.reshape]()
            f = {"linear": lambda: self.fc(g),
                 "matmul_add": lambda: g @ self.fc.weight.t() + self.fc.bias,
                 "addmm": lambda: torch.addmm(self.fc.bias, g, self.fc.weight.t(), beta=0.5,
                                              alpha=2.0),
                 "none": lambda: g}[self.cls]()
        if self.final == "softmax":
            return torch.softmax(f, 1)
        if self.final == "log_softmax":
            return torch.log_softmax(f, 1)
        return f


class Inception(nn.Module):
    """Two convs of one input, concatenated on channels, then BN, ReLU, GAP, linear."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, C_MID, 3, padding=1)
        self.b1 = nn.Conv2d(C_MID, 2, 1)
        self.b3 = nn.Conv2d(C_MID, 3, 3, padding=1)
        self.pool_branch = nn.Conv2d(C_MID, 2, 1)
        self.path = ChannelPath("bn+relu", c=7, seed=seed)
        self.fc = nn.Linear(7, CLASSES)

    def forward(self, x):
        h = F.relu(self.stem(x))
        # The pooled branch is not channel-wise (MaxPool): that conv is rejected, the others kept.
        p = self.pool_branch(F.max_pool2d(h, 3, 1, 1))
        a = self.path(torch.cat([self.b1(h), self.b3(h), F.max_pool2d(p, 3, 1, 1)], 1))
        return self.fc(F.adaptive_avg_pool2d(a, 1).flatten(1))


class Dense(nn.Module):
    """A DenseNet transition: the new conv's output is a channel slice of the GAP input."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, C_MID, 3, padding=1)
        self.conv = nn.Conv2d(C_MID, C_OUT, 3, padding=1)
        self.path = ChannelPath("bn+relu", c=C_MID + C_OUT, seed=seed)
        self.fc = nn.Linear(C_MID + C_OUT, CLASSES)

    def forward(self, x):
        h = F.relu(self.stem(x))
        a = self.path(torch.cat([h, self.conv(h)], 1))
        return self.fc(F.adaptive_avg_pool2d(a, 1).flatten(1))


@dataclass
class Variant:
    name: str
    build: object
    steps: tuple[str, ...]  # fns of the first layer's steps, in order
    pool: str = "GlobalAveragePool"
    dynamo: bool = False
    opset: int | None = None
    keep_bn: bool = True  # export without constant folding (BN stays a node)
    convs: tuple[str, ...] = ("conv.weight",)
    fc: str | None = "fc.weight"
    softmax: str | None = None  # op of a trailing softmax node
    offsets: tuple[int, ...] | None = None  # channel offset of each layer (None: all 0)
    tol: float = 1e-5
    # the classifier measures are w.r.t. the effective weight fc_scale * fc.weight (Gemm alpha)
    fc_scale: float = 1.0
    extra: dict = field(default_factory=dict)


V = Variant
VARIANTS = [
    # TorchScript exporter, opsets 11..20: channel-wise paths
    V("ts10_relu6_clip_attrs", lambda: Net("relu6"), ("clip",), opset=10),
    V("ts11_relu6_clip_inputs", lambda: Net("relu6"), ("clip",), opset=11),
    V("ts12_bn_leaky_view", lambda: Net("bn+leaky", reshape="view"), ("affine", "leaky_relu"),
      opset=12),
    V("ts13_prelu_mean", lambda: Net("prelu", pool="mean"), ("prelu",), pool="ReduceMean",
      opset=13),
    V("ts14_hardswish_squeeze", lambda: Net("hardswish", reshape="squeeze"), ("hard_swish",),
      opset=14),
    V("ts15_hardsigmoid_mul", lambda: Net("hardsigmoid_mul"), ("hard_sigmoid", "mul"),
      opset=15),
    V("ts16_silu_matmul_add", lambda: Net("sigmoid_mul", cls="matmul_add"), ("sigmoid", "mul"),
      opset=16),
    V("ts17_erf_gelu_softmax", lambda: Net("gelu", final="softmax"),
      ("div", "erf", "add", "mul", "mul"), opset=17, softmax="Softmax"),
    V("ts18_mean_keepdims_reshape", lambda: Net("softplus", pool="mean_keep", reshape="reshape"),
      ("softplus",), pool="ReduceMean", opset=18),
    V("ts19_elu_tanh_chain", lambda: Net("elu+tanh"), ("elu", "tanh"), opset=19),
    V("ts20_gelu_op_log_softmax", lambda: Net("gelu_tanh", final="log_softmax"), ("gelu",),
      opset=20, softmax="LogSoftmax"),
    V("ts17_tanh_gelu_decomposed", lambda: Net("gelu_tanh"),
      ("mul", "mul", "mul", "add", "mul", "tanh", "add", "mul", "mul"), opset=17),
    V("ts17_affine_standardize", lambda: Net("affine+standardize+relu"),
      ("mul", "add", "sub", "div", "relu"), opset=17),
    V("ts17_avgpool_whole_map", lambda: Net("relu", pool="avgpool"), ("relu",),
      pool="AveragePool", opset=17),
    V("ts17_addmm_alpha_beta", lambda: Net("clamp", cls="addmm"), ("clip",), opset=17,
      fc_scale=2.0),
    V("ts17_conv1x1_classifier", lambda: Net("silu", cls="conv1x1"), ("sigmoid", "mul"),
      opset=17),
    V("ts17_no_classifier", lambda: Net("bn+relu", cls="none"), ("affine", "relu"), fc=None,
      opset=17),
    V("ts17_cast_selu", lambda: Net("cast+dropout+selu"), ("identity", "identity", "selu"),
      opset=17),
    V("ts17_residual_projection", lambda: Net("bn", residual=True),
      ("affine", "add", "relu"), convs=("conv.weight", "short.weight"), opset=17),
    V("ts18_mish", lambda: Net("mish"), ("softplus", "tanh", "mul"), opset=18),
    V("ts21_relu_flatten", lambda: Net("relu"), ("relu",), opset=21),
    V("ts17_inception_concat", lambda: Inception(), ("identity", "affine", "relu"),
      convs=("b1.weight", "b3.weight"), offsets=(0, 2), opset=17),
    V("ts17_densenet_slice", lambda: Dense(), ("identity", "affine", "relu"), offsets=(C_MID,),
      opset=17),
    # dynamo exporter (onnxscript; BN folded by its optimizer, ReduceMean axes as an input)
    V("dynamo_hardswish_bn", lambda: Net("hardswish+bn"), ("hard_swish", "affine"), dynamo=True,
      pool="ReduceMean"),
    V("dynamo_prelu_mean_squeeze", lambda: Net("prelu", pool="mean", reshape="squeeze"),
      ("prelu",), dynamo=True, pool="ReduceMean"),
    V("dynamo_gelu_matmul_softmax", lambda: Net("gelu", cls="matmul_add", final="softmax"),
      ("gelu",), dynamo=True, pool="ReduceMean", softmax="Softmax"),
    V("dynamo_residual_avgpool", lambda: Net("relu6", pool="avgpool", residual=True),
      ("clip", "add", "relu"), convs=("conv.weight", "short.weight"), dynamo=True,
      pool="AveragePool"),
    V("dynamo_densenet_slice", lambda: Dense(), ("identity", "affine", "relu"),
      offsets=(C_MID,), dynamo=True, pool="ReduceMean"),
    V("dynamo_opset18_elu_standardize", lambda: Net("standardize+elu", pool="mean_keep"),
      ("sub", "div", "elu"), dynamo=True, opset=18, pool="ReduceMean"),
    V("dynamo_opset21_silu_conv1x1", lambda: Net("silu", cls="conv1x1"), ("sigmoid", "mul"),
      dynamo=True, opset=21, pool="ReduceMean"),
]


_exports: dict = {}


def exported_variant(v: Variant):
    """(torch model, ONNX model) of a variant, exported once per test session.

    The dynamo exporter folds a BatchNormalization that directly follows the conv into the
    kernel, so variants for it put BN elsewhere (the reference differentiates the file's kernel).
    """
    if v.name not in _exports:
        from .zoo import export
        model = v.build().eval()
        x = torch.randn(2, 3, HW, HW, generator=torch.Generator().manual_seed(0))
        _exports[v.name] = (model, export(model, x, dynamo=v.dynamo, keep_bn=v.keep_bn,
                                          opset=v.opset))
    return _exports[v.name]


def reference_model(model: nn.Module) -> nn.Module:
    """A copy that computes the logits (no trailing softmax) in autograd-friendly form."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, ChannelPath):
            m.reference = True
        if isinstance(m, Net):
            m.final = None
    return ref
