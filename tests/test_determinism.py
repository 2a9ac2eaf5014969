"""The numbers do not depend on how the data is fed: batch size, sample order, threads,
streamed or loaded reading, repeated runs.

onnxruntime computes each sample's activations identically whatever the batch (measured:
equal bit for bit on the sample model), so only the float64 summation order of the
per-sample terms differs: the tolerance is 1e-12 relative (measured: under 3e-15).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnxflat import measure
from onnxflat.data import arrays, load_npz

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"
RTOL = 1e-12


def numbers(res) -> np.ndarray:
    layer = res.layers[0]
    return np.array([res.loss, res.accuracy, res.stderr["loss"], layer.trace, layer.kappa,
                     layer.kappa_layerwise, layer.stderr["kappa"], res.classifier.trace,
                     res.classifier.kappa, *layer.per_filter["trace"],
                     *layer.per_filter["kappa"]])


@pytest.fixture(scope="module")
def data():
    return load_npz(TRAIN)


@pytest.fixture(scope="module")
def reference(data):
    return numbers(measure(MODEL, data, batch_size=64))


def test_repeated_runs_are_identical(data, reference):
    assert np.array_equal(numbers(measure(MODEL, data, batch_size=64)), reference)


@pytest.mark.parametrize("batch_size", [1, 7, 1300])
def test_batch_size(data, reference, batch_size):
    np.testing.assert_allclose(numbers(measure(MODEL, data, batch_size=batch_size)), reference,
                               rtol=RTOL, atol=0)


def test_sample_order(data, reference):
    perm = np.random.default_rng(0).permutation(len(data))
    got = numbers(measure(MODEL, data.subset(perm), batch_size=50))
    np.testing.assert_allclose(got, reference, rtol=RTOL, atol=0)


def test_threads(data, reference):
    np.testing.assert_allclose(numbers(measure(MODEL, data, batch_size=64, threads=1)),
                               reference, rtol=RTOL, atol=0)


def test_streamed_reading_equals_loaded(tmp_path, monkeypatch, reference):
    with np.load(TRAIN) as z:
        np.savez(tmp_path / "d.npz", x=z["x"], y=z["y"])
    monkeypatch.setattr(arrays, "STREAM_BYTES", 0)
    ds = load_npz(tmp_path / "d.npz")
    assert not isinstance(ds.x, np.ndarray)
    assert np.array_equal(numbers(measure(MODEL, ds, batch_size=64)), reference)


@pytest.mark.parametrize("threads", [3, 8])
def test_math_split_across_threads(data, reference, threads):
    """The per-sample math split over 3 or 8 worker threads (whatever the machine's cores;
    a batch of 64 is cut unevenly by 3): same numbers, and BLAS's own thread count is back
    to what it was afterwards."""
    from threadpoolctl import threadpool_info

    def blas():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    got = numbers(measure(MODEL, data, batch_size=64, threads=threads))
    np.testing.assert_allclose(got, reference, rtol=RTOL, atol=0)
    assert blas() == before


def test_split_keeps_tensors_without_batch_axis_whole():
    """A fetched operand without the batch axis (a ``(1, C, 1, 1)`` scale computed in the
    graph) goes whole to every thread; batch-axis tensors are cut: 1 thread == 4 threads."""
    from onnxflat.graph.head import Head, Layer, Operand, Step
    from onnxflat.measures import FlatnessAccumulator, Options

    from .test_perf_precision import tensors_for, wide_head

    base = wide_head(8, 16, 40, 3, "relu")
    conv = base.layers[0].conv
    steps = (Step("scale", "mul", (Operand("dep", "z"), Operand("fetch", "s")), "zs"),
             Step("act", "relu", (Operand("dep", "zs"),), "h"))
    head = Head("m", "x", base.input_shape, "float32", (Layer(conv, steps),), base.pooling,
                base.after)
    tensors = tensors_for(head, 9, 4)
    tensors["s"] = np.linspace(0.5, 2.0, 16, dtype=np.float32).reshape(1, 16, 1, 1)
    y = np.arange(9) % 40
    got = []
    for threads in (1, 4):
        acc = FlatnessAccumulator(head, Options(threads=threads))
        acc.update(tensors, y)
        res = acc.result("m")
        got.append([res.layers[0].trace, res.layers[0].kappa, *res.layers[0].per_filter["kappa"]])
    np.testing.assert_allclose(got[1], got[0], rtol=1e-12)
