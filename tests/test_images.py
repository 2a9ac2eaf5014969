"""Image folders: torchvision's evaluation preprocessing, bad files, nested folders, class
files, the model's number of classes; integer arrays and --scale."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxflat
from onnxflat.cli import main
from onnxflat.data import DataSpec, ImageOptions

Image = pytest.importorskip("PIL.Image")

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits_cnn.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_transforms():
    pytest.importorskip("torch")
    from .zoo import torchvision_ops

    torchvision_ops()
    return pytest.importorskip("torchvision.transforms")


def rgb_model(path: Path, classes: int = 3) -> Path:
    """conv 3->4 (3x3) -> ReLU -> GAP -> Gemm to ``classes``: input (N, 3, 32, 32)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w", rng.standard_normal((4, 3, 3, 3))), ("b", rng.standard_normal(4)),
        ("fw", rng.standard_normal((classes, 4))), ("fb", rng.standard_normal(classes)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["z"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "rgb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", classes])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of RGB images of several sizes and aspect ratios, one class nested."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    sizes = [(40, 50), (50, 40), (37, 37), (36, 64), (81, 45)]
    for c, cls in enumerate(["cat", "dog", "eel"]):
        for i, (h, w) in enumerate(sizes):
            sub = root / cls / ("deep" if cls == "eel" and i % 2 else "")
            sub.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels, mode="RGB").save(sub / f"{c}{i}.png")
    return root


