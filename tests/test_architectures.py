"""`onnxflat inspect` on small torchvision-style architectures, and measure vs autograd."""

from __future__ import annotations

import json
import re

import onnx
import pytest
import torch
from click.testing import CliRunner

import onnxflat
from onnxflat.cli import main

from .architectures import ARCHS, HW, build
from .reference import hessian_measures
from .zoo import export


def _file(arch, tmp_path):
    model = build(arch)
    path = tmp_path / f"{arch.name}.onnx"
    onnx.save(export(model, torch.randn(2, 3, HW, HW), keep_bn=True, opset=17), path)
    return model, path


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.name)
def test_inspect(arch, tmp_path):
    _, path = _file(arch, tmp_path)
    out = tmp_path / "head.json"
    r = CliRunner().invoke(main, ["inspect", str(path), "--json", str(out)])
    if arch.refusal:
        node, reason = arch.refusal
        assert r.exit_code == 2, r.output
        assert f"node '{node}'" in r.output and reason in r.output, r.output
        assert json.loads(out.read_text())["refusal"] == {"node": node, "reason": r.output.split(
            f"node '{node}': ")[1].strip()}
        return
    assert r.exit_code == 0, r.output
    heads = [line for line in r.output.splitlines() if line.startswith("head:")]
    assert len(heads) == len(arch.layers)
    doc = json.loads(out.read_text())
    got = {layer["conv"]: tuple(s["fn"] for s in layer["steps"]) for layer in doc["layers"]}
    assert got == arch.layers
    for line, conv in zip(heads, arch.layers):
        op = "MatMul" if conv.endswith("MatMul") else "Conv2d"  # ConvNeXt's pwconv: a MatMul
        assert f"{op} '{conv}'" in line and "GlobalAveragePool" in line
    assert (doc["classifier"] is not None) == (arch.classifier == "linear")
    assert len(doc["rejected"]) == sum(line.startswith("not a layer") for line in
                                       r.output.splitlines())


@pytest.mark.parametrize("arch", [a for a in ARCHS if a.measure], ids=lambda a: a.name)
def test_measure_matches_autograd(arch, tmp_path):
    model, path = _file(arch, tmp_path)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, HW, HW, generator=g)
    y = torch.randint(0, 5, (6,), generator=g)
    res = onnxflat.measure(path, x.numpy(), y.numpy(), batch_size=4)
    for got, param in zip(res.layers, arch.params, strict=True):
        trace, kappa = hessian_measures(model, x, y, param)
        assert abs(got.trace - trace) < 1e-5 * abs(trace), (got.trace, trace)
        assert abs(got.kappa - kappa) < 1e-5 * abs(kappa), (got.kappa, kappa)


@pytest.mark.parametrize("name, expect", [
    ("efficientnet", ("sigmoid", "mul")),  # BN folded into the head conv by the exporter
    # as_strided after the pooling (Reshape to 1-D, Gather of shape-computed indices): proven
    # an identity re-view (tests/test_review.py refuses the others)
    ("convnext", ("add", "transpose", "mul", "add")),
])
def test_dynamo_export(name, expect):
    from onnxflat.graph import analyze_model
    arch = next(a for a in ARCHS if a.name == name)
    proto = export(build(arch), torch.randn(2, 3, HW, HW), dynamo=True)
    (layer,) = analyze_model(proto).layers
    assert tuple(s.fn for s in layer.steps) == expect


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.name)
def test_free_height_and_width(arch):
    """The same reading when the export leaves H and W free (shapes only partly known)."""
    from onnxflat.errors import HeadNotFoundError
    from onnxflat.graph import analyze_model
    proto = export(build(arch), torch.randn(2, 3, HW, HW), keep_bn=True, opset=17,
                   dynamic_hw=True)
    if arch.refusal:
        with pytest.raises(HeadNotFoundError, match=re.escape(arch.refusal[1])):
            analyze_model(proto)
        return
    head = analyze_model(proto)
    assert {layer.conv.node: tuple(s.fn for s in layer.steps) for layer in head.layers} == \
        arch.layers
