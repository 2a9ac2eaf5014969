"""``onnxflat measure``: exact measures of one model on one data set."""

from __future__ import annotations

from pathlib import Path

import click

from ..api import DEFAULT_BATCH_SIZE, measure as measure_api
from ..data import load_npz
from ..data.spec import DataSpec
from ..partial import Shard, compute
from ..report import result_summary, write_json
from .app import guard, main


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False),
              help=".npz file with inputs x (model layout, float) and integer labels y.")
@click.option("--x-key", default="x", show_default=True, help="Name of the inputs in the .npz.")
@click.option("--y-key", default="y", show_default=True, help="Name of the labels in the .npz.")
@click.option("--batch-size", "-b", default=DEFAULT_BATCH_SIZE, show_default=True,
              type=click.IntRange(min=1), help="Samples per onnxruntime run.")
@click.option("--no-filter-kappa", is_flag=True,
              help="Skip the filter-wise kappa (its dense part dominates on wide heads).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Execution provider.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write the full result as JSON.")
@click.option("--shard", "shard", metavar="I/N",
              help="Measure only shard I of N (1-based; contiguous sample ranges), e.g. "
                   "one Slurm array task; combine the partials with `onnxflat merge`.")
@click.option("--partial", "partial_out", type=click.Path(dir_okay=False),
              help="Write the shard's mergeable statistics (partial result file) here.")
@guard
def measure(model, data_path, x_key, y_key, batch_size, no_filter_kappa, device, json_out,
            shard, partial_out):
    """Measure trace and relative flatness of MODEL's head on labelled DATA.

    \b
    Example:
      onnxflat measure models/digits_cnn.onnx --data models/digits_train.npz --json out.json
    """
    if shard or partial_out:
        part = compute(model, DataSpec(data_path, x_key, y_key),
                       Shard.parse(shard) if shard else Shard(1, 1),
                       batch_size=batch_size, kappa=not no_filter_kappa, device=device)
        if partial_out:
            part.save(partial_out)
            click.echo(f"wrote shard {part.shard} ({part.moments.n} samples) to {partial_out}",
                       err=True)
        res = part.result()
    else:
        ds = load_npz(data_path, x_key, y_key)
        res = measure_api(model, ds, batch_size=batch_size, kappa=not no_filter_kappa,
                          device=device)
    click.echo(result_summary(res, data_name=Path(data_path).name))
    if json_out:
        write_json(res.to_dict(), json_out)
