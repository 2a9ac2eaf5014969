"""Fuzz the model loader, the data reader and the partial-result reader with seeded
mutations of the shipped fixtures.

Each case runs ``onnxflat measure`` in-process and must end with exit code 0 (then every
number in the JSON is finite) or 2 (one ``error:`` line), never 3, a traceback or a hang
(a per-case alarm). A small sample also runs as real processes. ``ONNXFLAT_FUZZ_CASES``
raises the count for a deeper local run; a failure names its case number and mutations.
The checks that the mutations reach both outcomes read the first ``COVERAGE`` cases, which
are the same whatever the count (each case is seeded by its index).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxflat.cli import main
from onnxflat.data import arrays

from .mutate import mutate_data, mutate_model, mutate_partial

ROOT = Path(__file__).resolve().parents[1]
MODELS = [ROOT / "models" / "digits_cnn.onnx", ROOT / "models" / "digits_cnn_sharp.onnx"]
DATA = ROOT / "models" / "digits_train.npz"
CASES = int(os.environ.get("ONNXFLAT_FUZZ_CASES", "500"))
SEED = 20261128
CASE_SECONDS = 20
PARTIAL_CASES = max(1, CASES // 2)
COVERAGE = 40  # cases always run, and read by the outcome checks


def outcomes(codes: list[int]) -> dict[int, int]:
    """Exit code -> count among the first ``COVERAGE`` cases."""
    first = codes[:COVERAGE]
    return {0: first.count(0), 2: first.count(2)}


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no handler under test swallows it."""


def _alarm(signum, frame):
    raise Hang


