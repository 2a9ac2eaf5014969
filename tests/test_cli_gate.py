"""`onnxflat gate`: the documented CI workflow, thresholds, baselines, exit codes 0/1/2."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import onnxflat
from onnxflat.cli import main
from onnxflat.report import gate as g

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
SHARP = ROOT / "models" / "digits_cnn_sharp.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"
BASELINE = ROOT / "docs" / "ci" / "baseline.json"
WORKFLOW = ROOT / "docs" / "ci" / "onnxflat-gate.yml"
SCHEMA = json.loads((ROOT / "docs" / "result.schema.json").read_text())


def validate(doc: dict) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)


def workflow_gate(tmp_path: Path, model: str | None = None) -> tuple[subprocess.CompletedProcess,
                                                                     Path]:
    """Run the workflow's "Gate" step verbatim (model optionally swapped) as GitHub would."""
    line = re.search(r"^\s*run: (onnxflat gate .*)$", WORKFLOW.read_text(), re.M).group(1)
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
           "PYTHONPATH": str(ROOT)}
    argv = [a.replace("$GITHUB_STEP_SUMMARY", str(summary)) for a in shlex.split(line)]
    if model:
        argv[2] = model
    for name in ("models", "docs"):  # the workflow runs in the checkout root
        (tmp_path / name).symlink_to(ROOT / name)
    proc = subprocess.run([sys.executable, "-m", "onnxflat"] + argv[1:], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, summary


def test_workflow_gate_passes_and_baseline_is_current(tmp_path):
    proc, summary = workflow_gate(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate passed" in proc.stdout and "::error" not in proc.stdout
    md = summary.read_text()
    assert "## onnxflat gate: ✅ passed" in md and "| kappa total |" in md
    assert "- accuracy: 0.989231 ± 0.0029 (baseline 0.989231 ± 0.0029)" in md
    assert "- loss: 0.0459194 ± 0.0043" in md
    doc = json.loads((tmp_path / "gate.json").read_text())
    validate(doc)
    assert doc["gate"]["passed"] is True
    # The committed baseline must be what measure gives today (regenerate: see the workflow).
    base = json.loads(BASELINE.read_text())
    validate(base)
    assert doc["data"]["sha256"] == base["data"]["sha256"]  # the shipped training data
    assert base["onnxflat"] == doc["onnxflat"] == onnxflat.__version__
    pairs = [(doc["loss"], base["loss"]), (doc["accuracy"], base["accuracy"]),
             (doc["classifier"]["kappa"], base["classifier"]["kappa"])]
    pairs += [(a[m], b[m]) for a, b in zip(doc["layers"], base["layers"])
              for m in ("trace", "kappa", "kappa_layerwise")]
    for new, old in pairs:
        assert math.isclose(new, old, rel_tol=1e-5), (new, old)


def test_workflow_gate_rejects_the_sharp_model(tmp_path):
    proc, summary = workflow_gate(tmp_path, "models/digits_cnn_sharp.onnx")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gate FAILED: 1 of 3 checks failed (kappa total)" in proc.stdout
    row = next(r for r in proc.stdout.splitlines() if r.startswith("kappa total"))
    assert "FAIL" in row and "ratio <= 1.1 (+10%)" in row
    assert "+245.5%" in row  # against the baseline (3.455x), not against the limit
    for line in ("accuracy above chance", "accuracy vs baseline"):
        acc = next(r for r in proc.stdout.splitlines() if r.startswith(line))
        assert acc.endswith("pass"), acc  # 0.955: 3.4 points below the baseline
    errors = [r for r in proc.stdout.splitlines() if r.startswith("::error")]
    assert len(errors) == 1 and "kappa total" in errors[0] and "+245.5%" in errors[0]
    md = summary.read_text()
    assert "## onnxflat gate: ❌ failed" in md and "❌ **FAIL**" in md
    doc = json.loads((tmp_path / "gate.json").read_text())
    validate(doc)
    chance, drop, check = doc["gate"]["checks"]
    assert (chance["kind"], drop["kind"]) == ("chance", "accuracy_drop")
    assert doc["gate"]["passed"] is False and check["kind"] == "baseline"
    assert check["ratio"] > 3 and check["ratio"] - 3 * check["ratio_stderr"] > 1.1
    assert check["baseline_stderr"] > 0 and check["stderr"] > 0


def gate(*args):
    return CliRunner().invoke(main, ["gate", str(MODEL), "--data", str(TRAIN), *args])


def test_absolute_limits_fail_with_a_table_and_pass():
    r = gate("--max-kappa", "800", "--max-trace", "/conv2/Conv=1")
    assert r.exit_code == 1, r.output
    kappa = next(x for x in r.output.splitlines() if x.startswith("kappa total"))
    trace = next(x for x in r.output.splitlines() if x.startswith("trace /conv2/Conv"))
    assert "FAIL (+10.0% over the limit)" in kappa and "<= 800" in kappa  # 879.66 / 800 - 1
    assert "pass" in trace and "FAIL" not in trace
    assert "gate FAILED: 1 of 3" in r.output  # and accuracy above chance
    ok = gate("--max-kappa", "/conv2/Conv=900", "--max-kappa", "classifier=30", "-q")
    assert ok.exit_code == 0, ok.output
    assert "gate passed: 3 checks" in ok.output


def test_baseline_gate_json_and_measures(tmp_path):
    out = tmp_path / "g.json"
    r = gate("--baseline", str(BASELINE), "--on", "kappa", "--on", "trace",
             "--max-increase", "50%", "--json", str(out))
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    validate(doc)
    checks = {c["measure"]: c for c in doc["gate"]["checks"] if c["kind"] == "baseline"}
    assert set(checks) == {"kappa", "trace"} and doc["gate"]["max_ratio"] == 1.5
    assert math.isclose(checks["kappa"]["ratio"], 1, rel_tol=1e-5)
    assert math.isclose(checks["kappa"]["limit"], 1.5 * checks["kappa"]["baseline"])


@pytest.mark.parametrize("args, message", [
    ((), "nothing to gate on"),
    (("--max-kappa", "lots"), "expected V or LAYER=V"),
    (("--max-kappa", "-3"), "positive"),
    (("--max-kappa", "/nope/Conv=3"), "known: /conv2/Conv, classifier, total"),
    (("--baseline", str(TRAIN)), "not JSON"),
    (("--baseline", str(BASELINE), "--max-increase", "ten"), "e.g. --max-increase 10%"),
    (("--baseline", str(BASELINE), "--limit", "500"), "same data"),
    (("--max-kappa", "900", "--no-filter-kappa"), "skips the kappa"),
])
def test_bad_input_exits_2(args, message):
    r = gate(*args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_baseline_of_another_architecture(tmp_path):
    other = json.loads(BASELINE.read_text())
    other["layers"][0]["conv"] = "/other/Conv"  # a name alone is no difference
    p = tmp_path / "other.json"
    p.write_text(json.dumps(other))
    assert gate("--baseline", str(p), "-q").exit_code == 0
    other["layers"][0]["kernel_shape"] = [64, 16, 3, 3]
    p.write_text(json.dumps(other))
    r = gate("--baseline", str(p))
    assert r.exit_code == 2
    assert ("the heads differ: this model has 1 conv layer [32x16x3x3], the baseline 1 conv "
            "layer [64x16x3x3]") in r.output


@pytest.mark.parametrize("version, written", [
    (None, "an onnxflat older than 0.2"), ("0.1.0", "onnxflat 0.1.0"), ("1.2.0", "onnxflat 1.2.0"),
])
def test_baseline_of_an_incompatible_version_is_refused(tmp_path, version, written):
    doc = json.loads(BASELINE.read_text())
    doc.pop("onnxflat")
    if version:
        doc["onnxflat"] = version
    p = tmp_path / "old.json"
    p.write_text(json.dumps(doc))
    r = gate("--baseline", str(p))
    assert r.exit_code == 2
    assert f"baseline old.json was written by {written}, this is onnxflat" in r.output
    assert "measure the accepted model again" in r.output


def doc_with(layers, classifier=(1.0, 0.1), accuracy=0.9):
    return {"n_samples": 10, "accuracy": accuracy, "loss": 0.3,
            "stderr": {"accuracy": 0.01, "loss": 0.02},
            "layers": [{"conv": n, "trace": t, "kappa": k, "kappa_layerwise": k,
                        "kernel_shape": shape,
                        "stderr": {"trace": s, "kappa": s, "kappa_layerwise": s}}
                       for n, t, k, s, shape in layers],
            "classifier": {"trace": classifier[0], "kappa": classifier[0],
                           "stderr": {"trace": classifier[1], "kappa": classifier[1]}}}


A, B = [8, 4, 3, 3], [8, 4, 1, 1]


def test_evaluate_totals_ratios_and_errors():
    new = doc_with([("a", 1.0, 30.0, 3.0, A), ("b", 2.0, 10.0, 1.0, B)])
    old = doc_with([("a", 1.0, 20.0, 4.0, A), ("b", 2.0, 10.0, 2.0, B)])
    checks = g.evaluate(new, {"kappa": ["35"], "trace": ["b=1.5"]}, old, 1.2, per_layer=True,
                        max_accuracy_drop=None)
    by = {c.name: c for c in checks if c.kind == "max"}
    assert by["kappa total"].value == 40 and by["kappa total"].stderr is None  # 2 layers
    assert math.isclose(by["kappa total"].excess, 40 / 35 - 1) and not by["kappa total"].passed
    assert by["trace b"].value == 2 and not by["trace b"].passed
    total, a, b = [c for c in checks if c.kind == "baseline"]
    assert total.subject == "total" and total.ratio == 40 / 30 and not total.passed
    assert (a.subject, b.subject) == ("a", "b")
    assert a.ratio == 1.5 and not a.passed and math.isclose(a.limit, 24)
    assert math.isclose(a.ratio_stderr, 1.5 * math.hypot(3 / 30, 4 / 20))
    assert b.ratio == 1 and b.passed
    one = g.values(doc_with([("a", 1.0, 30.0, 3.0, A)]))
    assert one[("kappa", "total")] == (30.0, 3.0)
    assert g.parse_limit("x=y=2") == ("x=y", 2.0) and g.parse_limit("5") == ("total", 5.0)
    md = g.markdown(checks, "m.onnx", "d.npz", 10, "old.json")
    assert md.count("❌ **FAIL") == 4
    assert "| kappa a | 30 ± 3 | 20 ± 4 | 1.5 ± 0.34 | +50.0% |" in md
    # Only the total by default.
    assert [c.subject for c in g.evaluate(new, {}, old, 1.2, max_accuracy_drop=None)] == ["total"]


def test_layers_match_by_kernel_shape_and_position_not_by_name():
    old = doc_with([("x", 1.0, 1.0, 0.1, A), ("y", 1.0, 2.0, 0.1, B), ("z", 1.0, 3.0, 0.1, A)])
    assert g.match_layers([A, B, A], old) == [0, 1, 2]
    assert g.match_layers([B, A, A], old) == [1, 0, 2]  # another exporter's order
    new = doc_with([("p", 1.0, 2.0, 0.1, B), ("q", 1.0, 1.0, 0.1, A), ("r", 1.0, 3.0, 0.1, A)])
    checks = g.evaluate(new, {}, old, 1.0, per_layer=True, max_accuracy_drop=None)
    assert [(c.subject, c.ratio) for c in checks] == [("total", 1), ("p", 1), ("q", 1), ("r", 1)]
    for shapes, text in [([A, B], "this model has 2 conv layers [8x4x3x3, 8x4x1x1], the "
                                  "baseline 3 conv layers [8x4x3x3, 8x4x1x1, 8x4x3x3]"),
                         ([A, B, B], "[8x4x3x3, 8x4x1x1, 8x4x1x1]")]:
        with pytest.raises(g.GateInputError, match=re.escape(text)):
            g.match_layers(shapes, old)


@pytest.mark.parametrize("acc, passed", [(0.86, True), (0.84, False)])
def test_accuracy_drop_and_chance(acc, passed):
    old = doc_with([("a", 1.0, 20.0, 4.0, A)], accuracy=0.9)
    new = doc_with([("a", 1.0, 20.0, 4.0, A)], accuracy=acc)
    chance, drop, kappa = g.evaluate(new, {}, old, 1.1, num_classes=10)
    assert (chance.kind, chance.passed) == ("chance", True)
    assert (drop.kind, drop.passed, kappa.passed) == ("accuracy_drop", passed, True)
    assert math.isclose(drop.limit, 0.85) and math.isclose(drop.excess, 0.85 - acc)
    low = g.evaluate(doc_with([("a", 1.0, 20.0, 4.0, A)], accuracy=0.2), {}, None,
                     num_classes=10)
    assert [(c.kind, c.passed) for c in low] == [("chance", False)]
    assert g.parse_accuracy_drop("5%") == pytest.approx(0.05) == g.parse_accuracy_drop("0.05")
    assert g.parse_accuracy_drop("off") is None
    for bad in ("5", "-1%", "x", "150%"):
        with pytest.raises(g.GateInputError, match="--max-accuracy-drop 5%"):
            g.parse_accuracy_drop(bad)


def test_baseline_on_other_data_of_the_same_size_is_refused(tmp_path):
    base = tmp_path / "b.json"
    r = CliRunner().invoke(main, ["measure", str(MODEL), "--data", str(TRAIN), "--limit", "500",
                                  "--seed", "1", "--json", str(base)])
    assert r.exit_code == 0, r.output
    same = gate("--baseline", str(base), "--limit", "500", "--seed", "1")
    assert same.exit_code == 0, same.output
    other = gate("--baseline", str(base), "--limit", "500", "--seed", "2")
    assert other.exit_code == 2 and "measured on other data" in other.output


@pytest.mark.parametrize("text, ratio", [
    ("10%", 1.1), (" 10 % ", 1.1), ("0%", 1.0), ("250%", 3.5), ("1.1x", 1.1), ("1.1X", 1.1),
    ("1x", 1.0), ("3x", 3.0), ("12.5%", 1.125),
])
def test_max_increase_spellings(text, ratio):
    assert g.parse_increase(text) == pytest.approx(ratio)


@pytest.mark.parametrize("text, message", [
    ("10", "bare number is ambiguous"), ("1.1", "bare number is ambiguous"),
    ("0", "bare number is ambiguous"), ("-5%", "must not be negative"),
    ("0.9x", "must not be negative"), ("-1x", "must not be negative"), ("ten", "expected"),
    ("%", "expected"), ("x", "expected"), ("nan%", "expected"),
    ("inf%", "expected"), ("", "expected"),
])
def test_max_increase_refused_with_an_example(text, message):
    with pytest.raises(g.GateInputError, match=message) as err:
        g.parse_increase(text)
    assert "--max-increase 10%" in str(err.value) and "1.1x" in str(err.value)
    r = gate("--baseline", str(BASELINE), "--max-increase", text)  # before any measuring
    assert r.exit_code == 2 and message in r.output, r.output


def torch_digits(path: Path):
    """The shipped digits network as a torch module, with the weights of the ONNX file at
    ``path`` (its TorchScript export folded the BN into the second conv)."""
    import torch
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    gemm = next(n for n in proto.graph.node if n.op_type == "Gemm")

    class Digits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
            self.fc = torch.nn.Linear(32, 10)

        def forward(self, x):
            h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
            return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))

    model = Digits()
    with torch.no_grad():
        for layer, node in ((model.conv1, convs[0]), (model.conv2, convs[1]), (model.fc, gemm)):
            layer.weight.copy_(torch.from_numpy(init[node.input[1]].copy()))
            layer.bias.copy_(torch.from_numpy(init[node.input[2]].copy()))
    return model.eval()


@pytest.fixture(scope="module")
def dynamo_exports(tmp_path_factory):
    """digits_cnn.onnx and digits_cnn_sharp.onnx re-exported with torch's dynamo exporter."""
    import torch

    from .zoo import export

    out = {}
    folder = tmp_path_factory.mktemp("dynamo")
    for source in (MODEL, SHARP):
        proto = export(torch_digits(source), torch.zeros(2, 1, 8, 8), dynamo=True)
        out[source.name] = folder / source.name
        onnx.save(proto, str(out[source.name]))
    return out


def test_torchscript_baseline_gates_dynamo_exports(dynamo_exports):
    same, sharp = dynamo_exports[MODEL.name], dynamo_exports[SHARP.name]
    from onnxflat.graph import analyze
    names = [layer.conv.node for layer in analyze(same).layers]
    assert names != ["/conv2/Conv"]  # the dynamo exporter names nodes otherwise
    args = ["--data", str(TRAIN), "--baseline", str(BASELINE), "--per-layer"]
    ok = CliRunner().invoke(main, ["gate", str(same), *args])
    assert ok.exit_code == 0, ok.output
    row = next(r for r in ok.output.splitlines() if r.startswith("kappa total"))
    assert "1 ± " in row and "+0.0%" in row
    bad = CliRunner().invoke(main, ["gate", str(sharp), *args])
    assert bad.exit_code == 1, bad.output
    assert "gate FAILED: 1 of 3 checks failed (kappa total)" in bad.output


def test_untrained_model_fails_on_accuracy(tmp_path):
    """An untrained (random) model is "flatter" than the trained one: the gate stops it on
    accuracy, with its own check lines, Markdown rows and annotations."""
    from .zoo import randomized

    random = randomized(MODEL, tmp_path / "random.onnx")
    summary = tmp_path / "summary.md"
    r = CliRunner().invoke(main, ["gate", str(random), "--data", str(TRAIN), "--baseline",
                                  str(BASELINE), "--max-increase", "10%", "--summary-md",
                                  str(summary)], env={"GITHUB_ACTIONS": "true"})
    assert r.exit_code == 1, r.output
    lines = r.stdout.splitlines()
    kappa = next(x for x in lines if x.startswith("kappa total"))
    assert kappa.endswith("pass")  # flatter: the flatness alone would let it through
    for check in ("accuracy above chance", "accuracy vs baseline"):
        row = next(x for x in lines if x.startswith(check))
        assert "FAIL" in row, row
        assert any(x.startswith("::error") and f"random.onnx: {check} = " in x for x in lines)
        assert f"| {check} |" in summary.read_text()
    assert "gate FAILED: 2 of 3 checks failed (accuracy above chance, accuracy vs baseline)" \
        in r.stdout
    off = CliRunner().invoke(main, ["gate", str(random), "--data", str(TRAIN), "--baseline",
                                    str(BASELINE), "--max-accuracy-drop", "off"])
    assert off.exit_code == 0, off.output


def test_data_fingerprint_is_over_contents_and_selection(tmp_path):
    from onnxflat.data import DataSpec

    with np.load(TRAIN) as z:
        x, y = z["x"], z["y"]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "plain.npz", inputs=x, targets=y)  # uncompressed, other keys
    pair = DataSpec(str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy"))
    npz = DataSpec(str(TRAIN))
    plain = DataSpec(str(tmp_path / "plain.npz"), x_key="inputs", y_key="targets")
    assert pair.fingerprint() == npz.fingerprint() == plain.fingerprint()
    assert DataSpec(str(TRAIN), limit=500, seed=1).fingerprint() != npz.fingerprint()
    x2 = x.copy()
    x2[7, 0, 3, 3] += 1e-3
    np.save(tmp_path / "x2.npy", x2)
    edited = DataSpec(str(tmp_path / "x2.npy"), labels=str(tmp_path / "y.npy"))
    a, b = edited.fingerprint_parts(), pair.fingerprint_parts()
    assert [k for k in a if a[k] != b[k]] == ["samples"]


@pytest.mark.parametrize("args, differs", [
    (["--limit", "500", "--seed", "2"], "the selection of samples (--limit/--seed) differs "
     "(baseline: digits_train.npz, --limit 500 --seed 1; this run: digits_train.npz, "
     "--limit 500 --seed 2)"),
    (["--labels", "{y}"], "the labels (y) differs"),
])
def test_other_data_is_refused_before_measuring(tmp_path, monkeypatch, args, differs):
    base = tmp_path / "b.json"
    r = CliRunner().invoke(main, ["measure", str(MODEL), "--data", str(TRAIN), "--limit", "500",
                                  "--seed", "1", "--json", str(base)])
    assert r.exit_code == 0, r.output
    if "--labels" in args:  # the same inputs as a .npy pair, with other labels
        with np.load(TRAIN) as z:
            np.save(tmp_path / "x.npy", z["x"])
            np.save(tmp_path / "y.npy", (z["y"] + 1) % 10)
        args = ["--data", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                "--limit", "500", "--seed", "1"]
    else:
        args = ["--data", str(TRAIN), *args]

    def never(*a, **k):
        raise AssertionError("measured before checking the data")
    monkeypatch.setattr("onnxflat.cli.gate.run_measure", never)
    r = CliRunner().invoke(main, ["gate", str(MODEL), *args, "--baseline", str(base)])
    assert r.exit_code == 2, r.output
    assert f"measured on other data: {differs}" in r.output
    assert "--limit/--seed" in r.output
