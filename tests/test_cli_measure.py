"""`onnxflat measure` and `inspect` on the shipped sample, in-process and as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from onnxflat.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"


def test_measure_json_fields(tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["measure", str(MODEL), "--data", str(TRAIN), "--json",
                                  str(out), "--batch-size", "200"])
    assert r.exit_code == 0, r.output
    assert "kappa" in r.output and "Conv" in r.output and "1300 samples" in r.output
    doc = json.loads(out.read_text())
    assert {"model", "n_samples", "loss", "accuracy", "layers", "classifier"} <= set(doc)
    layer = doc["layers"][0]
    assert {"conv", "trace", "kappa", "kappa_layerwise", "stderr", "per_filter"} <= set(layer)
    assert {"trace", "kappa"} <= set(layer["per_filter"])
    assert {"trace", "kappa"} <= set(doc["classifier"]) and "stderr" in doc["classifier"]
    assert len(layer["per_filter"]["kappa"]) == 32
    assert np.isclose(sum(layer["per_filter"]["kappa"]), layer["kappa"])
    assert doc["n_samples"] == 1300 and isinstance(layer["trace"], float)
    assert 0 < layer["stderr"]["kappa"] < abs(layer["kappa"])


def test_measure_without_filter_kappa(tmp_path):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["measure", str(MODEL), "--data", str(TRAIN),
                                  "--no-filter-kappa", "--json", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["layers"][0]["kappa"] is None and doc["layers"][0]["trace"] > 0


def test_subprocess_success_and_bad_input(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "onnxflat", "measure", str(MODEL), "--data",
                         str(TRAIN)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "CPUExecutionProvider" in ok.stdout
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([0, 1, 10]))
    r = subprocess.run([sys.executable, "-m", "onnxflat", "measure", str(MODEL), "--data",
                        str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "label 10" in r.stderr and "10 classes" in r.stderr


def test_inspect_sample():
    r = CliRunner().invoke(main, ["inspect", str(MODEL)])
    assert r.exit_code == 0
    assert "/conv2/Conv" in r.output and "GlobalAveragePool" in r.output


def test_measure_threads(tmp_path, monkeypatch):
    """--threads reaches onnxruntime and the math (same numbers as all cores); 0 is refused."""
    from onnxflat import runtime
    from onnxflat.measures import flatness

    seen = []
    monkeypatch.setattr(flatness, "available_cores", lambda: 2)
    original = runtime.Extractor

    def spy(*args, **kwargs):
        seen.append(kwargs.get("threads"))
        return original(*args, **kwargs)

    monkeypatch.setattr(runtime, "Extractor", spy)
    docs = []
    for extra in ([], ["--threads", "1"], ["--threads", "3"]):
        out = tmp_path / f"r{len(docs)}.json"
        r = CliRunner().invoke(main, ["measure", str(MODEL), "--data", str(TRAIN), "--json",
                                      str(out), *extra])
        assert r.exit_code == 0, r.output
        docs.append(json.loads(out.read_text())["layers"][0])
    assert seen == [None, 1, 3]
    for doc in docs[1:]:
        np.testing.assert_allclose([doc["trace"], doc["kappa"], *doc["per_filter"]["kappa"]],
                                   [docs[0]["trace"], docs[0]["kappa"],
                                    *docs[0]["per_filter"]["kappa"]], rtol=1e-12)
    r = CliRunner().invoke(main, ["measure", str(MODEL), "--data", str(TRAIN), "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.output
