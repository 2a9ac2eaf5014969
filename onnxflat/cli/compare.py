"""``onnxflat compare``: several models on one data set, ranked by each measure."""

from __future__ import annotations

import click

from ..errors import OnnxflatError
from ..measures.stats import chance_floor
from ..report import compare as c, write_json
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
from .scale import engine_options


@main.command(epilog=DATA_HELP)
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@data_options
@run_options
@click.option("--sort", type=click.Choice(list(c.MEASURES)), default="kappa", show_default=True,
              help="Order the table by this measure's rank.")
@json_option("Write the comparison (each model's full result inside) as JSON.")
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False),
              help="Write one row per model (values, standard errors, ranks) as CSV.")
@engine_options
@guard
def compare(models, data, run, sort, json_out, csv_out, scale):
    """Rank MODELS (checkpoints, a hyper-parameter sweep) by each measure on the same data.

    Rank 1 is the flattest (lower is flatter). kappa, trace and kappa_layerwise are totals
    over each head's conv layers; classifier_* are the classifier's. Loss and accuracy are
    shown beside them, with standard errors; a model whose accuracy is near chance is
    marked and not ranked (it does not fit the data).

    \b
    Examples:
      onnxflat compare models/digits_cnn.onnx models/digits_cnn_sharp.onnx \\
          --data models/digits_train.npz
      onnxflat compare ckpt/epoch*.onnx --data train.npz --limit 2000 --csv sweep.csv
      onnxflat compare ckpt/*.onnx --data /shared/train.npz --engine dask \\
          --address tcp://scheduler:8786
    """
    if len(set(models)) < len(models):
        raise OnnxflatError("a model is given twice")
    docs, classes = [], []
    if scale.active:  # the workers prepare the models; here only the data is fitted
        results = [p.result() for p in scale.run(list(models), data, run)]
        for r, m in zip(results, models):
            prepared = prepare(m)
            docs.append(result_doc(r, prepared.fit(data)))
            classes.append(prepared.head.num_classes)
    else:
        for m in models:  # one model in memory at a time
            prepared = prepare(m, run)
            fitted = prepared.fit(data)
            docs.append(result_doc(run_measure(prepared, fitted, run.quiet), fitted))
            classes.append(prepared.head.num_classes)
    sizes = {d["n_samples"] for d in docs}
    if len(sizes) > 1:  # cannot happen with one spec, but a ranking needs it
        raise OnnxflatError(f"models saw different numbers of samples: {sorted(sizes)}")
    n = docs[0]["n_samples"]
    low = [d["accuracy"] < chance_floor(n, k) for d, k in zip(docs, classes)]
    comp = c.comparison(docs, data.name, low)
    click.echo(f"data: {data.name}, {n} samples; rank 1 = flattest")
    click.echo(c.table(comp, sort))
    click.echo(c.legend(comp))
    if json_out:
        write_json(comp, json_out)
    if csv_out:
        try:
            with open(csv_out, "w", encoding="utf-8", newline="") as f:
                f.write(c.to_csv(comp))
        except OSError as exc:
            raise OnnxflatError(f"cannot write {csv_out}: {exc.strerror}") from None
