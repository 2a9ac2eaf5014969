"""Every bad model or data input of issue 6: exit code 2, one line that names the problem.

Most cases run in-process (click's CliRunner); a sample runs as a real subprocess to check
that stderr holds one line and no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxflat.cli import main
from onnxflat.errors import first_line

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"
CONV2_WEIGHT = "onnx::Conv_20"


@pytest.fixture(scope="module")
def xy():
    with np.load(TRAIN) as z:
        return z["x"][:96].copy(), z["y"][:96].copy()


@pytest.fixture(scope="module")
def good_data(tmp_path_factory, xy):
    p = tmp_path_factory.mktemp("data") / "good.npz"
    np.savez(p, x=xy[0], y=xy[1])
    return p


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.stderr, r.stdout


def assert_refused(args, *words, code=2):
    exit_code, err, out = run(*args)
    assert exit_code == code, (exit_code, err, out)
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1 and "Traceback" not in err, err  # notices may precede the error
    for w in words:
        assert w.lower() in lines[0].lower(), (w, lines[0])
    return lines[0]


def edited(tmp_path, edit, name="m.onnx"):
    """The sample model after ``edit(model)``, saved in tmp_path."""
    m = onnx.load(MODEL)
    edit(m)
    p = tmp_path / name
    onnx.save(m, p)
    return p


def set_initializer(m, name, fn):
    t = next(t for t in m.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t).copy()), name))


# ---- model input -------------------------------------------------------------------------

def test_model_missing(tmp_path, good_data):
    assert_refused(["measure", tmp_path / "nope.onnx", "--data", good_data], "not found")


def test_model_is_a_folder(tmp_path, good_data):
    code, err, _ = run("measure", tmp_path, "--data", good_data)
    assert code == 2 and "directory" in err


def test_model_empty(tmp_path, good_data):
    (tmp_path / "e.onnx").write_bytes(b"")
    assert_refused(["measure", tmp_path / "e.onnx", "--data", good_data], "empty")


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.97])
def test_model_truncated(tmp_path, good_data, cut):
    raw = MODEL.read_bytes()
    (tmp_path / "t.onnx").write_bytes(raw[:int(len(raw) * cut)])
    assert_refused(["measure", tmp_path / "t.onnx", "--data", good_data], "t.onnx")


def test_model_random_bytes(tmp_path, good_data):
    (tmp_path / "r.onnx").write_bytes(np.random.default_rng(0).bytes(4000))
    assert_refused(["measure", tmp_path / "r.onnx", "--data", good_data], "cannot parse",
                   "onnx")


def test_model_without_conv(tmp_path, good_data):
    onnx.save(onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 1, 8, 8] x) => (float[1, 1, 8, 8] y) { y = Relu (x) }"""),
              tmp_path / "relu.onnx")
    assert_refused(["measure", tmp_path / "relu.onnx", "--data", good_data], "no Conv")
    assert_refused(["inspect", tmp_path / "relu.onnx"], "no supported head")


def test_model_dangling_input(tmp_path, good_data):
    def cut(m):
        m.graph.node[1].input[0] = "lost_tensor"
    p = edited(tmp_path, cut)
    assert_refused(["measure", p, "--data", good_data], "lost_tensor", "dangling")


def test_model_unsupported_opset(tmp_path, good_data):
    def bump(m):
        m.opset_import[0].version = 99
    assert_refused(["measure", edited(tmp_path, bump), "--data", good_data], "opset 99",
                   "supported")


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../x.bin"])
def test_model_external_data_outside_folder(tmp_path, good_data, location):
    (tmp_path / "outside.bin").write_bytes(b"\0" * 4096)
    folder = tmp_path / "model"
    folder.mkdir()

    def externalize(m):
        t = m.graph.initializer[0]
        t.ClearField("raw_data")
        t.ClearField("float_data")
        t.data_location = TensorProto.EXTERNAL
        e = t.external_data.add()
        e.key, e.value = "location", location
    assert_refused(["measure", edited(folder, externalize), "--data", good_data],
                   "outside the model's folder", "refused")


def test_model_external_data_inside_folder_loads(tmp_path, good_data):
    m = onnx.load(MODEL)
    onnx.save(m, tmp_path / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)
    docs = []
    for model in (tmp_path / "m.onnx", MODEL):
        out = tmp_path / f"{model.stem}.json"
        code, err, _ = run("measure", model, "--data", good_data, "--json", out)
        assert code == 0, err
        docs.append(json.loads(out.read_text()))
    external, inline = ({k: v for k, v in d.items() if k != "model"} for d in docs)
    assert external == inline  # the same weights, read from w.bin: the same numbers