def by_hand(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's evaluation transforms on every file, in the folder's order."""
    T = torchvision_transforms()
    tf = T.Compose([T.Resize(36), T.CenterCrop((32, 32)), T.ToTensor(), T.Normalize(MEAN, STD)])
    xs, ys = [], []
    for label, cls in enumerate(sorted(p.name for p in folder.iterdir())):
        for f in sorted((folder / cls).rglob("*.png")):
            with Image.open(f) as im:
                xs.append(tf(im.convert("RGB")).numpy())
            ys.append(label)
    return np.stack(xs), np.asarray(ys)


OPTS = ["--resize-shorter", "36", "--center-crop", "32", "32", "--mean", ",".join(map(str, MEAN)),
        "--std", ",".join(map(str, STD))]


def test_resize_shorter_center_crop_equals_torchvision(tmp_path, folder):
    x, y = by_hand(folder)
    assert len(y) == 15  # the nested files too
    spec = DataSpec(str(folder), images=ImageOptions(
        resize_shorter=36, crop=(32, 32), mean=MEAN, std=STD)).fit(["n", 3, 32, 32], 3)
    ds = spec.open()
    np.testing.assert_allclose(ds.x[np.arange(len(y))], x, rtol=0, atol=2e-6)
    assert np.array_equal(ds.y, y)
    # The command line gives the numbers of the same arrays given from Python.
    model = rgb_model(tmp_path / "rgb.onnx")
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["measure", str(model), "--data", str(folder), *OPTS,
                                  "--json", str(out)])
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    want = onnxflat.measure(model, x, y)
    assert got["n_samples"] == 15
    for a, b in ((got["loss"], want.loss), (got["layers"][0]["kappa"], want.layers[0].kappa),
                 (got["classifier"]["trace"], want.classifier.trace)):
        assert a == pytest.approx(b, rel=1e-5)
    assert got["data"]["source"]["resize_shorter"] == 36


def test_corrupt_files_stop_the_run_or_are_skipped(tmp_path, folder):
    import shutil
    root = tmp_path / "imgs"
    shutil.copytree(folder, root)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "cat" / "half.png").write_bytes((root / "cat" / "00.png").read_bytes()[:200])
    model = rgb_model(tmp_path / "rgb.onnx")
    r = CliRunner().invoke(main, ["measure", str(model), "--data", str(root), *OPTS])
    assert r.exit_code == 2
    assert "cannot read image" in r.output and "half.png" in r.output
    assert "--skip-bad" in r.output
    r = CliRunner().invoke(main, ["measure", str(model), "--data", str(root), *OPTS,
                                  "--skip-bad"])
    assert r.exit_code == 0, r.output
    assert "skipped 2 of 17 image files that do not decode (first: cat/half.png" in r.output
    assert "15 samples" in r.output


def test_classes_file_keeps_the_labels_of_a_subset(tmp_path, folder):
    import shutil
    root = tmp_path / "subset"
    shutil.copytree(folder / "dog", root / "dog")
    shutil.copytree(folder / "eel", root / "eel")
    model = rgb_model(tmp_path / "rgb.onnx")
    r = CliRunner().invoke(main, ["measure", str(model), "--data", str(root), *OPTS])
    assert r.exit_code == 0, r.output
    assert "warning: subset has 2 class folders, the model 3 classes: the sorted folder names "\
        "are taken as labels 0..1" in r.output and "--classes FILE" in r.output
    x, y = by_hand(folder)
    keep = y > 0  # dog = 1, eel = 2
    want = onnxflat.measure(model, x[keep], y[keep])
    for name, text in (("classes.txt", "cat\ndog\neel\n"), ("pairs.txt", "eel 2\ndog 1\n"),
                       ("classes.json", json.dumps({"dog": 1, "eel": 2}))):
        (tmp_path / name).write_text(text)
        out = tmp_path / f"{name}.json"
        r = CliRunner().invoke(main, ["measure", str(model), "--data", str(root), *OPTS,
                                      "--classes", str(tmp_path / name), "--json", str(out)])
        assert r.exit_code == 0, (name, r.output)
        assert json.loads(out.read_text())["loss"] == pytest.approx(want.loss, rel=1e-5)
    (tmp_path / "bad.txt").write_text("dog 1\n")
    r = CliRunner().invoke(main, ["measure", str(model), "--data", str(root), *OPTS,
                                  "--classes", str(tmp_path / "bad.txt")])
    assert r.exit_code == 2 and "class folder 'eel' is not in --classes bad.txt" in r.output
    (tmp_path / "big.txt").write_text("dog 1\neel 7\n")
    r = CliRunner().invoke(main, ["measure", str(model), "--data", str(root), *OPTS,
                                  "--classes", str(tmp_path / "big.txt")])
    assert r.exit_code == 2 and "gives label 7, the model has 3 classes" in r.output
    two = rgb_model(tmp_path / "two.onnx", classes=2)
    r = CliRunner().invoke(main, ["measure", str(two), "--data", str(folder), *OPTS])
    assert r.exit_code == 2
    assert "imgs0 has 3 class folders, the model 2 classes: give --classes FILE" in r.output


@pytest.mark.parametrize("args, message", [
    (["--resize-shorter", "36"], "add --center-crop H W"),
    (["--resize-shorter", "36", "--resize", "32", "32", "--center-crop", "32", "32"],
     "not both"),
])
def test_resize_options_refused(tmp_path, folder, args, message):
    model = rgb_model(tmp_path / "rgb.onnx")
    r = CliRunner().invoke(main, ["measure", str(model), "--data", str(folder), *args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_integer_arrays_warn_or_scale(tmp_path):
    with np.load(TRAIN) as z:
        x, y = z["x"], z["y"]
    pixels = np.rint(x * 255).astype(np.uint8)
    np.savez(tmp_path / "u8.npz", x=pixels, y=y)
    np.savez(tmp_path / "f.npz", x=pixels.astype(np.float32) / 255, y=y)
    base = ["measure", str(DIGITS), "--data"]
    raw = CliRunner().invoke(main, [*base, str(tmp_path / "u8.npz")])
    assert raw.exit_code == 0, raw.output
    assert "u8.npz: x is uint8, used as float32 without scaling (lossless)" in raw.output
    assert "--scale 1/255" in raw.output
    outs = []
    for name, extra in (("u8.npz", ["--scale", "1/255"]), ("f.npz", [])):
        out = tmp_path / f"{name}.json"
        r = CliRunner().invoke(main, [*base, str(tmp_path / name), *extra, "--json", str(out)])
        assert r.exit_code == 0 and "without scaling" not in r.output, r.output
        outs.append(json.loads(out.read_text()))
    assert outs[0]["loss"] == pytest.approx(outs[1]["loss"], rel=1e-6)
    assert outs[0]["data"]["parts"]["preprocessing"] != outs[1]["data"]["parts"]["preprocessing"]
