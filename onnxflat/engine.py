"""Dask distributed back end: one task per (model, shard), merged exactly.

Optional extra ``pip install onnxflat[dask]``. Each task receives the model path and a
:class:`~onnxflat.data.spec.DataSpec` (never arrays), opens both on its worker and returns
the shard's :class:`~onnxflat.partial.Partial`; the onnxruntime session is cached per
worker process. A cluster given by address should set the same ``SCHEDULER_CONFIG``. A task
whose worker dies or that fails unexpectedly is retried by Dask;
results are kept by (model, shard), so none is counted twice; the run either merges all
shards or raises an error naming the missing ones.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from contextlib import contextmanager

from .data.spec import DataSpec
from .errors import OnnxflatError
from .partial import Partial, PartialError, Shard, compute, merge
from .prepared import RunOptions

try:
    import dask
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm
except ImportError:  # pragma: no cover - depends on the install
    Client = None

log = logging.getLogger(__name__)

RETRIES = 2  # extra attempts of a shard whose task raised an unexpected error
# Shards are coarse: hand a worker one at a time, so a dying worker takes down (and makes
# suspect) only the shard it was running, not others queued on it.
SCHEDULER_CONFIG = {"distributed.scheduler.worker-saturation": 1.0}


@contextmanager
def connect(address: str | None = None, workers: int | None = None):
    """A Dask client: on the scheduler at ``address``, else on a local cluster of
    ``workers`` processes (default: one per core) with one thread each."""
    if Client is None:
        raise OnnxflatError("--engine dask needs Dask distributed: pip install "
                            "'onnxflat[dask]'")
    if address:
        try:
            client = Client(address, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise OnnxflatError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        with client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with dask.config.set(SCHEDULER_CONFIG), \
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                         dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def _task(model: str, data: DataSpec, shard: Shard, options: RunOptions):
    """Runs on a worker. User errors come back as values (retrying cannot fix them)."""
    try:
        return compute(model, data, shard, options)
    except OnnxflatError as exc:
        return exc


def measure_many(client, models: Sequence[str], data: DataSpec, shards: int | None = None,
                 options: RunOptions = RunOptions(), *, retries: int = RETRIES,
                 progress: bool = True) -> list[Partial]:
    """Merged statistics (shard 1/1) of each model on ``data``, computed as ``shards``
    tasks per model on the cluster of ``client`` (default: twice its worker threads).
    ``options.threads`` caps the CPU threads (onnxruntime's and the math's) per task."""
    total_threads = sum(client.nthreads().values()) or 1
    count = shards or 2 * total_threads
    run = uuid.uuid4().hex[:8]
    futures, where_of = [], {}
    for m, model in enumerate(models):
        for i in range(1, count + 1):
            fut = client.submit(_task, os.fspath(model), data, Shard(i, count), options,
                                key=f"onnxflat-{run}-{m}-{i}", retries=retries, pure=False)
            futures.append(fut)
            where_of[fut.key] = (m, i)
    done: dict[tuple[int, int], Partial] = {}
    failed: dict[tuple[int, int], str] = {}
    bar = tqdm(total=len(futures), unit="shard", disable=not progress, leave=False)
    for fut in as_completed(futures):
        where = where_of[fut.key]
        if where in done:  # a retried task can only complete once, but never count twice
            continue
        if fut.status == "error":
            exc = fut.exception()
            failed[where] = f"{type(exc).__name__}: {str(exc).split('. ')[0]}"
            continue
        value = fut.result()
        if isinstance(value, OnnxflatError):
            value.args = (f"{_name(models, where, count)}: {value}",)
            raise value
        done[where] = value
        bar.update()
        log.info("%s done (%d of %d)", _name(models, where, count), len(done), len(futures))
    bar.close()
    missing = [w for w in where_of.values() if w not in done]
    if missing:
        shown = "; ".join(f"{_name(models, w, count)}"
                          + (f" ({failed[w]})" if w in failed else "") for w in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise PartialError(f"{len(missing)} of {len(futures)} shards did not complete: "
                           f"{shown}{more}")
    return [merge([done[(m, i)] for i in range(1, count + 1)],
                  [_name(models, (m, i), count) for i in range(1, count + 1)])
            for m in range(len(models))]


def _name(models, where, count) -> str:
    m, i = where
    return f"shard {i}/{count}" + (f" of {models[m]}" if len(models) > 1 else "")
