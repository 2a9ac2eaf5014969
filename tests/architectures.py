"""Small-width torchvision-style architectures (same module structure and head, few channels).

Untrained weights; BatchNorm statistics are randomised so BN is not an identity. Each entry of
``ARCHS`` states what the analyzer must find: the qualifying head conv(s) by module path and
the steps after each, or the refusal (node op type and reason fragment).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

HW = 32


def bn(c):
    m = nn.BatchNorm2d(c)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.3, 0.3)
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
    return m


def conv_bn_act(ci, co, k=3, s=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(ci, co, k, s, k // 2, groups=groups, bias=False), bn(co)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


# -------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    def __init__(self, ci, co, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(ci, co, 3, stride, 1, bias=False)
        self.bn1 = bn(co)
        self.conv2 = nn.Conv2d(co, co, 3, 1, 1, bias=False)
        self.bn2 = bn(co)
        self.downsample = (nn.Sequential(nn.Conv2d(ci, co, 1, stride, bias=False), bn(co))
                           if stride != 1 or ci != co else None)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + idt)


class ResNet(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False), bn(8)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 12, 2), BasicBlock(12, 12))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, classes)

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# -------------------------------------------------------------------------------- MobileNetV2
class InvertedResidual(nn.Module):
    def __init__(self, ci, co, stride, expand, act=nn.ReLU6, se=None):
        super().__init__()
        hid = ci * expand
        layers = [conv_bn_act(ci, hid, 1, act=act)] if expand != 1 else []
        layers += [conv_bn_act(hid, hid, 3, stride, groups=hid, act=act)]
        if se:
            layers += [se(hid)]
        layers += [conv_bn_act(hid, co, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and ci == co

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_act(3, 8, 3, 2, act=nn.ReLU6), InvertedResidual(8, 8, 1, 1),
            InvertedResidual(8, 12, 2, 4), InvertedResidual(12, 12, 1, 4),
            conv_bn_act(12, 24, 1, act=nn.ReLU6))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(24, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# ------------------------------------------------------------------ MobileNetV3, EfficientNet
class SqueezeExcitation(nn.Module):
    def __init__(self, c, squeeze, act=nn.ReLU, scale=nn.Sigmoid):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.act, self.scale = act(), scale()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.scale(self.fc2(self.act(self.fc1(s))))


class SEInvertedNet(nn.Module):
    """MobileNetV3 / EfficientNet layout: inverted residuals with squeeze-excitation gates,
    a 1x1 head conv with ``act``, the GAP, then ``classifier``."""

    def __init__(self, act, block_act, se_act, se_scale, stride1, expand2, classifier):
        super().__init__()
        se = lambda c: SqueezeExcitation(c, max(c // 4, 2), se_act, se_scale)  # noqa: E731
        self.features = nn.Sequential(
            conv_bn_act(3, 8, 3, 2, act=act),
            InvertedResidual(8, 8, stride1, 1, act=block_act, se=se),
            InvertedResidual(8, 12, 2, expand2, act=act, se=se),
            conv_bn_act(12, 24, 1, act=act))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def MobileNetV3(classes=5):  # noqa: N802 - a model constructor, like torchvision's
    """Its head after the pooling is an MLP (Linear, Hardswish, Dropout, Linear)."""
    return SEInvertedNet(nn.Hardswish, nn.ReLU, nn.ReLU, nn.Hardsigmoid, 2, 3, nn.Sequential(
        nn.Linear(24, 32), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(32, classes)))


def EfficientNet(classes=5):  # noqa: N802
    return SEInvertedNet(nn.SiLU, nn.SiLU, nn.SiLU, nn.Sigmoid, 1, 4,
                         nn.Sequential(nn.Dropout(0.2), nn.Linear(24, classes)))


# -------------------------------------------------------------------------------- DenseNet
class DenseLayer(nn.Module):
    def __init__(self, ci, growth):
        super().__init__()
        self.norm1, self.conv1 = bn(ci), nn.Conv2d(ci, 2 * growth, 1, bias=False)
        self.norm2, self.conv2 = bn(2 * growth), nn.Conv2d(2 * growth, growth, 3, 1, 1,
                                                           bias=False)

    def forward(self, feats):
        h = self.conv1(F.relu(self.norm1(torch.cat(feats, 1))))
        return self.conv2(F.relu(self.norm2(h)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n, ci, growth):
        super().__init__({f"denselayer{i + 1}": DenseLayer(ci + i * growth, growth)
                          for i in range(n)})

    def forward(self, x):
        feats = [x]
        for layer in self.values():
            feats.append(layer(feats))
        return torch.cat(feats, 1)


class DenseNet(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, 8, 7, 2, 3, bias=False))
        self.features.add_module("norm0", bn(8))
        self.features.add_module("relu0", nn.ReLU())
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        self.features.add_module("denseblock1", DenseBlock(2, 8, 4))
        self.features.add_module("transition1", nn.Sequential(
            bn(16), nn.ReLU(), nn.Conv2d(16, 8, 1, bias=False), nn.AvgPool2d(2, 2)))
        self.features.add_module("denseblock2", DenseBlock(2, 8, 4))
        self.features.add_module("norm5", bn(16))
        self.classifier = nn.Linear(16, classes)

    def forward(self, x):
        out = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1))


# -------------------------------------------------------------------------------- RegNet
class ResBottleneckBlock(nn.Module):
    def __init__(self, ci, co, stride, group_width=4):
        super().__init__()
        self.proj = (conv_bn_act(ci, co, 1, stride, act=None)
                     if stride != 1 or ci != co else None)
        self.f = nn.Sequential(conv_bn_act(ci, co, 1),
                               conv_bn_act(co, co, 3, stride, groups=co // group_width),
                               SqueezeExcitation(co, max(ci // 4, 2)),
                               conv_bn_act(co, co, 1, act=None))

    def forward(self, x):
        return F.relu((x if self.proj is None else self.proj(x)) + self.f(x))


class RegNet(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.stem = conv_bn_act(3, 8, 3, 2)
        self.trunk_output = nn.Sequential(ResBottleneckBlock(8, 8, 2),
                                          ResBottleneckBlock(8, 16, 2),
                                          ResBottleneckBlock(16, 16, 1))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = self.avgpool(self.trunk_output(self.stem(x)))
        return self.fc(x.flatten(start_dim=1))


# -------------------------------------------------------------------------------- SqueezeNet
class Fire(nn.Module):
    def __init__(self, ci, squeeze, expand):
        super().__init__()
        self.squeeze = nn.Conv2d(ci, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(x)), F.relu(self.expand3x3(x))], 1)


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1: the classifier is a 1x1 conv to the classes, ReLU, then the GAP."""

    def __init__(self, classes=5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, ceil_mode=True), Fire(8, 4, 6),
                                      Fire(12, 4, 6))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(12, classes, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# -------------------------------------------------------------------------------- ConvNeXt
class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(c, c, 7, padding=3, groups=c))
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.layer_scale = nn.Parameter(torch.full((c, 1, 1), 0.5))

    def forward(self, x):
        h = self.norm(self.block(x).permute(0, 2, 3, 1))
        h = self.pw2(F.gelu(self.pw1(h))).permute(0, 3, 1, 2)
        return x + self.layer_scale * h


