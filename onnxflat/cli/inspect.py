"""``onnxflat inspect``: the detected head, or the refusal."""

from __future__ import annotations

import click

from ..errors import HeadNotFoundError
from ..report import head_dict, head_summary, write_json
from .app import guard, main
from .options import prepare


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write the head description (or the refusal) as JSON.")
@guard
def inspect(model, json_out):
    """Show the detected head of MODEL, or why it does not qualify (exit 2).

    \b
    Example:
      onnxflat inspect resnet18.onnx --json head.json
    """
    try:
        head = prepare(model).head
    except HeadNotFoundError as exc:
        if json_out:
            write_json({"model": model, "refusal": {"node": exc.node, "reason": exc.reason}},
                       json_out)
        raise
    click.echo(head_summary(head))
    if json_out:
        write_json(head_dict(head), json_out)