def test_model_enormous_fixed_batch(tmp_path, good_data):
    def huge(m):
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 10 ** 8
    assert_refused(["measure", edited(tmp_path, huge), "--data", good_data], "GiB",
                   "refused")


def test_model_enormous_declared_image(tmp_path, good_data):
    def huge(m):
        for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
            d.dim_value = 10 ** 9
    assert_refused(["measure", edited(tmp_path, huge), "--data", good_data], "expects")


def test_model_enormous_initializer_shape(tmp_path, good_data):
    def huge(m):
        m.graph.initializer[0].dims[0] = 10 ** 9
    assert_refused(["measure", edited(tmp_path, huge), "--data", good_data], "conv1.weight",
                   "declared shape (1000000000, 1, 3, 3)")


def test_model_initializer_data_longer_than_shape(tmp_path, good_data):
    def longer(m):
        m.graph.initializer[1].dims[0] = 4  # 16 biases stored, 4 declared
    assert_refused(["measure", edited(tmp_path, longer), "--data", good_data], "conv1.bias",
                   "does not hold")


def test_model_not_batch_first(tmp_path, good_data):
    def swap(m):  # the classifier's Gemm becomes a Transpose: logits come out (10, N)
        gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
        gemm.op_type = "Transpose"
        del gemm.attribute[:]
        del gemm.input[1:]
    code, err, _ = run("measure", edited(tmp_path, swap), "--data", good_data)
    assert code == 2 and "batch axis first" in err, err


def test_model_input_not_an_image(tmp_path, good_data):
    def tokens(m):
        m.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    assert_refused(["measure", edited(tmp_path, tokens), "--data", good_data], "INT64",
                   "not a float image")


def test_model_two_inputs(tmp_path, good_data):
    def second(m):
        m.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1]))
    assert_refused(["measure", edited(tmp_path, second), "--data", good_data], "2 inputs")


# ---- data input --------------------------------------------------------------------------

def data_case(tmp_path, **arrays):
    p = tmp_path / "d.npz"
    np.savez(p, **arrays)
    return ["measure", MODEL, "--data", p]


def test_data_missing(tmp_path):
    code, err, _ = run("measure", MODEL, "--data", tmp_path / "none.npz")
    assert code == 2 and ("not exist" in err or "not found" in err), err


def test_data_nhwc_for_nchw(tmp_path, xy):
    x, y = xy
    assert_refused(data_case(tmp_path, x=x.transpose(0, 2, 3, 1), y=y), "NHWC",
                   "transpose(0, 3, 1, 2)")


def test_data_wrong_shape(tmp_path, xy):
    x, y = xy
    assert_refused(data_case(tmp_path, x=x[:, :, :5], y=y), "(1, 5, 8)", "expects 1x8x8")


def test_data_int_lossless_is_converted_with_a_notice(tmp_path, xy):
    x, y = xy
    xi = np.round(x * 4).astype(np.int16)
    code, err, out = run(*data_case(tmp_path, x=xi, y=y))
    assert code == 0, err
    assert "int16" in err and "lossless" in err
    code, _, ref = run(*data_case(tmp_path, x=xi.astype(np.float32), y=y))
    assert code == 0 and out == ref


def test_data_int_lossy_refused(tmp_path, xy):
    x, y = xy
    xi = np.full(x.shape, 2 ** 30 + 1, np.int64)
    assert_refused(data_case(tmp_path, x=xi, y=y), "int64", "cannot hold exactly")


@pytest.mark.parametrize("dtype", [bool, np.complex64, "U3"])
def test_data_non_numeric_x(tmp_path, xy, dtype):
    x, y = xy
    assert_refused(data_case(tmp_path, x=x.astype(dtype), y=y), "dtype")


@pytest.mark.parametrize("shift, shown", [(10, "label 1"), (-10, "label -")])
def test_labels_out_of_range(tmp_path, xy, shift, shown):
    x, y = xy
    assert_refused(data_case(tmp_path, x=x, y=y + shift), shown, "out of range", "10 classes")


def test_labels_float(tmp_path, xy):
    x, y = xy
    assert_refused(data_case(tmp_path, x=x, y=y.astype(np.float32)), "float32",
                   "integer class")


