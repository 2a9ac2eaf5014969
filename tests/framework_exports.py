"""Committed exports of other frameworks (tests/fixtures/<framework>): loading and checks.

Each folder holds ``<case>.onnx`` files, ``data.npz`` (``x``, ``y``) and ``references.json``
written by ``tools/make_<framework>_fixtures.py`` with that framework's own autograd.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
    for key in ("trace", "kappa"):
        value = getattr(res.classifier, key)
        assert rel(value, entry["classifier"][key]) < tol, (key, value)
    assert rel(res.loss, entry["loss"]) < tol
    assert res.accuracy == pytest.approx(entry["accuracy"])


def assert_refusal(framework: str, entry: dict, node: str | None, reason: str) -> None:
    with pytest.raises(HeadNotFoundError) as err:
        analyze(ROOT / framework / entry["file"])
    assert err.value.node == node
    assert reason in err.value.reason, err.value.reason
