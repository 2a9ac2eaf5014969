"""The Python API: foreign arrays, DataLoader-like batches, short reprs, DataFrames, typing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import onnxflat

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"


@pytest.fixture(scope="module")
def data():
    with np.load(TRAIN) as z:
        return z["x"][:200], z["y"][:200]


@pytest.fixture(scope="module")
def ref(data):
    return onnxflat.measure(MODEL, *data)


def same(a, b):
    assert a.n_samples == b.n_samples
    for u, v in ((a.loss, b.loss), (a.layers[0].kappa, b.layers[0].kappa),
                 (a.classifier.trace, b.classifier.trace)):
        assert u == pytest.approx(v, rel=1e-6)


class OnlyArray:
    """An array type NumPy knows only through ``__array__``."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a

    def __len__(self):
        return len(self.a)


class OnlyDLPack:
    """An array type NumPy knows only through DLPack (as a CuPy or JAX array on the CPU)."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_torch_tensors_and_foreign_arrays(data, ref):
    torch = pytest.importorskip("torch")
    x, y = data
    tx = torch.from_numpy(x).requires_grad_(True)
    same(onnxflat.measure(MODEL, tx, torch.from_numpy(y)), ref)
    same(onnxflat.measure(MODEL, OnlyArray(x), OnlyArray(y)), ref)
    same(onnxflat.measure(MODEL, OnlyDLPack(x), OnlyDLPack(y)), ref)
    same(onnxflat.measure(MODEL, x.tolist(), y.tolist()), ref)


def test_dataloader_like_batches(data, ref):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset

    x, y = data
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=33)
    same(onnxflat.measure(MODEL, batches=loader), ref)
    same(onnxflat.measure(MODEL, loader), ref)  # an iterable of batches as x
    with pytest.raises(onnxflat.DataError, match="a pair"):
        onnxflat.measure(MODEL, batches=[(x, y, y)])


def test_short_reprs(ref):
    text = repr(ref)
    assert len(text) < 400, text
    assert text.startswith("Result(model=") and "kappa=" in text and "± " in text
    assert repr(ref.layers[0]).startswith("LayerResult('/conv2/Conv', 32x16x3x3, kappa=")
    assert "per_filter" not in text


def test_to_frame(ref):
    pd = pytest.importorskip("pandas")
    df = ref.to_frame()
    assert isinstance(df, pd.DataFrame)
    assert list(df["subject"]) == ["/conv2/Conv", "classifier"]
    assert df.loc[0, "kappa"] == ref.layers[0].kappa
    assert df.loc[0, "kappa_stderr"] == ref.layers[0].stderr["kappa"]
    assert df.loc[1, "trace"] == ref.classifier.trace and (df["n_samples"] == 200).all()


def test_to_frame_without_pandas_says_how_to_install(ref, monkeypatch):
    import builtins
    real = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("no pandas")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r'pip install "onnxflat\[frame\]"'):
        ref.to_frame()


def test_public_names_and_typing_marker():
    from onnxflat.measures import Result
    assert onnxflat.Result is Result
    for name in onnxflat.__all__:
        assert hasattr(onnxflat, name)
    assert (Path(onnxflat.__file__).parent / "py.typed").is_file()
    for fn in (onnxflat.measure, onnxflat.analyze):
        assert "Raises:" in fn.__doc__
