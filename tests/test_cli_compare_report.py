"""`onnxflat compare` and `report`, --help/--version, the progress bar; in-process and
subprocess."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from onnxflat import __version__
from onnxflat.cli import main
from onnxflat.cli.options import progress_bar

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
SHARP = ROOT / "models" / "digits_cnn_sharp.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"
BASELINE = json.loads((ROOT / "docs" / "ci" / "baseline.json").read_text())
SCHEMA = json.loads((ROOT / "docs" / "result.schema.json").read_text())


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnxflat", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_compare_ranks_json_csv(tmp_path):
    js, cs = tmp_path / "c.json", tmp_path / "c.csv"
    r = CliRunner().invoke(main, ["compare", str(SHARP), str(MODEL), "--data", str(TRAIN),
                                  "--json", str(js), "--csv", str(cs)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "rank 1 = flattest" in lines[0]
    assert lines[2].startswith(str(MODEL)) and lines[3].startswith(str(SHARP))  # by kappa
    doc = json.loads(js.read_text())
    jsonschema.Draft202012Validator({**SCHEMA, "$ref": "#/$defs/comparison"}).validate(doc)
    sharp, sample = doc["models"]  # the user's order
    assert sample["measures"]["kappa"]["rank"] == 1 and sharp["measures"]["kappa"]["rank"] == 2
    assert math.isclose(sample["measures"]["kappa"]["value"], BASELINE["layers"][0]["kappa"],
                        rel_tol=1e-5)
    assert sample["measures"]["kappa"]["stderr"] == sample["result"]["layers"][0]["stderr"]["kappa"]
    assert math.isclose(sample["measures"]["classifier_trace"]["value"],
                        BASELINE["classifier"]["trace"], rel_tol=1e-5)
    rows = list(csv.DictReader(io.StringIO(cs.read_text())))
    assert [row["model"] for row in rows] == [str(SHARP), str(MODEL)]
    assert float(rows[1]["kappa"]) == sample["measures"]["kappa"]["value"]
    assert rows[0]["kappa_rank"] == "2" and float(rows[1]["accuracy"]) > float(rows[0]["accuracy"])


def test_compare_does_not_rank_a_model_near_chance(tmp_path):
    from .zoo import randomized

    random = randomized(MODEL, tmp_path / "random.onnx")
    js, cs = tmp_path / "c.json", tmp_path / "c.csv"
    r = CliRunner().invoke(main, ["compare", str(SHARP), str(random), str(MODEL), "--data",
                                  str(TRAIN), "--json", str(js), "--csv", str(cs)])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[2].startswith(str(MODEL)) and lines[3].startswith(str(SHARP))
    assert lines[4].startswith(f"{random} (near chance: not ranked)")
    assert f"Not ranked, accuracy near chance (they do not fit the data): {random}." in lines
    assert "lower is flatter" in r.stdout
    assert "warning: random.onnx: accuracy" in r.stderr  # the warning names its model
    doc = json.loads(js.read_text())
    jsonschema.Draft202012Validator({**SCHEMA, "$ref": "#/$defs/comparison"}).validate(doc)
    low = doc["models"][1]
    assert low["near_chance"] and all(m["rank"] is None for m in low["measures"].values())
    assert low["measures"]["kappa"]["value"] < doc["models"][2]["measures"]["kappa"]["value"]
    rows = list(csv.DictReader(io.StringIO(cs.read_text())))
    assert [row["near_chance"] for row in rows] == ["False", "True", "False"]


def test_compare_subprocess_and_bad_input(tmp_path):
    ok = run_cli("compare", MODEL, SHARP, "--data", TRAIN, "--sort", "trace", "--limit", "300")
    assert ok.returncode == 0, ok.stderr
    assert "300 samples" in ok.stdout and "Traceback" not in ok.stderr
    bad = run_cli("compare", MODEL, MODEL, "--data", TRAIN)
    assert bad.returncode == 2 and "given twice" in bad.stderr


def test_report_html_is_self_contained(tmp_path):
    out = tmp_path / "rep"
    r = CliRunner().invoke(main, ["report", str(MODEL), "--data", str(TRAIN), "--out", str(out)])
    assert r.exit_code == 0, r.output
    page = (out / "report.html").read_text()
    assert "GlobalAveragePool" in page and "/conv2/Conv kappa" in page and "879.658" in page
    assert re.search(r"classifier layer</t[dh]>\s*<td>/fc/Gemm \(weight 10x32", page)
    (img,) = re.findall(r'<figure><img alt="per-filter[^"]*" src="data:image/png;base64,([^"]+)"',
                        page)
    png = base64.b64decode(img)
    assert png.startswith(b"\x89PNG") and png == (out / "per_filter_0_conv2_Conv.png").read_bytes()
    assert "http" not in page.replace("https://", "")  # nothing fetched from elsewhere
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads((out / "result.json").read_text()))


def test_report_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    r = CliRunner().invoke(main, ["report", str(MODEL), "--data", str(TRAIN), "--out",
                                  str(tmp_path / "rep")])
    assert r.exit_code == 2
    assert "pip install 'onnxflat[report]'" in r.output and not (tmp_path / "rep").exists()


def test_report_subprocess(tmp_path):
    r = run_cli("report", SHARP, "--data", TRAIN, "--out", tmp_path / "r", "--limit", "200")
    assert r.returncode == 0, r.stderr
    assert "200 samples" in (tmp_path / "r" / "report.html").read_text()


@pytest.mark.parametrize("command", ["inspect", "measure", "gate", "compare", "report", "merge",
                                     "plot"])
def test_every_command_has_help_with_examples(command):
    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0 and "Example" in r.output


def test_version_and_top_level_help():
    r = run_cli("--version")
    assert r.returncode == 0 and __version__ in r.stdout
    top = CliRunner().invoke(main, ["--help"])
    for command in ("gate", "compare", "report"):
        assert command in top.output


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_only(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    with progress_bar(1000, "m.onnx", quiet=False) as bar:
        bar.update(500)
        bar.refresh()
    assert "sample/s" in term.getvalue() and "500/1000" in term.getvalue()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    with progress_bar(1000, "m.onnx", quiet=True) as bar:
        bar.update(500)
    assert quiet.getvalue() == ""
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with progress_bar(1000, "m.onnx", quiet=False) as bar:
        bar.update(500)
    assert pipe.getvalue() == ""


def test_measure_and_compare_write_value_and_stderr_alike():
    """One '±' format: the sharp model's kappa standard error (~170) reads '± 170' in both."""
    m = CliRunner().invoke(main, ["measure", str(SHARP), "--data", str(TRAIN), "-q"])
    c = CliRunner().invoke(main, ["compare", str(SHARP), str(MODEL), "--data", str(TRAIN),
                                  "-q"])
    assert m.exit_code == 0 and c.exit_code == 0, (m.output, c.output)
    kappa = re.search(r"^  kappa +(\S+ ± \S+)", m.output, re.M).group(1)
    assert "e+" not in kappa and kappa in c.output, (kappa, c.output)
