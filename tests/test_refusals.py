"""Heads that do not qualify: each refusal names the node and the reason (real torch exports)."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from onnxflat.errors import HeadNotFoundError, ModelError
from onnxflat.graph import analyze, analyze_model

from .heads import HW, Net
from .zoo import export


class Body(nn.Module):
    """stem -> ReLU -> conv -> ReLU -> ``mid`` -> pool -> ``tail`` (all choices by name)."""

    def __init__(self, mid=None, pool="gap", tail="linear"):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.se1, self.se2 = nn.Conv2d(6, 2, 1), nn.Conv2d(2, 6, 1)
        self.fc1 = nn.Linear(6, 6)
        features = {"avg2": 6 * (HW // 2) ** 2, "input_gap": 3, "mean_c": HW * HW,
                    "avg_max": 12}.get(pool, 6)
        self.fc = nn.Linear(features, 5)
        self.norm = nn.LayerNorm(6)
        self.register_buffer("mix", torch.randn(HW, HW))
        self.mid, self.pool, self.tail = mid, pool, tail

    def forward(self, x):
        a = F.relu(self.conv(F.relu(self.stem(x))))
        if self.mid == "se":
            a = a * torch.sigmoid(self.se2(F.relu(self.se1(F.adaptive_avg_pool2d(a, 1)))))
        elif self.mid == "maxpool":
            a = F.max_pool2d(a, 3, 1, 1)
        elif self.mid == "resize":
            a = F.interpolate(a, scale_factor=2.0, mode="nearest")
        elif self.mid == "int_cast":
            a = a.int().float()
        elif self.mid == "channel_sum":
            a = a + a.sum(1, keepdim=True)
        elif self.mid == "matmul_width":  # a constant MatMul over W of an NCHW map
            a = a @ self.mix
        elif self.mid == "matmul_gram":  # a MatMul of two conv-dependent tensors
            a = a @ a.transpose(2, 3)
        g = {"gap": lambda: F.adaptive_avg_pool2d(a, 1), "avg2": lambda: F.avg_pool2d(a, 2),
             "max": lambda: F.adaptive_max_pool2d(a, 1),
             "input_gap": lambda: F.adaptive_avg_pool2d(x, 1),
             "mean_c": lambda: a.mean(1, keepdim=True),
             "tokens": lambda: self.fc1(a.flatten(2).transpose(1, 2)).mean(1),
             "avg_max": lambda: torch.cat([F.adaptive_avg_pool2d(a, 1),
                                           F.adaptive_max_pool2d(a, 1)], 1)}[self.pool]().flatten(1)
        if self.tail == "mlp":
            return self.fc(F.relu(self.fc1(g)))
        if self.tail == "layernorm":
            return self.fc(self.norm(g))
        return self.fc(g)


def _proto(model):
    return export(model.eval(), torch.randn(2, 3, HW, HW), keep_bn=True, opset=17)


def _node(proto, op, index=0):
    return [n.name for n in proto.graph.node if n.op_type == op][index]


CASES = [  # (id, model, (op, index) of the node named, reason fragment)
    ("se_gate_on_conv_output", lambda: Body("se"), ("GlobalAveragePool", 0),
     "squeeze-excitation"),
    ("maxpool_on_path", lambda: Body("maxpool"), ("MaxPool", 0), "spatial operation"),
    ("resize_on_path", lambda: Body("resize"), ("Resize", 0), "changes the spatial grid"),
    ("pooling_not_global", lambda: Body(pool="avg2"), ("AveragePool", 0),
     "the pooling is not global"),
    ("global_max_pool", lambda: Body(pool="max"), ("MaxPool", 0),
     "not a global average pooling"),
    ("mlp_after_pooling", lambda: Body(tail="mlp"), ("Relu", 2), "non-linear (an MLP)"),
    ("layernorm_after_pooling", lambda: Body(tail="layernorm"), ("LayerNormalization", 0),
     "LayerNormalization after the pooling"),
    ("no_conv_reaches_pooling", lambda: Body(pool="input_gap"), ("GlobalAveragePool", 0),
     "no Conv reaches the pooling"),
    ("int_cast_on_path", lambda: Body("int_cast"), ("Cast", 0), "non-float type"),
    ("mean_over_channels", lambda: Body(pool="mean_c"), ("ReduceMean", 0),
     "not the conv's spatial axes"),
    ("avg_and_max_pool_concat", lambda: Body(pool="avg_max"), ("Concat", 0),
     "Concat after the pooling"),
    ("channel_sum_on_path", lambda: Body("channel_sum"), ("ReduceSum", 0), "reduces axes"),
    ("matmul_over_width", lambda: Body("matmul_width"), ("MatMul", 0),
     "not a pointwise layer over channels"),
    ("matmul_of_two_maps", lambda: Body("matmul_gram"), ("MatMul", 0),
     "MatMul weight (right operand) is not a constant"),
    ("matmul_on_tokens", lambda: Body(pool="tokens"), ("MatMul", 0), "has rank 3"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_refusal_names_node_and_reason(case):
    _, build, (op, index), reason = case
    proto = _proto(build())
    with pytest.raises(HeadNotFoundError) as exc:
        analyze_model(proto)
    assert exc.value.node == _node(proto, op, index), (exc.value.node, exc.value.reason)
    assert reason in exc.value.reason, exc.value.reason


def test_external_data_inside_folder_loads_outside_refused(tmp_path):
    proto = _proto(Net("relu"))
    inside = tmp_path / "model"
    inside.mkdir()
    onnx.save(proto, inside / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)
    assert analyze(inside / "m.onnx").layers[0].conv.kernel.shape == (4, 3, 3, 3)
    (inside / "w.bin").rename(tmp_path / "w.bin")
    m = onnx.load(inside / "m.onnx", load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../w.bin"
    onnx.save(m, inside / "m.onnx")
    with pytest.raises(ModelError, match="outside the model's folder"):
        analyze(inside / "m.onnx")


@pytest.mark.parametrize("how", ["absolute", "symlink"])
def test_external_data_escaping_by_absolute_path_or_symlink_refused(how, tmp_path):
    inside = tmp_path / "model"
    inside.mkdir()
    onnx.save(_proto(Net("relu")), tmp_path / "m.onnx", save_as_external_data=True,
              location="w.bin", size_threshold=0)
    m = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    if how == "symlink":  # a link inside the folder to a file outside it
        (inside / "w.bin").symlink_to(tmp_path / "w.bin")
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location" and how == "absolute":
                e.value = str(tmp_path / "w.bin")
    onnx.save(m, inside / "m.onnx")
    with pytest.raises(ModelError, match="outside the model's folder"):
        analyze(inside / "m.onnx")


def test_se_gate_with_dynamic_spatial_dims_refused():
    """With free H, W the gate's 1x1 map still counts as broadcast: the gate conv is no layer."""
    proto = export(Body("se").eval(), torch.randn(2, 3, HW, HW), opset=17, dynamic_hw=True)
    with pytest.raises(HeadNotFoundError) as exc:
        analyze_model(proto)
    assert exc.value.node == _node(proto, "GlobalAveragePool", 0)
    assert "squeeze-excitation" in exc.value.reason
