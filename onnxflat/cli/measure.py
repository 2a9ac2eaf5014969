"""``onnxflat measure``: exact measures of one model on one data set."""

from __future__ import annotations

import click

from ..errors import OnnxflatError
from ..report import result_summary, samples, write_json
from .app import guard, main
from .options import (
    DATA_HELP,
    data_options,
    json_option,
    prepare,
    result_doc,
    run_measure,
    run_options,
)
from .scale import scale_options


@main.command(epilog=DATA_HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@data_options
@run_options
@json_option()
@click.option("--per-sample", "per_sample", type=click.Path(dir_okay=False),
              help="Write each sample's loss, correctness and terms of every measure "
                   "(their means are the totals) to this .csv, .npy, .npz or .parquet.")
@scale_options
@guard
def measure(model, data, run, json_out, per_sample, scale):
    """Measure trace and relative flatness of MODEL's head on labelled data.

    \b
    Examples:
      onnxflat measure models/digits_cnn.onnx --data models/digits_train.npz --json out.json
      onnxflat measure model.onnx --data x.npy --labels y.npy --limit 5000 --seed 1
      onnxflat measure resnet.onnx --data imgs/ --resize 224 224 --mean 0.485,0.456,0.406 \\
          --std 0.229,0.224,0.225
      onnxflat measure model.onnx --data train.npz --shard 3/8 --partial part3.npz
      onnxflat measure model.onnx --data train.npz --per-sample samples.csv
    """
    if per_sample:
        samples.check_path(per_sample)
        if scale.active:
            raise OnnxflatError("--per-sample is not available with --shard, --partial or "
                                "--engine dask (partial files hold mergeable statistics, not "
                                "samples); measure without them to write the per-sample table")
    prepared = prepare(model, run)
    data = prepared.fit(data)
    if scale.active:
        (part,) = scale.run([prepared], data, run)
        res = part.result()
    else:
        res = run_measure(prepared, data, run.quiet, per_sample=bool(per_sample))
    click.echo(result_summary(res, data_name=data.name))
    if json_out:
        write_json(result_doc(res, data), json_out)
    if per_sample:
        samples.write(res.per_sample, per_sample)
