"""`measure --shard I/N --partial` + `merge` give the single-run numbers, and merge refuses
partials that do not belong together (exit 2, naming the problem)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxflat.cli import main
from onnxflat.partial import Partial, Shard

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits_cnn.onnx"
TRAIN = ROOT / "models" / "digits_train.npz"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def leaves(doc, path=""):
    """(path, number) for every numeric leaf of a result document."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from leaves(v, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from leaves(v, f"{path}[{i}]")
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        yield path, doc


def assert_same_numbers(a: dict, b: dict, rtol=1e-12):
    la, lb = dict(leaves(a)), dict(leaves(b))
    assert la.keys() == lb.keys()
    assert len(la) > 60  # per-filter lists included
    for k in la:
        scale = max(abs(la[k]), abs(lb[k]))
        assert abs(la[k] - lb[k]) <= rtol * scale, (k, la[k], lb[k])


def shard_files(tmp_path, count, *extra, model=MODEL, data=TRAIN, tag="p"):
    files = []
    for i in range(1, count + 1):
        out = tmp_path / f"{tag}{count}-{i}.npz"
        r = cli("measure", model, "--data", data, "--shard", f"{i}/{count}", "--partial", out,
                "--batch-size", 50, *extra)
        assert r.exit_code == 0, r.output
        files.append(out)
    return files


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "r.json"
    r = cli("measure", MODEL, "--data", TRAIN, "--json", out)
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    return shard_files(tmp_path_factory.mktemp("three"), 3)


@pytest.mark.parametrize("count", [1, 3, 7])
def test_shards_merge_to_single_run(tmp_path, single, count):
    files = shard_files(tmp_path, count)
    sizes = [Partial.load(f).moments.n for f in files]
    assert sum(sizes) == 1300 and max(sizes) - min(sizes) <= 1
    out = tmp_path / "merged.json"
    r = cli("merge", *reversed(files), "--json", out)  # order of arguments does not matter
    assert r.exit_code == 0, r.output
    assert "1300 samples" in r.output
    assert_same_numbers(json.loads(out.read_text()), single)


def test_shard_is_a_contiguous_range():
    assert [Shard(i, 3).bounds(10) for i in (1, 2, 3)] == [(0, 3), (3, 6), (6, 10)]
    assert Shard.parse("2/7") == Shard(2, 7)
    for bad in ("0/3", "4/3", "3", "a/b"):
        with pytest.raises(Exception, match="shard"):
            Shard.parse(bad)


def test_partial_file_is_versioned_and_fingerprinted(three):
    p = Partial.load(three[1])
    assert p.meta["format"] == "onnxflat-partial" and p.meta["version"] == 2
    assert p.meta["shard"] == {"index": 2, "count": 3, "start": 433, "stop": 866}
    assert len(p.meta["model"]["sha256"]) == 64 and len(p.meta["data"]["sha256"]) == 64
    assert len(p.meta["head"]["sha256"]) == 64 and p.meta["n"] == 433
    with np.load(three[1], allow_pickle=False) as z:  # plain arrays, no pickles
        assert z["mean"].dtype == np.float64


def refused(files, *needles):
    r = cli("merge", *files)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for needle in needles:
        assert needle in r.output, r.output
    return r.output


def edited(src: Path, dst: Path, edit) -> Path:
    p = Partial.load(src)
    edit(p.meta)
    p.save(dst)
    return dst


def test_merge_refuses_missing_and_duplicate_shards(three):
    refused([three[0], three[2]], "missing shards 2/3")
    refused([three[0], three[1], three[2], three[1]], "duplicate shards", "2/3",
            three[1].name)


def test_merge_refuses_different_split(tmp_path, three):
    halves = shard_files(tmp_path, 2)
    refused([three[0], three[1], halves[1]], "different splits", halves[1].name)