def test_labels_one_hot_accepted_with_notice(tmp_path, xy):
    x, y = xy
    code, err, out = run(*data_case(tmp_path, x=x, y=np.eye(10, dtype=np.float32)[y]))
    assert code == 0, err
    assert "one-hot" in err and "argmax" in err
    code, _, ref = run(*data_case(tmp_path, x=x, y=y))
    assert code == 0 and out == ref


def test_labels_one_hot_wrong_width(tmp_path, xy):
    x, y = xy
    assert_refused(data_case(tmp_path, x=x, y=np.eye(12, dtype=np.int8)[y]), "12 columns",
                   "10 classes")


def test_labels_soft_not_one_hot(tmp_path, xy):
    x, y = xy
    assert_refused(data_case(tmp_path, x=x, y=np.full((len(y), 10), 0.1)), "not one-hot")


def test_length_mismatch(tmp_path, xy):
    x, y = xy
    assert_refused(data_case(tmp_path, x=x, y=y[:50]), "96 samples", "50 labels")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_x(tmp_path, xy, value):
    x, y = xy
    x = x.copy()
    x[71, 0, 2, 5] = value
    assert_refused(data_case(tmp_path, x=x, y=y), "sample 71", "NaN or Inf")


def test_empty_data(tmp_path, xy):
    x, y = xy
    assert_refused(data_case(tmp_path, x=x[:0], y=y[:0]), "no samples")


def test_pickle_inside_npz_refused(tmp_path, xy):
    x, y = xy
    marker = tmp_path / "unpickled"

    class Payload:  # would create the marker file if ever unpickled
        def __reduce__(self):
            return (Path.touch, (marker,))
    p = tmp_path / "evil.npz"
    np.savez(p, x=np.array([Payload()] * len(y), dtype=object), y=y)
    assert_refused(["measure", MODEL, "--data", p], "pickled", "never loads")
    assert not marker.exists()


def test_missing_key(tmp_path, xy):
    assert_refused(data_case(tmp_path, images=xy[0], y=xy[1]), "'x'", "--x-key")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04junk", b"plain text\n"])
def test_not_an_npz(tmp_path, content):
    (tmp_path / "bad.npz").write_bytes(content)
    assert_refused(["measure", MODEL, "--data", tmp_path / "bad.npz"], "bad.npz")