def invoke(args: list[str], label: str) -> tuple[int, str]:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        with warnings.catch_warnings(record=True) as shown:  # they would print on stderr
            warnings.simplefilter("always")
            r = CliRunner().invoke(main, args)
        noise = [w for w in shown if issubclass(w.category, (UserWarning, RuntimeWarning))]
        assert not noise, f"{label}: warning printed: {noise[0].message}"
    except Hang:
        pytest.fail(f"{label}: no answer within {CASE_SECONDS} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    errors = [ln for ln in r.stderr.splitlines() if not ln.startswith("warning: ")]
    assert r.exit_code in (0, 2), f"{label}: exit {r.exit_code}: {r.stderr}{r.exception!r}"
    assert "Traceback" not in r.stderr, f"{label}: {r.stderr}"
    if r.exit_code == 2:
        assert len(errors) == 1, f"{label}: {r.stderr}"
    return r.exit_code, r.stderr


def assert_finite(doc, label):
    if isinstance(doc, dict):
        for v in doc.values():
            assert_finite(v, label)
    elif isinstance(doc, list):
        for v in doc:
            assert_finite(v, label)
    elif isinstance(doc, float):
        assert math.isfinite(doc), f"{label}: non-finite number in the result"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """24 labelled samples: enough for every branch, cheap per case."""
    with np.load(DATA) as z:
        x, y = z["x"][:24].copy(), z["y"][:24].copy()
    p = tmp_path_factory.mktemp("fuzzdata") / "small.npz"
    np.savez(p, x=x, y=y)
    return x, y, p


def run_case(args, folder: Path, label: str) -> tuple[int, str]:
    out = folder / "r.json"
    out.unlink(missing_ok=True)
    batch = ["--batch-size", "10"] if args[0] == "measure" else []
    code, err = invoke(args + ["--json", str(out)] + batch, label)
    if code == 0:
        assert_finite(json.loads(out.read_text()), label)
    return code, err


def model_cases(folder: Path, n: int):
    """(case index, path, label) of n mutated models, written one after another."""
    bases = {p.name: p.read_bytes() for p in MODELS if p.exists()}
    bases["computed weights"] = computed_weights().SerializeToString()
    names = list(bases)
    for i in range(n):
        rng = np.random.default_rng([SEED, 0, i])
        k = int(rng.integers(len(names)))
        raw, what = mutate_model(bases[names[k]], rng)
        (folder / "w.bin").write_bytes(rng.bytes(int(rng.integers(0, 8192))))
        path = folder / f"m{i % 2}.onnx"
        path.write_bytes(raw)
        yield i, path, f"model case {i} ({names[k]}: {what})"


def computed_weights() -> onnx.ModelProto:
    """The sample with its weights computed in the graph (int8 behind DequantizeLinear, a
    ConstantOfShape fill, float16 behind Cast), so the mutations reach the constant folding."""
    from onnx import TensorProto, helper, numpy_helper
    m = onnx.load(MODELS[0])
    nodes = []
    for k, t in enumerate(list(m.graph.initializer)):
        w = numpy_helper.to_array(t)
        m.graph.initializer.remove(t)
        if k % 3 == 0:
            scale = np.float32(np.abs(w).max() / 100 + 1e-8)
            m.graph.initializer.extend([
                numpy_helper.from_array(np.round(w / scale).astype(np.int8), t.name + "_q"),
                numpy_helper.from_array(scale, t.name + "_s")])
            nodes.append(helper.make_node("DequantizeLinear", [t.name + "_q", t.name + "_s"],
                                          [t.name]))
        elif k % 3 == 1:
            m.graph.initializer.append(numpy_helper.from_array(np.array(w.shape), t.name + "_n"))
            nodes.append(helper.make_node("ConstantOfShape", [t.name + "_n"], [t.name],
                                          value=numpy_helper.from_array(w.ravel()[:1])))
        else:
            m.graph.initializer.append(numpy_helper.from_array(w.astype(np.float16),
                                                               t.name + "_h"))
            nodes.append(helper.make_node("Cast", [t.name + "_h"], [t.name],
                                          to=TensorProto.FLOAT))
    for k, n in enumerate(nodes):
        m.graph.node.insert(k, n)
    return m


def test_fuzz_models(tmp_path, small):
    codes = [run_case(["measure", str(path), "--data", str(small[2])], tmp_path, label)[0]
             for _, path, label in model_cases(tmp_path, max(CASES, COVERAGE))]
    seen = outcomes(codes)
    assert seen[2] > COVERAGE // 4, seen  # the mutations do reach the refusals
    assert seen[0] > 0, seen  # and some mutants still measure


def test_fuzz_data(tmp_path, small, monkeypatch):
    monkeypatch.setattr(arrays, "STREAM_BYTES", 0)  # uncompressed .npz x: the streamed reader
    x, y, _ = small
    codes = []
    for i in range(max(CASES, COVERAGE)):
        rng = np.random.default_rng([SEED, 1, i])
        folder = tmp_path / f"c{i % 2}"
        folder.mkdir(exist_ok=True)
        for f in folder.iterdir():
            f.unlink()
        args, what = mutate_data(x, y, folder, rng)
        codes.append(run_case(["measure", str(MODELS[0])] + args, tmp_path,
                              f"data case {i} ({what})")[0])
    seen = outcomes(codes)
    assert seen[2] > COVERAGE // 4 and seen[0] > COVERAGE // 20, seen


def test_fuzz_partials(tmp_path, small):
    """Mutated partial result files (CI artifacts) through ``onnxflat merge``."""
    parts = [tmp_path / f"p{i}.npz" for i in (1, 2)]
    for i, p in enumerate(parts, 1):
        assert invoke(["measure", str(MODELS[0]), "--data", str(small[2]), "--shard", f"{i}/2",
                       "--partial", str(p)], "shard")[0] == 0
    codes = []
    for i in range(max(PARTIAL_CASES, COVERAGE)):
        rng = np.random.default_rng([SEED, 3, i])
        k = int(rng.integers(2))
        bad = tmp_path / "mutant.npz"
        what = mutate_partial(parts[k], bad, rng)
        codes.append(run_case(["merge", str(bad), str(parts[1 - k])], tmp_path,
                              f"partial case {i} ({what})")[0])
    seen = outcomes(codes)
    assert seen[2] > COVERAGE // 2 and seen[0] > 0, seen


def test_fuzz_image_folder(tmp_path):
    """An image folder (six formats) with one file's bytes mutated per case."""
    from PIL import Image

    from .mutate import mutate_bytes, pick

    files, root = [], tmp_path / "images"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i, fmt in enumerate(["png", "jpg", "bmp", "gif", "tiff", "webp"]):
            f = root / c / f"{i}.{fmt}"
            pixels = np.random.default_rng([SEED, i]).integers(0, 256, (12, 10, 3), np.uint8)
            Image.fromarray(pixels).save(f)
            files.append(f)
    original = {f: f.read_bytes() for f in files}
    codes = []
    for i in range(max(PARTIAL_CASES, COVERAGE)):
        rng = np.random.default_rng([SEED, 4, i])
        f = pick(rng, files)
        raw, what = mutate_bytes(original[f], rng)
        f.write_bytes(raw)
        codes.append(run_case(["measure", str(MODELS[0]), "--data", str(root)], tmp_path,
                              f"image case {i} ({f.name}: {what})")[0])
        f.write_bytes(original[f])
    seen = outcomes(codes)
    assert seen[2] > COVERAGE // 4 and seen[0] > 0, seen


def test_fuzz_sample_as_processes(tmp_path, small):
    """A refused mutant model and a refused mutant data set through ``python -m onnxflat``:
    the same exit code 2, one stderr line, no traceback."""
    x, y, good = small
    model = next(p for _, p, lab in model_cases(tmp_path, 50)
                 if run_case(["measure", str(p), "--data", str(good)], tmp_path, lab)[0] == 2)
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(50):
        data_args, what = mutate_data(x, y, folder, np.random.default_rng([SEED, 2, i]))
        if run_case(["measure", str(MODELS[0])] + data_args, tmp_path, what)[0] == 2:
            break
    for args in ([str(model), "--data", str(good)], [str(MODELS[0])] + data_args):
        r = subprocess.run([sys.executable, "-m", "onnxflat", "measure"] + args,
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
