"""``onnxflat plot RUN``: a PNG of the measures over epochs; a bad run file is exit 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from onnxflat.cli import main
from onnxflat.report.runplot import panels
from onnxflat.track import RunLog

PNG = b"\x89PNG\r\n\x1a\n"


def rows():
    return [{"epoch": e, "seconds": 0.1, "train_loss": 1.0 / (e + 1), "val_accuracy": 0.5,
             "lr": 0.1, "n_samples": 100, "loss": 0.5 / (e + 1), "loss_se": 0.05,
             "accuracy": 0.9, "accuracy_se": 0.03, "layer0.kappa": 10.0 + e,
             "layer0.kappa_se": 1.0, "classifier.trace": 2.0, "classifier.trace_se": 0.2}
            for e in (0, 2, 4)]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_writes_png(tmp_path, suffix):
    run = tmp_path / f"run{suffix}"
    for row in rows():
        RunLog(run).append(row)
    r = CliRunner().invoke(main, ["plot", str(run)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run.png").read_bytes().startswith(PNG) and "3 epochs" in r.output


def test_panels():
    assert panels(rows()) == [("loss", ["loss", "train_loss"]),
                              ("accuracy", ["accuracy", "val_accuracy"]),
                              ("layer0.kappa", ["layer0.kappa"]),
                              ("classifier.trace", ["classifier.trace"]),
                              ("other metrics", ["lr"])]


@pytest.mark.parametrize("name, text", [
    ("garbage.jsonl", "not json\n"),
    ("list.jsonl", "[1, 2]\n"),
    ("noepoch.jsonl", json.dumps({"loss": 1.0}) + "\n"),
    ("nomeasures.jsonl", json.dumps({"epoch": 0, "loss": 1.0}) + "\n"),
    ("empty.csv", ""),
    ("run.txt", "epoch\n0\n"),
])
def test_bad_file_exit_2(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    r = CliRunner().invoke(main, ["plot", str(tmp_path / name), "--out", str(tmp_path / "o.png")])
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_missing_file(tmp_path):
    r = CliRunner().invoke(main, ["plot", str(tmp_path / "nope.jsonl")])
    assert r.exit_code == 2 and "not found" in r.output
