"""Options that split a run into shards: ``--shard I/N --partial OUT`` for batch schedulers,
``--engine dask [--address A] [--workers K] [--shards S]`` for a Dask cluster.

``@scale_options`` passes ``scale=ScaleOptions``; ``scale.active`` says whether the command
must go through :meth:`ScaleOptions.run` instead of its plain single-process path.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, replace

import click

from ..data.spec import DataSpec
from ..errors import OnnxflatError
from ..partial import Partial, Shard, compute
from ..prepared import PreparedModel
from .options import CliRun


@dataclass(frozen=True)
class ScaleOptions:
    shard: Shard | None = None
    partial: str | None = None
    engine: str = "local"
    address: str | None = None
    workers: int | None = None
    shards: int | None = None

    @property
    def active(self) -> bool:
        return bool(self.shard or self.partial or self.engine != "local")

    def run(self, models: list[PreparedModel | str], data: DataSpec,
            run: CliRun) -> list[Partial]:
        """One merged (or, with --shard, one shard's) partial per model, prepared here or
        given as paths (prepared where they run); writes --partial."""
        if self.partial and len(models) != 1:
            raise OnnxflatError("--partial writes the statistics of one model")
        if self.engine == "dask":
            if self.shard:
                raise OnnxflatError("--shard is for running one shard yourself; with "
                                    "--engine dask the engine splits the data (--shards)")
            from ..engine import connect, measure_many
            with connect(self.address, self.workers) as client:
                # A local cluster shares this machine's cores among its worker processes.
                threads = run.threads or (None if self.address else max(
                    1, (os.cpu_count() or 1) // len(client.nthreads())))
                paths = [m.name if isinstance(m, PreparedModel) else m for m in models]
                parts = measure_many(client, paths, data, self.shards,
                                     replace(run.options(), threads=threads),
                                     progress=not run.quiet and sys.stderr.isatty())
        else:
            parts = [compute(m, data, self.shard or Shard(1, 1), run.options())
                     for m in models]
        if self.partial:
            parts[0].save(self.partial)
            click.echo(f"wrote shard {parts[0].shard} ({parts[0].moments.n} samples) to "
                       f"{self.partial}", err=True)
        return parts


def _shard(ctx, param, value):
    if value is None:
        return None
    try:
        return Shard.parse(value)
    except OnnxflatError as exc:
        raise click.BadParameter(str(exc)) from None


_SHARD = [
    click.option("--shard", callback=_shard, metavar="I/N",
                 help="Only shard I of N (1-based, contiguous sample ranges), e.g. one Slurm "
                      "array task; combine the partials with `onnxflat merge`."),
    click.option("--partial", type=click.Path(dir_okay=False),
                 help="Write the mergeable statistics (partial result file) here."),
]
_ENGINE = [
    click.option("--engine", type=click.Choice(["local", "dask"]), default="local",
                 show_default=True,
                 help="dask: run shards as tasks on a Dask cluster (pip install "
                      "'onnxflat[dask]'); without --address on a local one."),
    click.option("--address", metavar="HOST:PORT",
                 help="Dask scheduler address (default: start a local cluster)."),
    click.option("--workers", type=click.IntRange(min=1),
                 help="Worker processes of the local cluster (default: one per core)."),
    click.option("--shards", type=click.IntRange(min=1),
                 help="Shards per model for --engine dask (default: 2 per worker thread)."),
]


def _decorate(fn, options):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        given = {k: kwargs.pop(k) for k in ScaleOptions.__dataclass_fields__ if k in kwargs}
        if given["engine"] != "dask":
            stray = [f"--{k}" for k in ("address", "workers", "shards") if given[k]]
            if stray:
                raise click.UsageError(f"{'/'.join(stray)} need --engine dask")
        kwargs["scale"] = ScaleOptions(**given)
        return fn(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def scale_options(fn):
    """Add the shard and engine options; the command receives ``scale: ScaleOptions``."""
    return _decorate(fn, _SHARD + _ENGINE)


def engine_options(fn):
    """Add the engine options only (commands over several models)."""
    return _decorate(fn, _ENGINE)
