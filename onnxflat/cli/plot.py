"""``onnxflat plot``: a run file's measures over epochs, as a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import OnnxflatError
from ..report import runplot
from ..track import read_run
from .app import guard, main


@main.command()
@click.argument("run", type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False),
              help="PNG to write [default: RUN with the suffix .png].")
@guard
def plot(run, out):
    """Plot RUN (.jsonl or .csv, written by onnxflat.torch.Tracker or a callback): every
    measure over epochs with +-1 standard-error bands, beside loss and accuracy (needs
    matplotlib: pip install 'onnxflat[report]').

    \b
    Example:
      onnxflat plot run.jsonl --out run.png
    """
    runplot.require_matplotlib()  # before reading, so a missing extra costs nothing
    rows = read_run(run)
    png = runplot.run_png(rows, Path(run).name)
    path = Path(out) if out else Path(run).with_suffix(".png")
    try:
        path.write_bytes(png)
    except OSError as exc:
        raise OnnxflatError(f"cannot write {path}: {exc.strerror}") from None
    click.echo(f"wrote {path} ({len(rows)} epochs)")
