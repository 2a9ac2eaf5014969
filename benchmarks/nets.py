"""Torch definitions of the benchmark networks (random weights; see models.py)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _bn(c: int, zero_ish: bool = False, dim: int = 2) -> nn.Module:
    """BatchNorm over ``dim`` spatial axes with random (seeded) statistics."""
    bn = getattr(nn, f"BatchNorm{dim}d")(c)
    with torch.no_grad():
        bn.weight.copy_((0.2 if zero_ish else 1.0) * (0.5 + torch.rand(c)))
        bn.bias.copy_(0.1 * torch.randn(c))
        bn.running_mean.copy_(0.1 * torch.randn(c))
        bn.running_var.copy_(0.5 + torch.rand(c))
    return bn


class Basic(nn.Module):
    """ResNet basic block over ``dim`` spatial axes (2: images, 3: video clips)."""

    def __init__(self, cin, cout, stride, dim: int = 2):
        super().__init__()
        conv = getattr(nn, f"Conv{dim}d")
        self.c1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.b1 = _bn(cout, dim=dim)
        self.c2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.b2 = _bn(cout, zero_ish=True, dim=dim)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(conv(cin, cout, 1, stride, bias=False),
                                       _bn(cout, dim=dim))

    def forward(self, x):
        s = x if self.short is None else self.short(x)
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + s)


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, stride):
        super().__init__()
        cout = 4 * mid
        self.c1, self.b1 = nn.Conv2d(cin, mid, 1, bias=False), _bn(mid)
        self.c2, self.b2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), _bn(mid)
        self.c3, self.b3 = nn.Conv2d(mid, cout, 1, bias=False), _bn(cout, zero_ish=True)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout))

    def forward(self, x):
        s = x if self.short is None else self.short(x)
        h = F.relu(self.b1(self.c1(x)))
        h = F.relu(self.b2(self.c2(h)))
        return F.relu(self.b3(self.c3(h)) + s)


class ResNet(nn.Module):
    def __init__(self, block, widths, depths, classes, cifar):
        super().__init__()
        if cifar:
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), _bn(64), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), _bn(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for i, (w, d) in enumerate(zip(widths, depths)):
            for k in range(d):
                layers.append(block(cin, w, 2 if (k == 0 and i > 0) else 1))
                cin = w * (4 if block is Bottleneck else 1)
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, squeeze):
        super().__init__()
        self.reduce = nn.Conv2d(c, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, k, stride):
        super().__init__()
        mid = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), _bn(mid), nn.SiLU()]
        layers += [nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), _bn(mid),
                   nn.SiLU(), SqueezeExcite(mid, max(1, cin // 4)),
                   nn.Conv2d(mid, cout, 1, bias=False), _bn(cout, zero_ish=True)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


def mbconv_stages(stages, cin: int) -> nn.Sequential:
    """MBConv blocks of ``stages``, rows ``(expand, channels, repeats, stride, kernel)``; the
    first block of a stage strides."""
    blocks = []
    for e, c, n, s, k in stages:
        for i in range(n):
            blocks.append(MBConv(cin, c, e, k, s if i == 0 else 1))
            cin = c
    return nn.Sequential(*blocks)


class EfficientNetB0(nn.Module):
    # (expand, channels, repeats, stride, kernel) of the B0 stages
    STAGES = [(1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
              (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)]

    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), _bn(32), nn.SiLU())
        self.blocks = mbconv_stages(self.STAGES, 32)
        self.head = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), _bn(1280), nn.SiLU())
        self.fc = nn.Linear(1280, classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.head(self.blocks(self.stem(x))), 1).flatten(1))


class MobileNetV3LargeStyle(nn.Module):
    """MobileNetV3-Large's stages (MBConv blocks) and its head after the pooling: 1x1 conv
    160->960 + Hardswish at 7x7 -> GAP -> Linear 960->1280 -> Hardswish -> Dropout ->
    Linear 1280->1000 (a non-linear head: the measures need its per-sample Jacobian)."""

    STAGES = [(1, 16, 1, 1, 3), (4, 24, 2, 2, 3), (3, 40, 3, 2, 5), (6, 80, 4, 2, 3),
              (6, 112, 2, 1, 3), (6, 160, 3, 2, 5)]

    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), _bn(16), nn.Hardswish())
        self.blocks = mbconv_stages(self.STAGES, 16)
        self.head = nn.Sequential(nn.Conv2d(160, 960, 1, bias=False), _bn(960), nn.Hardswish())
        self.classifier = nn.Sequential(nn.Linear(960, 1280), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(1280, classes))

    def forward(self, x):
        g = F.adaptive_avg_pool2d(self.head(self.blocks(self.stem(x))), 1).flatten(1)
        return self.classifier(g)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (ConvNeXt's stem, downsampling, head)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CNBlock(nn.Module):
    """ConvNeXt block: dw 7x7 -> NHWC -> LayerNorm -> Linear 4d -> GELU -> Linear d (pwconv2,
    the measured layer of the last block) -> layer scale -> NCHW -> + input."""

    def __init__(self, d):
        super().__init__()
        self.dw = nn.Conv2d(d, d, 7, padding=3, groups=d)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.pw1, self.pw2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.gamma = nn.Parameter(torch.full((d,), 0.5))

    def forward(self, x):
        h = self.pw2(F.gelu(self.pw1(self.norm(self.dw(x).permute(0, 2, 3, 1)))))
        return x + (self.gamma * h).permute(0, 3, 1, 2)


class ConvNeXtT(nn.Module):
    """ConvNeXt-T (depths 3-3-9-3, widths 96-192-384-768) and its head: pooling ->
    LayerNorm -> Linear."""

    def __init__(self, classes=1000, depths=(3, 3, 9, 3), widths=(96, 192, 384, 768)):
        super().__init__()
        layers, cin = [nn.Conv2d(3, widths[0], 4, 4), LayerNorm2d(widths[0], eps=1e-6)], widths[0]
        for i, (n, d) in enumerate(zip(depths, widths)):
            if i:
                layers += [LayerNorm2d(cin, eps=1e-6), nn.Conv2d(cin, d, 2, 2)]
            layers += [CNBlock(d) for _ in range(n)]
            cin = d
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(cin, eps=1e-6)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(self.norm(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)))


def fold_bn(model: nn.Module) -> nn.Module:
    """Fold every Conv2d -> BatchNorm2d pair (as the exporter does), so the torch model and
    the ONNX file share the kernels the measures refer to."""
    for mod in list(model.modules()):
        names = list(mod._modules)
        for a, b in zip(names, names[1:]):
            ca, cb = mod._modules[a], mod._modules[b]
            if isinstance(ca, nn.Conv2d) and isinstance(cb, nn.BatchNorm2d):
                mod._modules[a] = torch.nn.utils.fusion.fuse_conv_bn_eval(ca, cb)
                mod._modules[b] = nn.Identity()
    for mod in list(model.modules()):  # attribute pairs (c1, b1), (c2, b2), (c3, b3)
        for i in (1, 2, 3):
            ca, cb = getattr(mod, f"c{i}", None), getattr(mod, f"b{i}", None)
            if isinstance(ca, nn.Conv2d) and isinstance(cb, nn.BatchNorm2d):
                setattr(mod, f"c{i}", torch.nn.utils.fusion.fuse_conv_bn_eval(ca, cb))
                setattr(mod, f"b{i}", nn.Identity())
    return model


NETS = {
    "resnet18_cifar": lambda: ResNet(Basic, [64, 128, 256, 512], [2, 2, 2, 2], 10, cifar=True),
    "resnet50": lambda: ResNet(Bottleneck, [64, 128, 256, 512], [3, 4, 6, 3], 1000, cifar=False),
    "efficientnet_b0": lambda: EfficientNetB0(1000),
    "mobilenet_v3_large_style": lambda: MobileNetV3LargeStyle(1000),
    "convnext_tiny": lambda: ConvNeXtT(1000),
}
