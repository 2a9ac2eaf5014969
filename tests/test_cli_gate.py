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
import pytest
from click.testing import CliRunner

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
    assert "## onnxflat gate: ✅ passed" in md and "| kappa /conv2/Conv |" in md
    doc = json.loads((tmp_path / "gate.json").read_text())
    validate(doc)
    assert doc["gate"]["passed"] is True
    # The committed baseline must be what measure gives today (regenerate: see the workflow).
    base = json.loads(BASELINE.read_text())
    validate(base)
    assert doc["data"]["sha256"] == base["data"]["sha256"]  # the shipped training data
    pairs = [(doc["loss"], base["loss"]), (doc["accuracy"], base["accuracy"]),
             (doc["classifier"]["kappa"], base["classifier"]["kappa"])]
    pairs += [(a[m], b[m]) for a, b in zip(doc["layers"], base["layers"])
              for m in ("trace", "kappa", "kappa_layerwise")]
    for new, old in pairs:
        assert math.isclose(new, old, rel_tol=1e-5), (new, old)


def test_workflow_gate_rejects_the_sharp_model(tmp_path):
    proc, summary = workflow_gate(tmp_path, "models/digits_cnn_sharp.onnx")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "gate FAILED: 1 of 1" in proc.stdout
    row = next(r for r in proc.stdout.splitlines() if r.startswith("kappa /conv2/Conv"))
    assert "FAIL" in row and "ratio <= 1.1" in row
    errors = [r for r in proc.stdout.splitlines() if r.startswith("::error")]
    assert len(errors) == 1 and "kappa /conv2/Conv" in errors[0] and "baseline" in errors[0]
    md = summary.read_text()
    assert "## onnxflat gate: ❌ failed" in md and "❌ **FAIL**" in md
    doc = json.loads((tmp_path / "gate.json").read_text())
    validate(doc)
    (check,) = doc["gate"]["checks"]
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
    assert "FAIL" in kappa and "+10.0%" in kappa and "<= 800" in kappa  # 879.66 / 800 - 1
    assert "pass" in trace and "FAIL" not in trace
    assert "gate FAILED: 1 of 2" in r.output
    ok = gate("--max-kappa", "/conv2/Conv=900", "--max-kappa", "classifier=30", "-q")
    assert ok.exit_code == 0, ok.output and "gate passed: 2 checks" in ok.output


def test_baseline_gate_json_and_measures(tmp_path):
    out = tmp_path / "g.json"
    r = gate("--baseline", str(BASELINE), "--on", "kappa", "--on", "trace",
             "--max-increase", "50%", "--json", str(out))
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    validate(doc)
    checks = {c["measure"]: c for c in doc["gate"]["checks"]}
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
    other["layers"][0]["conv"] = "/other/Conv"
    p = tmp_path / "other.json"
    p.write_text(json.dumps(other))
    r = gate("--baseline", str(p))
    assert r.exit_code == 2 and "not in the baseline" in r.output


def doc_with(layers, classifier=(1.0, 0.1)):
    return {"n_samples": 10,
            "layers": [{"conv": n, "trace": t, "kappa": k, "kappa_layerwise": k,
                        "stderr": {"trace": s, "kappa": s, "kappa_layerwise": s}}
                       for n, t, k, s in layers],
            "classifier": {"trace": classifier[0], "kappa": classifier[0],
                           "stderr": {"trace": classifier[1], "kappa": classifier[1]}}}


def test_evaluate_totals_ratios_and_errors():
    new = doc_with([("a", 1.0, 30.0, 3.0), ("b", 2.0, 10.0, 1.0)])
    old = doc_with([("a", 1.0, 20.0, 4.0), ("b", 2.0, 10.0, 2.0)])
    checks = g.evaluate(new, {"kappa": ["35"], "trace": ["b=1.5"]}, old, 1.2)
    by = {c.name: c for c in checks if c.kind == "max"}
    assert by["kappa total"].value == 40 and by["kappa total"].stderr is None  # 2 layers
    assert math.isclose(by["kappa total"].excess, 40 / 35 - 1) and not by["kappa total"].passed
    assert by["trace b"].value == 2 and not by["trace b"].passed
    a, b = [c for c in checks if c.kind == "baseline"]
    assert (a.subject, b.subject) == ("a", "b")
    assert a.ratio == 1.5 and not a.passed and math.isclose(a.limit, 24)
    assert math.isclose(a.ratio_stderr, 1.5 * math.hypot(3 / 30, 4 / 20))
    assert b.ratio == 1 and b.passed
    one = g.values(doc_with([("a", 1.0, 30.0, 3.0)]))
    assert one[("kappa", "total")] == (30.0, 3.0)
    assert g.parse_limit("x=y=2") == ("x=y", 2.0) and g.parse_limit("5") == ("total", 5.0)
    md = g.markdown(checks, "m.onnx", "d.npz", 10, "old.json")
    assert md.count("❌ **FAIL**") == 3 and "| kappa a | 30 ± 3 | 20 ± 4 | 1.5 ± 0.34 |" in md


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
