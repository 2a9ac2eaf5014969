"""Data sources: .npy pair and image folder give the .npz numbers; --limit/--seed subsets."""

from __future__ import annotations

import json
import math
import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxflat.cli import main
from onnxflat.data import DataSpec, ImageFolder, ImageOptions, open_data
from onnxflat.data.npyfile import NpyFile

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"


def measure_json(tmp_path: Path, name: str, *args) -> dict:
    out = tmp_path / f"{name}.json"
    r = CliRunner().invoke(main, ["measure", str(MODEL), "--json", str(out), *args])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def numbers(doc: dict) -> list[float]:
    layer, c = doc["layers"][0], doc["classifier"]
    return ([doc["loss"], doc["accuracy"], layer["trace"], layer["kappa"],
             layer["kappa_layerwise"], c["trace"], c["kappa"]]
            + [layer["stderr"][k] for k in ("trace", "kappa")]
            + layer["per_filter"]["kappa"])


@pytest.fixture(scope="module")
def train():
    with np.load(TRAIN) as z:
        return z["x"], z["y"]


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory, train):
    """The training digits as 8-bit PNGs, ROOT/<label>/<index>.png; x = k/16 -> pixel 15 k."""
    x, y = train
    root = tmp_path_factory.mktemp("digits")
    pixels = np.rint(x[:, 0] * 240).astype(np.uint8)
    assert np.array_equal(pixels.astype(np.float64) / 240, x[:, 0])  # lossless round trip
    for label in range(10):
        (root / f"{label}").mkdir()
    for i, (img, label) in enumerate(zip(pixels, y)):
        Image.fromarray(img, mode="L").save(root / f"{label}" / f"{i:04d}.png")
    return root


def test_image_folder_reads_exactly_the_npz_inputs(digit_pngs, train):
    x, y = train
    folder = ImageFolder(digit_pngs, ImageOptions(size=(8, 8), channels=1, scale=Fraction(1, 240)))
    order = np.argsort(y, kind="stable")  # class by class, files sorted by index
    assert folder.shape == x.shape and np.array_equal(folder.targets, y[order])
    assert np.array_equal(folder[np.arange(len(y))], x[order])
    assert np.array_equal(folder[5:9], x[order][5:9])


def test_image_folder_run_equals_npz_run(tmp_path, digit_pngs):
    npz = measure_json(tmp_path, "npz", "--data", str(TRAIN))
    img = measure_json(tmp_path, "img", "--data", str(digit_pngs), "--scale", "1/240", "-b", "100")
    assert img["n_samples"] == npz["n_samples"] == 1300
    # Same samples in another order and batching: equal up to float32 summation order.
    np.testing.assert_allclose(numbers(img), numbers(npz), rtol=1e-5, atol=1e-9)


def test_npy_pair_streams_and_equals_npz(tmp_path, train):
    x, y = train
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ds = open_data(DataSpec(str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy")))
    assert isinstance(ds.x, NpyFile)  # streamed by row blocks (RSS bounded), never loaded whole
    npz = measure_json(tmp_path, "npz", "--data", str(TRAIN))
    npy = measure_json(tmp_path, "npy", "--data", str(tmp_path / "x.npy"), "--labels",
                       str(tmp_path / "y.npy"))
    assert numbers(npy) == numbers(npz)  # same samples, same order: bit for bit


def test_limit_and_seed_are_reproducible(tmp_path, train):
    a = measure_json(tmp_path, "a", "--data", str(TRAIN), "--limit", "400", "--seed", "3")
    b = measure_json(tmp_path, "b", "--data", str(TRAIN), "--limit", "400", "--seed", "3",
                     "-b", "7")
    c = measure_json(tmp_path, "c", "--data", str(TRAIN), "--limit", "400", "--seed", "4")
    assert a["n_samples"] == c["n_samples"] == 400
    np.testing.assert_allclose(numbers(b), numbers(a), rtol=1e-6, atol=1e-9)
    assert not math.isclose(a["layers"][0]["kappa"], c["layers"][0]["kappa"], rel_tol=1e-3)
    # The subset is the documented draw, and the same for every source kind.
    x, y = train
    idx = np.sort(np.random.default_rng(3).choice(len(y), 400, replace=False))
    ds = open_data(DataSpec(str(TRAIN), limit=400, seed=3))
    xs = np.concatenate([xb for _, xb, _ in ds.batches(128)])
    assert np.array_equal(xs, x[idx])
    assert len(open_data(DataSpec(str(TRAIN), limit=5000))) == 1300  # all when fewer


def test_image_preprocessing_order(tmp_path):
    rgb = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)  # 1 x 2 pixels
    (tmp_path / "cat").mkdir()
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "cat" / "a.png")
    opts = ImageOptions(size=(1, 2), channels=3, scale=Fraction(1, 10), mean=(1.0, 2.0, 3.0),
                        std=(2.0, 4.0, 8.0), layout="NHWC", channel_order="BGR")
    got = ImageFolder(tmp_path, opts)[[0]]
    want = ((rgb[None, ..., ::-1] / 10.0) - [1, 2, 3]) / [2, 4, 8]
    assert got.shape == (1, 1, 2, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want.astype(np.float32))
    nchw = ImageFolder(tmp_path, ImageOptions(size=(2, 4), channels=3))[[0]]
    assert nchw.shape == (1, 3, 2, 4)  # resized, channels first