def test_truncated_npz(tmp_path, good_data):
    raw = good_data.read_bytes()
    (tmp_path / "t.npz").write_bytes(raw[:len(raw) // 2])
    assert_refused(["measure", MODEL, "--data", tmp_path / "t.npz"], "t.npz")


# ---- numerical safety --------------------------------------------------------------------

def test_non_finite_activations_name_the_batch(tmp_path, xy):
    x, y = xy

    def poison(m):
        set_initializer(m, CONV2_WEIGHT, lambda w: np.where(np.arange(w.size).reshape(
            w.shape) == 0, np.float32(np.inf), w))
    args = ["measure", edited(tmp_path, poison), "--data", data_case(tmp_path, x=x, y=y)[-1],
            "--batch-size", "32"]
    line = assert_refused(args, "batch 0", "samples 0..31", "non-finite")
    assert "logits" in line or "activation" in line


def test_overflowing_logits_name_the_batch(tmp_path, xy):
    x, y = xy

    def overflow(m):
        set_initializer(m, "fc.weight", lambda w: (w * 1e38).astype(np.float32))
    args = ["measure", edited(tmp_path, overflow), "--data", data_case(tmp_path, x=x, y=y)[-1]]
    assert_refused(args, "batch 0", "non-finite", "logits")


def test_near_chance_warning(tmp_path, xy):
    x, y = xy
    shuffled = (y + 3) % 10  # labels mean nothing now
    code, err, out = run(*data_case(tmp_path, x=x, y=shuffled))
    assert code == 0
    assert "near chance" in err and "1/10" in err
    code, err, _ = run(*data_case(tmp_path, x=x, y=y))
    assert code == 0 and "near chance" not in err


def test_unexpected_error_exit_3_and_debug(tmp_path, good_data, monkeypatch):
    import onnxflat.measures.flatness as flatness

    def boom(*a, **k):
        raise RuntimeError("simulated bug\nsecond line")
    monkeypatch.setattr(flatness.FlatnessAccumulator, "update", boom)
    line = assert_refused(["measure", MODEL, "--data", good_data], "internal error",
                          "RuntimeError", "simulated bug", "--debug", code=3)
    assert "second line" not in line
    r = CliRunner().invoke(main, ["--debug", "measure", str(MODEL), "--data", str(good_data)])
    assert isinstance(r.exception, RuntimeError) and r.exit_code not in (0, 2)


def test_first_line():
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("\n  a problem:\n  the detail\nmore")) == "a problem: the detail"
    assert len(first_line(ValueError("x" * 1000), limit=50)) == 50


# ---- the same through a real process -----------------------------------------------------

@pytest.mark.parametrize("case", ["random_model", "nhwc", "pickle"])
def test_subprocess_one_line_no_traceback(tmp_path, xy, case):
    x, y = xy
    model, data = MODEL, tmp_path / "d.npz"
    if case == "random_model":
        model = tmp_path / "r.onnx"
        model.write_bytes(np.random.default_rng(1).bytes(3000))
        np.savez(data, x=x, y=y)
    elif case == "nhwc":
        np.savez(data, x=x.transpose(0, 2, 3, 1), y=y)
    else:
        np.savez(data, x=x, y=np.array([None] * len(y), dtype=object))
    r = subprocess.run([sys.executable, "-m", "onnxflat", "measure", str(model), "--data",
                        str(data)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: ") and r.stdout == ""


def test_image_decompression_bomb_refused(tmp_path):
    """A small PNG that declares 400 megapixels is refused before it is decoded."""
    import struct
    import zlib

    from PIL import Image

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    w = h = 20000
    rows = zlib.compress(b"".join(b"\0" * (w + 1) for _ in range(h)), 9)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / c / "0.png")
    (tmp_path / "a" / "bomb.png").write_bytes(png)
    assert_refused(["measure", MODEL, "--data", tmp_path], "bomb.png", "too large")


# ---- onnxruntime failures: the model's or the data's ------------------------------------

def test_runtime_failure_inside_the_model_is_a_model_error(tmp_path, good_data):
    """A Reshape hard-coding batch 1 in a model with a free batch axis fails inside
    onnxruntime: told as the model's failure (exit 2), not as bad data."""
    def edit(m):
        flat = next(n for n in m.graph.node if n.op_type == "Flatten")
        m.graph.initializer.append(numpy_helper.from_array(np.array([1, 32]), "one_row"))
        flat.CopyFrom(helper.make_node("Reshape", [flat.input[0], "one_row"],
                                       list(flat.output), name="one_row_reshape"))
    assert_refused(["measure", edited(tmp_path, edit), "--data", good_data, "--batch-size", 4],
                   "onnxruntime cannot run the model", "one_row_reshape")


def test_runtime_error_classes():
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    from onnxflat.errors import DataError, ModelError
    from onnxflat.runtime import run_error
    assert isinstance(run_error(state.InvalidArgument("Got invalid dimensions"), (2, 1, 8, 8)),
                      DataError)
    assert isinstance(run_error(state.NotImplemented("Could not find an implementation"),
                                (2, 1, 8, 8)), ModelError)
    oom = run_error(state.RuntimeException("Failed to allocate memory"), (2, 1, 8, 8))
    assert isinstance(oom, DataError) and "--batch-size" in str(oom)


@pytest.mark.parametrize("where, lengths", [("after_pooling", (5, 5, 5, 5)),
                                            ("after_pooling", (32, 32, 32, 5)),
                                            ("before_pooling", (32, 32, 32, 5))])
def test_batchnorm_parameters_of_wrong_length(tmp_path, good_data, where, lengths):
    """A BatchNormalization whose parameters do not fit the features is a bad model (exit 2,
    naming the node), not an internal error."""
    def edit(m):
        op = "Flatten" if where == "after_pooling" else "GlobalAveragePool"
        i = next(k for k, n in enumerate(m.graph.node) if n.op_type == op)
        src = m.graph.node[i].input[0] if where == "before_pooling" else m.graph.node[i].output[0]
        names = []
        for k, n in enumerate(lengths):
            names.append(f"bn{k}")
            m.graph.initializer.append(numpy_helper.from_array(
                np.full(n, 0.5 + k, np.float32), names[-1]))
        for n in m.graph.node:
            n.input[:] = ["bn_out" if x == src else x for x in n.input]
        m.graph.node.insert(i + (where == "after_pooling"), helper.make_node(
            "BatchNormalization", [src] + names, ["bn_out"], name="bad_bn"))
    line = assert_refused(["inspect", edited(tmp_path, edit)], "bad_bn", "BatchNormalization")
    assert "internal error" not in line
