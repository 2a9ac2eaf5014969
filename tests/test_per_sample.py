"""Per-sample breakdown: each sample's terms, whose means are the totals, identical for any
batch size and order, written by ``measure --per-sample`` as CSV, NPY, NPZ or Parquet."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnxflat import measure
from onnxflat.cli import main
from onnxflat.data import load_npz

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"
RTOL = 1e-12
COLUMNS = ("index", "label", "loss", "correct", "layer0.trace", "layer0.kappa",
           "classifier.trace", "classifier.kappa")


@pytest.fixture(scope="module")
def data():
    return load_npz(TRAIN)


@pytest.fixture(scope="module")
def reference(data):
    return measure(MODEL, data, batch_size=64, per_sample=True)


def totals(res) -> dict:
    layer = res.layers[0]
    return {"loss": res.loss, "correct": res.accuracy, "layer0.trace": layer.trace,
            "layer0.kappa": layer.kappa, "classifier.trace": res.classifier.trace,
            "classifier.kappa": res.classifier.kappa}


def test_means_are_the_totals(data, reference):
    table = reference.per_sample
    assert table.dtype.names == COLUMNS and len(table) == reference.n_samples == len(data)
    assert np.array_equal(table["index"], np.arange(len(data)))
    assert np.array_equal(table["label"], data.y)
    for name, total in totals(reference).items():
        assert np.isclose(table[name].mean(), total, rtol=RTOL, atol=0), name
    # each layer's per-sample kappa_layerwise is ||K||^2 times its trace: not a column
    assert reference.to_dict().keys() == measure(MODEL, data).to_dict().keys()
    assert "per_sample" not in reference.to_dict()


@pytest.mark.parametrize("batch_size", [1, 7, 1300])
def test_batch_size(data, reference, batch_size):
    table = measure(MODEL, data, batch_size=batch_size, per_sample=True).per_sample
    for name in COLUMNS:
        np.testing.assert_allclose(table[name], reference.per_sample[name], rtol=RTOL, atol=0)


def test_sample_order_and_subsets_keep_the_rows(data, reference):
    """A permuted subset: each row is keyed by the sample's index in the data."""
    perm = np.random.default_rng(0).permutation(len(data))[:500]
    table = measure(MODEL, data.subset(perm), batch_size=50, per_sample=True).per_sample
    want = reference.per_sample[np.sort(perm)]
    assert np.array_equal(table["index"], np.sort(perm))
    for name in COLUMNS:
        np.testing.assert_allclose(table[name], want[name], rtol=RTOL, atol=0)


def test_batches_iterable_indexes_by_position(data, reference):
    x, y = np.asarray(data.x), data.y
    res = measure(MODEL, batches=((x[s:s + 100], y[s:s + 100]) for s in range(0, len(y), 100)),
                  per_sample=True)
    for name in COLUMNS:
        np.testing.assert_allclose(res.per_sample[name], reference.per_sample[name], rtol=RTOL)


def test_off_by_default(reference, data):
    assert measure(MODEL, data.subset(np.arange(10))).per_sample is None


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".csv":
        with open(path, newline="") as fh:
            rows = list(csv.reader(fh))
        assert tuple(rows[0]) == COLUMNS
        cols = list(zip(*rows[1:]))
        return {n: np.array(c, dtype=np.int64 if n in ("index", "label") else np.float64)
                for n, c in zip(COLUMNS, cols)}
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {n: z[n] for n in z.files}
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pydict()


@pytest.mark.parametrize("suffix", [".csv", ".npy", ".npz", ".parquet"])
def test_cli_writes_the_table(tmp_path, reference, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"samples{suffix}"
    r = CliRunner().invoke(main, ["measure", str(MODEL), "--data", str(TRAIN), "--limit", "300",
                                  "--seed", "3", "--per-sample", str(out), "-b", "32"])
    assert r.exit_code == 0, r.output
    got = _read(out)
    idx = np.asarray(got["index"])
    assert len(idx) == 300 and np.all(np.diff(idx) > 0)
    for name in COLUMNS:  # read back exactly (CSV: 17 significant digits)
        assert np.array_equal(np.asarray(got[name]), reference.per_sample[idx][name]), name


@pytest.mark.parametrize("args, message", [
    (["--shard", "1/2", "--partial", "p.npz"], "--per-sample is not available with --shard"),
    (["--engine", "dask"], "not available with"),
])
def test_refused_with_shards(tmp_path, args, message):
    r = CliRunner().invoke(main, ["measure", str(MODEL), "--data", str(TRAIN), "--per-sample",
                                  str(tmp_path / "s.csv"), *args])
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "p.npz").exists()


def test_bad_suffix(tmp_path):
    r = CliRunner().invoke(main, ["measure", str(MODEL), "--data", str(TRAIN), "--per-sample",
                                  str(tmp_path / "s.txt")])
    assert r.exit_code == 2 and ".csv, .npy, .npz, .parquet" in r.output


def test_report_shows_the_top_samples_with_images(tmp_path, reference):
    import re

    from onnxflat.report.html import sample_png

    out = tmp_path / "rep"
    r = CliRunner().invoke(main, ["report", str(MODEL), "--data", str(TRAIN), "--out", str(out),
                                  "--limit", "400", "--seed", "2", "--top", "5"])
    assert r.exit_code == 0, r.output
    page = (out / "report.html").read_text()
    section = page[page.index("Samples that make the model sharp"):]
    shown = [int(i) for i in re.findall(r'<img alt="sample (\d+)"', section)]
    # the 5 largest per-sample kappas among the 400 rows of the subset, largest first
    rows = np.sort(np.random.default_rng(2).choice(len(reference.per_sample), 400, replace=False))
    sub = reference.per_sample[rows]
    assert shown == [int(i) for i in sub["index"][np.argsort(-sub["layer0.kappa"])[:5]]]
    assert section.count("<tr>") == 6
    assert sample_png(np.zeros((1, 8, 8))).startswith(b"\x89PNG")
    assert sample_png(np.zeros((8, 8, 3))).startswith(b"\x89PNG")
    assert sample_png(np.zeros((16, 2, 2))) is None and sample_png(np.zeros(10)) is None