class ConvNeXt(nn.Module):
    def __init__(self, classes=5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 4, 4), LayerNorm2d(8, eps=1e-6)), CNBlock(8),
            nn.Sequential(LayerNorm2d(8, eps=1e-6), nn.Conv2d(8, 16, 2, 2)), CNBlock(16))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(16, eps=1e-6), nn.Flatten(1),
                                        nn.Linear(16, classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


@dataclass
class Arch:
    name: str
    build: object
    # qualifying head: {conv node name fragment: step fns}; None for a refusal
    layers: dict | None = None
    classifier: str = "linear"  # "linear" or "none"
    refusal: tuple[str, str] | None = None  # (the named node, reason fragment)
    measure: bool = False  # compare measure with autograd (kept to the cheap ones)
    params: tuple[str, ...] = ()


ARCHS = [
    Arch("resnet", ResNet, {"/layer2/layer2.1/conv2/Conv": ("affine", "add", "relu")}),
    Arch("mobilenet_v2", MobileNetV2, {"/features/features.4/features.4.0/Conv":
                                       ("affine", "clip")}),
    Arch("mobilenet_v3", MobileNetV3, {"/features/features.3/features.3.0/Conv":
                                       ("affine", "hard_swish")}),
    Arch("efficientnet", EfficientNet, {"/features/features.3/features.3.0/Conv":
                                        ("affine", "sigmoid", "mul")},
         measure=True, params=("features.3.0.weight",)),
    Arch("densenet", DenseNet,
         {"/features/denseblock2/denselayer2/conv2/Conv":
          ("identity", "affine", "relu")}, measure=True,
         params=("features.denseblock2.denselayer2.conv2.weight",)),
    Arch("regnet", RegNet, {"/trunk_output/trunk_output.2/f/f.3/f.3.0/Conv":
                            ("affine", "add", "relu")}),
    Arch("squeezenet", SqueezeNet, {"/classifier/classifier.1/Conv": ("relu",)},
         classifier="none"),
    # the last block's pwconv2 (a Linear on NHWC, MatMul) -> layer scale -> residual; LayerNorm
    # after the pooling
    Arch("convnext", ConvNeXt, {"/features/features.3/pw2/MatMul":
                                ("add", "transpose", "mul", "add")}),
]


def build(arch: Arch, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return arch.build().eval()
