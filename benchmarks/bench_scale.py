"""Scale-out benchmark: the ResNet-18 CIFAR model of benchmarks/models.py (3x32x32, last conv
512->512 3x3 at 4x4), N=1024, measured single-process and with the Dask engine on a local
cluster of 1 and 2 worker processes, plus the cost of merging partial results.

    python -m benchmarks.bench_scale [--n 1024] [--workers 1 2]

All figures come from one run on the current machine. Each engine run is timed in two
parts: starting the local cluster (a one-off per session) and the measurement itself.
Dask worker processes run with single-threaded BLAS (OMP/OPENBLAS/MKL_NUM_THREADS=1), so the
single-process run is timed both ways: BLAS threads spinning beside onnxruntime's own cost
a factor of 2-3 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from onnxflat.data.spec import DataSpec
from onnxflat.engine import connect, measure_many
from onnxflat.partial import Partial, Shard, compute, merge
from onnxflat.prepared import RunOptions

from .models import SPECS, export


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=SPECS["a"].n)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)
    model = str(export("a"))
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        x, y = SPECS["a"].data(args.n)
        np.savez(Path(tmp) / "data.npz", x=x, y=y)
        data = DataSpec(str(Path(tmp) / "data.npz"))
        compute(model, data, Shard(1, 64))  # warm caches (session, page cache) off the clock
        _, t_default = timed(lambda: compute(model, data))
        with threadpool_limits(1):
            single, t_single = timed(lambda: compute(model, data))
        print(f"resnet18_cifar, N={args.n}, {cores} cores")
        print(f"single process (onnxruntime {cores} threads):   {t_single:7.2f} s with 1 BLAS "
              f"thread ({t_default:.2f} s with default BLAS threads)")
        ref = single.result()
        for k in args.workers:
            cm = connect(workers=k)
            client, t_start = timed(cm.__enter__)
            try:
                (merged,), t_run = timed(partial(
                    measure_many, client, [model], data,
                    options=RunOptions(threads=max(1, cores // k)), progress=False))
            finally:
                cm.__exit__(None, None, None)
            err = abs(merged.result().layers[0].kappa / ref.layers[0].kappa - 1)
            print(f"dask, {k} worker(s), {2 * k} shards:            {t_run:7.2f} s "
                  f"(+ {t_start:.2f} s cluster start; total {t_run + t_start:.2f} s; "
                  f"kappa rel. diff {err:.1e})")
        shards = 8
        parts = [compute(model, data, Shard(i, shards)) for i in range(1, shards + 1)]
        paths = [Path(tmp) / f"p{i}.npz" for i in range(shards)]
        for p, path in zip(parts, paths):
            p.save(path)
        _, t_merge = timed(lambda: merge(parts))
        _, t_files = timed(lambda: merge([Partial.load(p) for p in paths]).result())
        size = sum(p.stat().st_size for p in paths) / shards
        print(f"merge of {shards} partials: {1e3 * t_merge:.2f} ms in memory, "
              f"{1e3 * t_files:.2f} ms from files ({size / 1024:.0f} KiB each); one shard "
              f"costs {t_single / shards:.2f} s of inference")


if __name__ == "__main__":
    main()
