"""``onnxflat merge``: combine the partial results of all shards of one run."""

from __future__ import annotations

import click

from .. import __version__
from ..partial import Partial, merge as merge_partials
from ..report import result_summary, write_json
from .app import guard, main


@main.command()
@click.argument("partials", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write the merged result as JSON (same fields as `measure --json`).")
@guard
def merge(partials, json_out):
    """Merge the PARTIALS written by `measure --shard I/N --partial OUT` into the result a
    single run would give. Refuses (exit 2) partials of different models, heads, measures,
    data or splits, and missing or duplicate shards.

    \b
    Example:
      onnxflat merge parts/shard-*.npz --json result.json
    """
    merged = merge_partials([Partial.load(p) for p in partials], list(partials))
    res = merged.result()
    click.echo(result_summary(res, data_name=merged.meta["data"]["name"]))
    if json_out:
        data = {k: merged.meta["data"][k] for k in ("name", "source", "sha256")}
        write_json({"onnxflat": __version__, **res.to_dict(), "data": data},
                   json_out)  # as measure --json
