"""Committed exports of other frameworks (tests/fixtures/<framework>): loading and checks.

Each folder holds ``<case>.onnx`` files, ``data.npz`` (``x``, ``y``) and ``references.json``
written by ``tools/make_<framework>_fixtures.py`` with that framework's own autograd.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxflat
from onnxflat.errors import HeadNotFoundError
from onnxflat.graph import analyze

from .helpers import rel

ROOT = Path(__file__).parent / "fixtures"


def references(framework: str) -> dict:
    """case name -> its entry of references.json (``file``, ``opset``, references if measured).

    Every committed .onnx file of the folder belongs to a case (none goes untested)."""
    cases = json.loads((ROOT / framework / "references.json").read_text())["cases"]
    assert {e["file"] for e in cases.values()} == {
        p.name for p in (ROOT / framework).glob("*.onnx")}
    return cases


def data(framework: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(ROOT / framework / "data.npz", allow_pickle=False) as d:
        return d["x"], d["y"]



def assert_measure_matches(framework: str, entry: dict, tol: float = 1e-5) -> None:
    """``onnxflat.measure`` agrees with the framework's references (float32 runtime: tol)."""
    x, y = data(framework)
    if entry.get("input_layout") == "NCHW":  # exported with tf2onnx --inputs-as-nchw
        x = x.transpose(0, 3, 1, 2)
    res = onnxflat.measure(ROOT / framework / entry["file"], x, y, batch_size=10)
    got = {layer.conv: layer for layer in res.layers}
    assert len(got) == len(entry["layers"])
    for ref in entry["layers"]:
        layer = got[ref["onnx_conv"]]
        for key in ("trace", "kappa", "kappa_layerwise"):
            assert rel(getattr(layer, key), ref[key]) < tol, (key, getattr(layer, key), ref[key])
    # A reference taken w.r.t. a folded weight s W (a per-feature scale s before the Linear,
    # Paddle's inference dropout) has trace / s^2 of the stored W's; kappa is the same.
    s = entry["classifier"].get("input_scale_folded", 1.0)
    for key, want in (("trace", entry["classifier"]["trace"] * s * s),
                      ("kappa", entry["classifier"]["kappa"])):
        value = getattr(res.classifier, key)
        assert rel(value, want) < tol, (key, value, want)
    assert rel(res.loss, entry["loss"]) < tol
    assert res.accuracy == pytest.approx(entry["accuracy"])


def assert_after_pool(framework: str, entry: dict, kinds: tuple[str, ...],
                      classifier: tuple[str, ...]) -> None:
    """The head after the pooling reads as ``kinds`` (op class names) with the classifier
    layer of nodes ``classifier``; the measures agree with float64 autograd through a torch
    interpreter of the file's own graph (tests/onnx_torch.py), to the float32 pipeline's
    tolerance."""
    import torch

    from . import onnx_torch

    path = ROOT / framework / entry["file"]
    head = analyze(path)
    assert tuple(type(op).__name__ for op in head.after.ops) == kinds
    assert head.after.classifier_layer.nodes == classifier
    x, y = data(framework)
    if "input_hw" in entry:  # a model for larger images than the shared data
        rng = np.random.default_rng(0)
        x = rng.standard_normal((len(y), 3, entry["input_hw"], entry["input_hw"]), np.float32)
    res = onnxflat.measure(path, x, y, batch_size=10)
    model = onnx.load(path)
    nodes = {n.name: n for n in model.graph.node}
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    (layer,) = res.layers
    trace, kappa = onnx_torch.hessian_measures(model, xt, yt, nodes[layer.conv].input[1])
    assert rel(layer.trace, trace) < 1e-5 and rel(layer.kappa, kappa) < 1e-5, \
        (layer.trace, trace, layer.kappa, kappa)
    fc = nodes[classifier[0]]
    columns = fc.op_type == "MatMul" or (fc.op_type == "Gemm" and not any(
        a.name == "transB" and a.i for a in fc.attribute))
    trace, kappa = onnx_torch.hessian_measures(model, xt, yt, fc.input[1], columns)
    assert rel(res.classifier.trace, trace) < 1e-5, (res.classifier.trace, trace)
    assert rel(res.classifier.kappa, kappa) < 1e-5, (res.classifier.kappa, kappa)


def assert_refusal(framework: str, entry: dict, node: str | None, reason: str) -> None:
    with pytest.raises(HeadNotFoundError) as err:
        analyze(ROOT / framework / entry["file"])
    assert err.value.node == node
    assert reason in err.value.reason, err.value.reason
