"""``onnxflat report``: a self-contained HTML page of one model's measures."""

from __future__ import annotations

import re
from pathlib import Path

import click
import numpy as np

from ..errors import OnnxflatError
from ..report import head_summary, html, write_json
from .app import guard, main
from .options import DATA_HELP, data_options, prepare, result_doc, run_measure, run_options


@main.command(epilog=DATA_HELP)
@click.argument("model", type=click.Path(dir_okay=False))
@data_options
@run_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for report.html, one PNG per head conv layer and result.json.")
@click.option("--top", default=12, show_default=True, type=click.IntRange(min=0),
              help="Show the samples with the largest contributions (0: none).")
@guard
def report(model, data, run, out_dir, top):
    """Write an HTML report of MODEL on the data: the measures with standard errors, the
    head diagram and per-filter flatness plots (needs matplotlib: pip install
    'onnxflat[report]').

    \b
    Example:
      onnxflat report models/digits_cnn.onnx --data models/digits_train.npz --out report/
    """
    html.require_matplotlib()  # before the run, so a missing extra costs nothing
    prepared = prepare(model, run)
    data = prepared.fit(data)
    head_text = head_summary(prepared.head)
    res = run_measure(prepared, data, run.quiet, per_sample=top > 0)
    doc = result_doc(res, data)
    samples = _top_samples(data, res.per_sample, top) if top else ""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        pngs = {}
        for i, layer in enumerate(doc["layers"]):
            pngs[layer["conv"]] = png = html.per_filter_png(layer)
            slug = re.sub(r"[^A-Za-z0-9]+", "_", layer["conv"]).strip("_") or f"layer{i}"
            (out / f"per_filter_{i}_{slug}.png").write_bytes(png)
        (out / "report.html").write_text(html.page(doc, head_text, data.name, pngs, samples),
                                         encoding="utf-8")
    except OSError as exc:
        raise OnnxflatError(f"cannot write the report to {out}: {exc.strerror}") from None
    write_json(doc, out / "result.json")
    click.echo(f"wrote {out / 'report.html'}")


def _top_samples(data, table, k: int) -> str:
    """The top samples' HTML section, with thumbnails when the inputs are images (``data``
    fitted to the model)."""
    label, rows, shares = html.top_samples(table, k)
    ds = data.open()
    where = {int(r): i for i, r in enumerate(ds.index)} if ds.index is not None else None
    index = [int(i) for i in rows["index"]]
    sub = ds.subset([where[i] for i in index] if where else index)
    x = np.concatenate([xb for _, xb, _ in sub.batches(len(sub))])
    images = {i: png for i, png in zip(index, map(html.sample_png, x)) if png}
    return html.samples_section(label, rows, shares, images)
