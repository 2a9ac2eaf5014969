"""``onnxflat measure``: exact measures of one model on one data set."""

from __future__ import annotations

import click

from ..partial import Shard, compute
from ..report import result_summary, write_json
from .app import guard, main
from .options import (DATA_HELP, data_options, fit_data, json_option, run_measure,
                      run_options)


@main.command(epilog=DATA_HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@data_options
@run_options
@json_option()
@click.option("--shard", "shard", metavar="I/N",
              help="Measure only shard I of N (1-based; contiguous sample ranges), e.g. "
                   "one Slurm array task; combine the partials with `onnxflat merge`.")
@click.option("--partial", "partial_out", type=click.Path(dir_okay=False),
              help="Write the shard's mergeable statistics (partial result file) here.")
@guard
def measure(model, data, run, json_out, shard, partial_out):
    """Measure trace and relative flatness of MODEL's head on labelled data.

    \b
    Examples:
      onnxflat measure models/digits_cnn.onnx --data models/digits_train.npz --json out.json
      onnxflat measure model.onnx --data x.npy --labels y.npy --limit 5000 --seed 1
      onnxflat measure resnet.onnx --data imgs/ --resize 224 224 --mean 0.485,0.456,0.406 \\
          --std 0.229,0.224,0.225
      onnxflat measure model.onnx --data train.npz --shard 3/8 --partial part3.npz
    """
    if shard or partial_out:
        part = compute(model, fit_data(model, data),
                       Shard.parse(shard) if shard else Shard(1, 1),
                       batch_size=run.batch_size, kappa=run.kappa, device=run.device)
        if partial_out:
            part.save(partial_out)
            click.echo(f"wrote shard {part.shard} ({part.moments.n} samples) to {partial_out}",
                       err=True)
        res = part.result()
    else:
        res = run_measure(model, data, run)
    click.echo(result_summary(res, data_name=data.name))
    if json_out:
        write_json(res.to_dict(), json_out)