def test_spec_is_a_small_picklable_description(digit_pngs):
    spec = DataSpec(str(digit_pngs), images=ImageOptions(scale=Fraction(1, 240)),
                    limit=50).fit(["batch", 1, 8, 8])
    blob = pickle.dumps(spec)
    assert len(blob) < 1000
    ds = open_data(pickle.loads(blob))
    assert len(ds) == 50 and ds.x.shape == (1300, 1, 8, 8)


@pytest.mark.parametrize("make, args, message", [
    (lambda p: np.save(p / "x.npy", np.zeros((3, 1, 8, 8), np.float32)),
     ["--data", "{p}/x.npy"], "needs its labels"),
    (lambda p: np.save(p / "x.npy", np.array([{}, {}], dtype=object)),
     ["--data", "{p}/x.npy", "--labels", "{p}/x.npy"], "Python objects"),
    (lambda p: (p / "empty").mkdir(), ["--data", "{p}/empty"], "no class sub-folders"),
    (lambda p: (p / "cls").mkdir() or (p / "cls" / "a.png").write_text("not png"),
     ["--data", "{p}"], "cannot read image"),
    (lambda p: None, ["--data", str(TRAIN), "--scale", "x"], "fraction like 1/255"),
])
def test_bad_data_exits_2(tmp_path, make, args, message):
    make(tmp_path)
    r = CliRunner().invoke(main, ["measure", str(MODEL)] + [a.format(p=tmp_path) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_image_folder_shards_merge_to_the_full_run(tmp_path, digit_pngs):
    """Shards open the folder from the spec; preprocessing is part of the data's identity."""
    common = ["--data", str(digit_pngs), "--limit", "120", "--seed", "1"]
    full = measure_json(tmp_path, "full", *common, "--scale", "1/240")
    parts = []
    for i, scale in ((1, "1/240"), (2, "1/240"), (3, "1/255")):
        p = tmp_path / f"p{i}.npz"
        r = CliRunner().invoke(main, ["measure", str(MODEL), *common, "--scale", scale,
                                      "--shard", f"{min(i, 2)}/2", "--partial", str(p)])
        assert r.exit_code == 0, r.output
        parts.append(str(p))
    out = tmp_path / "merged.json"
    r = CliRunner().invoke(main, ["merge", *parts[:2], "--json", str(out)])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(numbers(json.loads(out.read_text())), numbers(full), rtol=1e-9)
    bad = CliRunner().invoke(main, ["merge", parts[0], parts[2]])
    assert bad.exit_code == 2 and "different data" in bad.output


def test_rgb_nhwc_bgr_folder_equals_npz(tmp_path):
    """3-channel NHWC model: layout, channel order, mean/std as documented, end to end."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.c2 = torch.nn.Conv2d(4, 5, 3, padding=1)
            self.fc = torch.nn.Linear(5, 3)

        def forward(self, x):  # x: (N, H, W, C)
            h = torch.relu(self.c1(x.permute(0, 3, 1, 2)))
            return self.fc(torch.relu(self.c2(h)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    model = tmp_path / "nhwc.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(2, 6, 6, 3),), str(model), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(30, 6, 6, 3), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], 10)
    for i, (img, label) in enumerate(zip(pixels, labels)):
        (tmp_path / "imgs" / "abc"[label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="RGB").save(tmp_path / "imgs" / "abc"[label] / f"{i:02d}.png")
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    x = ((pixels[..., ::-1] / 255.0 - mean) / std).astype(np.float32)  # BGR, NHWC
    np.savez(tmp_path / "d.npz", x=x, y=labels)
    runs = []
    for args in (["--data", str(tmp_path / "d.npz")],
                 ["--data", str(tmp_path / "imgs"), "--layout", "NHWC", "--channel-order", "BGR",
                  "--mean", "0.5,0.4,0.3", "--std", "0.2,0.25,0.3"]):
        out = tmp_path / f"{len(runs)}.json"
        r = CliRunner().invoke(main, ["measure", str(model), "--json", str(out), *args])
        assert r.exit_code == 0, r.output
        runs.append(numbers(json.loads(out.read_text())))
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-12)
    wrong = CliRunner().invoke(main, ["measure", str(model), "--data", str(tmp_path / "imgs")])
    assert wrong.exit_code == 2 and "--layout NHWC" in wrong.output
