"""Every CLI command parses and analyzes each model once (image folders included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxflat.cli import main
from onnxflat.graph.model import GraphIndex

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "digits_cnn.onnx")
SHARP = str(ROOT / "models" / "digits_cnn_sharp.onnx")
TRAIN = str(ROOT / "models" / "digits_train.npz")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """40 training digits as PNGs, one folder per label (read with --scale 1/240)."""
    with np.load(TRAIN) as z:
        x, y = z["x"][:40], z["y"][:40]
    root = tmp_path_factory.mktemp("digits")
    for label in range(10):
        (root / str(label)).mkdir()
    for i, (img, label) in enumerate(zip(np.rint(x[:, 0] * 240).astype(np.uint8), y)):
        Image.fromarray(img, mode="L").save(root / str(label) / f"{i:02d}.png")
    return str(root)


@pytest.fixture
def calls(monkeypatch):
    """Counts of model parses (onnx.load) and graph analyses (one GraphIndex each)."""
    seen = {"parse": 0, "analyze": 0}
    load, index = onnx.load, GraphIndex.__init__

    def parse(*args, **kwargs):
        seen["parse"] += 1
        return load(*args, **kwargs)

    def analyze(self, *args, **kwargs):
        seen["analyze"] += 1
        index(self, *args, **kwargs)

    monkeypatch.setattr(onnx, "load", parse)
    monkeypatch.setattr(GraphIndex, "__init__", analyze)
    return seen


IMAGES = ["--scale", "1/240"]
COMMANDS = {  # name -> (arguments, with "IMAGES" for the image folder, models given)
    "inspect": (["inspect", MODEL], 1),
    "measure": (["measure", MODEL, "--data", TRAIN], 1),
    "measure-images": (["measure", MODEL, "--data", "IMAGES", *IMAGES], 1),
    "measure-shard": (["measure", MODEL, "--data", TRAIN, "--shard", "1/2", "--partial",
                       "OUT/p.npz"], 1),
    "gate": (["gate", MODEL, "--data", "IMAGES", *IMAGES, "--max-trace", "/conv2/Conv=1e9"],
             1),
    "compare": (["compare", MODEL, SHARP, "--data", "IMAGES", *IMAGES], 2),
    "report": (["report", MODEL, "--data", "IMAGES", *IMAGES, "--out", "OUT/report"], 1),
}


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_parses_and_analyzes_once(name, calls, images, tmp_path):
    args, models = COMMANDS[name]
    args = [images if a == "IMAGES" else a.replace("OUT", str(tmp_path)) for a in args]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert calls == {"parse": models, "analyze": models}
