"""Heads with a differentiable map after the pooling (MLP, LayerNorm, conv_head, BatchNorm1d,
residual) on a small conv body, for the autograd comparisons of tests/test_afterpool.py.

``fc`` names the stored weight the classifier measures refer to (None: no classifier).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

C_OUT, HIDDEN, CLASSES, HW = 6, 7, 4, 6


def hardswish(t, reference):
    """torch's Hardswish, or its formula (torch has no double backward of hardswish)."""
    return t * (t + 3).clamp(0, 6) / 6 if reference else F.hardswish(t)


class Body(nn.Module):
    """stem conv -> ReLU -> conv -> ``act`` -> global average pooling -> ``head``."""

    def __init__(self, head: str, seed: int = 0, act=F.silu):
        super().__init__()
        torch.manual_seed(seed)
        self.kind = head
        self.act = act
        self.reference = False
        self.stem = nn.Conv2d(3, 5, 3, padding=1)
        self.conv = nn.Conv2d(5, C_OUT, 3, padding=1)
        f = C_OUT
        if head == "conv_head":
            self.conv_head = nn.Conv2d(C_OUT, HIDDEN, 1)
            f = HIDDEN
        if head == "linear_ln":
            self.hidden = nn.Linear(C_OUT, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN)
            f = HIDDEN
        if head in ("layernorm", "ln_mlp", "ln_gelu"):
            self.norm = nn.LayerNorm(C_OUT, eps=1e-5)
            with torch.no_grad():
                self.norm.weight.copy_(0.5 + torch.rand(C_OUT))
                self.norm.bias.copy_(0.3 * torch.randn(C_OUT))
        if head == "bn1d":
            self.bn = nn.BatchNorm1d(C_OUT)
            with torch.no_grad():
                self.bn.weight.copy_(0.5 + torch.rand(C_OUT))
                self.bn.bias.copy_(0.3 * torch.randn(C_OUT))
                self.bn.running_mean.copy_(0.2 * torch.randn(C_OUT))
                self.bn.running_var.copy_(0.5 + torch.rand(C_OUT))
        if head in ("mbv3", "vgg", "gelu_mlp", "ln_mlp", "residual"):
            self.hidden = nn.Linear(C_OUT, HIDDEN if head != "residual" else C_OUT)
            f = HIDDEN if head != "residual" else C_OUT
        if head == "vgg":
            self.hidden2 = nn.Linear(HIDDEN, HIDDEN)
        self.fc = nn.Linear(f, CLASSES)
        with torch.no_grad():
            self.conv.weight.mul_(2.0)
            self.fc.weight.mul_(2.0)

    def forward(self, x):
        a = self.act(self.conv(F.relu(self.stem(x))))
        k = self.kind
        if k == "conv_head":
            g = F.adaptive_avg_pool2d(a, 1)
            return self.fc(F.silu(self.conv_head(g)).flatten(1))
        g = F.adaptive_avg_pool2d(a, 1).flatten(1)
        if k == "mbv3":
            h = F.dropout(hardswish(self.hidden(g), self.reference), 0.2, training=False)
        elif k == "vgg":
            h = F.relu(self.hidden2(F.dropout(F.relu(self.hidden(g)), 0.5, False)))
        elif k == "gelu_mlp":
            h = F.gelu(self.hidden(g))
        elif k == "layernorm":
            h = self.norm(g)
        elif k == "ln_gelu":  # the LayerNorm's Jacobian straight into an activation
            h = F.gelu(self.norm(g))
        elif k == "ln_mlp":
            h = torch.tanh(self.hidden(self.norm(g)))
        elif k == "linear_ln":
            h = self.norm(self.hidden(g))
        elif k == "bn1d":
            h = self.bn(g)
        elif k == "residual":
            h = g + F.silu(self.hidden(g))
        else:
            raise ValueError(k)
        return self.fc(h)


@dataclass
class Case:
    name: str
    head: str
    dynamo: bool = False
    opset: int | None = 17
    fc: str | None = "fc.weight"


CASES = [
    Case("mbv3_ts", "mbv3"), Case("mbv3_dynamo", "mbv3", dynamo=True, opset=None),
    Case("vgg_ts", "vgg"), Case("gelu_mlp_ts", "gelu_mlp"),
    Case("gelu_op_mlp_ts20", "gelu_mlp", opset=20),
    Case("gelu_mlp_dynamo", "gelu_mlp", dynamo=True, opset=None),
    Case("layernorm_ts13", "layernorm", opset=13), Case("layernorm_ts17", "layernorm"),
    Case("layernorm_dynamo", "layernorm", dynamo=True, opset=None),
    Case("ln_mlp_ts13", "ln_mlp", opset=13), Case("ln_gelu_ts17", "ln_gelu"),
    Case("conv_head_ts", "conv_head"),
    Case("conv_head_dynamo", "conv_head", dynamo=True, opset=None),
    Case("linear_ln_ts13", "linear_ln", opset=13), Case("bn1d_ts", "bn1d"),
    Case("residual_ts", "residual"),
]

_exports: dict = {}


def exported_case(case: Case):
    """(torch model, ONNX model) of a case, exported once per test session."""
    key = case.name
    if key not in _exports:
        from .zoo import export
        model = Body(case.head).eval()
        x = torch.randn(2, 3, HW, HW, generator=torch.Generator().manual_seed(0))
        _exports[key] = (model, export(model, x, dynamo=case.dynamo, keep_bn=True,
                                       opset=case.opset))
    return _exports[key]