def test_merge_refuses_different_model(tmp_path, three):
    other = tmp_path / "same_head_other_file.onnx"
    m = onnx.load(str(MODEL))
    m.doc_string = "retrained"  # same head, different file: a different checkpoint
    onnx.save(m, str(other))
    (last,) = shard_files(tmp_path, 3, model=other)[2:]
    refused([three[0], three[1], last], "different models", last.name)


def test_merge_refuses_different_data(tmp_path, three):
    data = tmp_path / "other.npz"
    with np.load(TRAIN) as z:
        np.savez(data, x=z["x"], y=np.roll(z["y"], 1))
    (last,) = shard_files(tmp_path, 3, data=data)[2:]
    refused([three[0], three[1], last], "different data", last.name)


def test_merge_refuses_different_measures(tmp_path, three):
    (last,) = shard_files(tmp_path, 3, "--no-filter-kappa")[2:]
    refused([three[0], three[1], last], "different measures", last.name)


def test_merge_refuses_different_head_and_version(tmp_path, three):
    head = edited(three[2], tmp_path / "head.npz",
                  lambda m: m["head"].update(sha256="0" * 64))
    refused([three[0], three[1], head], "different heads", "head.npz")
    future = edited(three[2], tmp_path / "future.npz", lambda m: m.update(version=99))
    refused([three[0], three[1], future], "future.npz", "version 99")
    refused([three[0], TRAIN], "digits_train.npz", "not an onnxflat partial")


def test_merge_refuses_inconsistent_shard(tmp_path, three):
    moved = edited(three[2], tmp_path / "moved.npz", lambda m: m["shard"].update(start=900))
    refused([three[0], three[1], moved], "moved.npz", "does not hold samples")


def test_empty_shard_is_refused(tmp_path):
    r = cli("measure", MODEL, "--data", TRAIN, "--shard", "1/2000", "--partial",
            tmp_path / "p.npz")
    assert r.exit_code == 2 and "empty" in r.output


def test_data_copy_elsewhere_merges_but_other_subset_does_not(tmp_path, three, single):
    copy = tmp_path / "copy" / "train.npz"  # the same bytes at another path (another node)
    copy.parent.mkdir()
    copy.write_bytes(TRAIN.read_bytes())
    (last,) = shard_files(tmp_path, 3, data=copy)[2:]
    out = tmp_path / "m.json"
    assert cli("merge", three[0], three[1], last, "--json", out).exit_code == 0
    assert_same_numbers(json.loads(out.read_text()), single)
    a = shard_files(tmp_path, 2, "--limit", 500, "--seed", 1, tag="s1")
    b = shard_files(tmp_path, 2, "--limit", 500, "--seed", 2, tag="s2")
    refused([a[0], b[1]], "different data")
    r = cli("merge", *a)
    assert r.exit_code == 0 and "500 samples" in r.output


def test_head_digest_is_structure_and_weights_only(monkeypatch):
    """Wording of the description and the file's path leave the digest alone; a weight or a
    step parameter changes it."""
    import dataclasses

    from onnxflat.graph import analyze, head
    from onnxflat.graph.structure import digest

    h = analyze(MODEL)
    before = digest(h)
    for cls in (head.Conv, head.Layer, head.Head):
        monkeypatch.setattr(cls, "describe", lambda self: "reworded")
    assert digest(dataclasses.replace(h, model_path="elsewhere.onnx")) == before
    layer = h.layers[0]
    kernel = layer.conv.kernel.copy()
    kernel[0, 0, 0, 0] += 1e-12
    moved = dataclasses.replace(layer, conv=dataclasses.replace(layer.conv, kernel=kernel))
    assert digest(dataclasses.replace(h, layers=(moved,))) != before
    step = dataclasses.replace(layer.steps[0], params={"k": 2.0})
    stepped = dataclasses.replace(layer, steps=(step, *layer.steps[1:]))
    assert digest(dataclasses.replace(h, layers=(stepped,))) != before
