"""Streaming .npy / .npz data: peak resident memory is bounded by the batch, not the file.

Runs tools/bench_bigdata.py at 256 MiB (its 2 GiB run is the benchmark): the measuring
process's peak RSS may grow by a few batches over its warm-up, far below the file size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from onnxflat.data import arrays, load_npy_pair, load_npz
from onnxflat.data.npyfile import NpyFile
from onnxflat.errors import DataError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from bench_bigdata import bench  # noqa: E402


def test_streamed_npy_memory_is_bounded_by_the_batch():
    out = bench(gib=0.25, batch=64, memmap=False)
    r = out["stream"]
    assert r["n"] == out["n"] > 5000
    file_mib = out["gib"] * 1024
    bound = 4 * out["batch_mib"] + 16
    assert r["growth_mib"] < bound < file_mib / 8, (r["growth_mib"], bound, file_mib)


# ---- the streamed reader itself ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f4", np.int16, np.uint8])
def test_npyfile_reads_what_numpy_reads(tmp_path, dtype):
    a = (np.random.default_rng(0).random((37, 2, 3, 5)) * 100).astype(dtype)
    np.save(tmp_path / "a.npy", a)
    f = NpyFile(tmp_path / "a.npy")
    assert f.shape == a.shape and f.dtype == a.dtype and len(f) == 37 and f.ndim == 4
    np.testing.assert_array_equal(f[3:20], a[3:20])
    np.testing.assert_array_equal(f[30:99], a[30:])
    np.testing.assert_array_equal(f[::5], a[::5])
    rows = np.array([0, 1, 2, 7, 8, 20, 36, -1])
    np.testing.assert_array_equal(f[rows], a[rows])
    assert f[5:5].shape == (0, 2, 3, 5)


def test_uncompressed_npz_streams_like_loading(tmp_path, monkeypatch):
    x = np.random.default_rng(1).random((50, 1, 8, 8), dtype=np.float32)
    y = np.arange(50) % 10
    np.savez(tmp_path / "d.npz", x=x, y=y)
    whole = load_npz(tmp_path / "d.npz")
    monkeypatch.setattr(arrays, "STREAM_BYTES", 0)
    streamed = load_npz(tmp_path / "d.npz")
    assert isinstance(streamed.x, NpyFile) and isinstance(whole.x, np.ndarray)
    for (_, xa, ya), (_, xb, yb) in zip(whole.batches(16), streamed.batches(16)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y)
    assert isinstance(load_npz(tmp_path / "c.npz").x, np.ndarray)  # compressed: loaded


def test_npy_pair_refusals(tmp_path):
    y = np.arange(10) % 3
    np.save(tmp_path / "y.npy", y)
    x = np.zeros((10, 1, 4, 4), np.float32)
    np.save(tmp_path / "t.npy", x)
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="less data than its header"):
        load_npy_pair(tmp_path / "t.npy", tmp_path / "y.npy")
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    with pytest.raises(DataError, match="Fortran order"):
        load_npy_pair(tmp_path / "f.npy", tmp_path / "y.npy")
    np.save(tmp_path / "o.npy", np.array([None] * 10, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled"):
        load_npy_pair(tmp_path / "o.npy", tmp_path / "y.npy")
    np.savez(tmp_path / "y.npz", y=y)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match="not a .npy file"):
        load_npy_pair(tmp_path / "x.npy", tmp_path / "y.npz")


def test_large_integers_refused_at_their_sample(tmp_path):
    x = np.zeros((40, 1, 4, 4), np.int32)
    x[33, 0, 1, 2] = 2 ** 24 + 1
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.zeros(40, np.int64))
    ds = load_npy_pair(tmp_path / "x.npy", tmp_path / "y.npy")
    with pytest.raises(DataError, match="sample 33 of x holds 16777217"):
        list(ds.batches(8))
