"""The Dask engine on a real local cluster (2 worker processes) gives the single-process
numbers, also when a worker dies mid-run, and names the shards it could not finish."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
import dask  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from distributed import LocalCluster, WorkerPlugin  # noqa: E402

from onnxflat.cli import main  # noqa: E402
from onnxflat.data.spec import DataSpec  # noqa: E402
from onnxflat.engine import SCHEDULER_CONFIG, measure_many  # noqa: E402
from onnxflat.errors import DataError, HeadNotFoundError  # noqa: E402
from onnxflat.partial import PartialError, compute  # noqa: E402
from onnxflat.prepared import RunOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "digits_cnn.onnx")
DATA = DataSpec(str(ROOT / "models" / "digits_train.npz"))
ONE_THREAD = RunOptions(threads=1)


class KillOnShard(WorkerPlugin):
    """Kills the worker process (no cleanup, like an OOM kill) when it starts executing
    shard ``index``; only the first time unless ``always``, tracked by a marker file."""

    def __init__(self, marker: str, index: int, always: bool = False):
        self.marker, self.index, self.always = marker, index, always

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).endswith(f"-{self.index}"):
            if self.always or not os.path.exists(self.marker):
                with open(self.marker, "a") as f:
                    f.write(f"{os.getpid()}\n")
                os._exit(1)


@pytest.fixture(scope="module")
def client():
    from distributed import Client
    # One allowed re-run of a task whose worker died; a second death fails the shard.
    with dask.config.set({**SCHEDULER_CONFIG, "distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def single():
    return compute(MODEL, DATA).result().to_dict()


def numbers(res: dict) -> np.ndarray:
    layer = res["layers"][0]
    return np.array([res["loss"], res["accuracy"], layer["trace"], layer["kappa"],
                     res["classifier"]["trace"], res["classifier"]["kappa"],
                     layer["stderr"]["kappa"], *layer["per_filter"]["kappa"]])


def test_cluster_matches_single_process(client, single):
    (merged,) = measure_many(client, [MODEL], DATA, 5, ONE_THREAD, progress=False)
    assert merged.moments.n == 1300
    np.testing.assert_allclose(numbers(merged.result().to_dict()), numbers(single),
                               rtol=1e-12, atol=0)


def test_killed_worker_shard_is_retried_once(client, single, tmp_path):
    marker = tmp_path / "killed"
    client.register_plugin(KillOnShard(str(marker), 3), name="kill")
    try:
        t0 = time.monotonic()
        (merged,) = measure_many(client, [MODEL], DATA, 6, ONE_THREAD, progress=False)
        assert time.monotonic() - t0 < 60
    finally:
        client.unregister_worker_plugin("kill")
    assert len(marker.read_text().split()) == 1  # a worker really died, once
    assert merged.moments.n == 1300  # shard 3 counted exactly once
    np.testing.assert_allclose(numbers(merged.result().to_dict()), numbers(single),
                               rtol=1e-12, atol=0)


def test_shard_that_keeps_killing_workers_is_named(client, tmp_path):
    marker = tmp_path / "killed"
    client.register_plugin(KillOnShard(str(marker), 2, always=True), name="kill")
    try:
        with pytest.raises(PartialError, match=r"1 of 4 shards did not complete: shard 2/4 "
                                               r"\(KilledWorker"):
            measure_many(client, [MODEL], DATA, 4, ONE_THREAD, progress=False)
    finally:
        client.unregister_worker_plugin("kill")
    assert len(marker.read_text().split()) == 2


def test_user_error_on_a_worker_is_reported_not_retried(client, tmp_path):
    with pytest.raises(DataError, match=r"shard [12]/2: data not found"):
        measure_many(client, [MODEL], DataSpec(str(tmp_path / "gone.npz")), shards=2,
                     progress=False)
    refused = ROOT / "tests" / "fixtures" / "keras" / "refuse_global_max_pool.onnx"
    with pytest.raises(HeadNotFoundError, match=r"shard [12]/2 of .*refuse_global_max_pool"
                                                r".onnx: no supported head"):
        measure_many(client, [MODEL, str(refused)], DATA, shards=2, progress=False)


def test_many_models(client, single):
    merged = measure_many(client, [MODEL, MODEL], DATA, 3, ONE_THREAD, progress=False)
    for m in merged:
        np.testing.assert_allclose(numbers(m.result().to_dict()), numbers(single),
                                   rtol=1e-12, atol=0)


def test_cli_engine_dask_local_cluster(tmp_path, single):
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["measure", MODEL, "--data", DATA.path, "--engine", "dask",
                                  "--workers", "2", "--shards", "3", "--json", str(out)])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(numbers(json.loads(out.read_text())), numbers(single),
                               rtol=1e-12, atol=0)


def test_cli_compare_on_engine_matches_plain_compare(tmp_path):
    sharp = str(ROOT / "models" / "digits_cnn_sharp.onnx")
    docs = []
    for extra in ([], ["--engine", "dask", "--workers", "2", "--shards", "2"]):
        out = tmp_path / f"c{len(docs)}.json"
        r = CliRunner().invoke(main, ["compare", MODEL, sharp, "--data", DATA.path,
                                      "--json", str(out), *extra])
        assert r.exit_code == 0, r.output
        docs.append(json.loads(out.read_text()))
    plain, engine = docs
    assert len(plain["models"]) == 2
    for a, b in zip(plain["models"], engine["models"]):
        np.testing.assert_allclose(numbers(b["result"]), numbers(a["result"]), rtol=1e-12)
    r = CliRunner().invoke(main, ["compare", MODEL, "--data", DATA.path, "--shards", "3"])
    assert r.exit_code == 2 and "--shards need --engine dask" in r.output
