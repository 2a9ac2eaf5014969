"""Command line: ``onnxflat inspect`` and ``onnxflat measure``.

Exit codes: 0 success, 2 bad input (one line on stderr), 3 unexpected error
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .api import DEFAULT_BATCH_SIZE, measure as measure_api
from .data import load_npz
from .errors import OnnxflatError
from .graph import analyze
from .report import head_summary, result_summary, write_json

EXIT_BAD_INPUT = 2
EXIT_UNEXPECTED = 3


def _guard(fn):
    """Map user errors to exit 2 and anything else to exit 3, without a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except OnnxflatError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence
            if (ctx.find_root().obj or {}).get("debug"):
                raise
            click.echo(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for "
                       "the traceback, and please report it)", err=True)
            ctx.exit(EXIT_UNEXPECTED)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxflat")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx, debug, verbose):
    """Exact Hessian trace and relative flatness of a CNN's conv-GAP-linear head.

    \b
    Examples:
      onnxflat inspect models/digits_cnn.onnx
      onnxflat measure models/digits_cnn.onnx --data models/digits_train.npz
    """
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
                        format="%(levelname)s: %(message)s")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write the head description as JSON.")
@_guard
def inspect(model, json_out):
    """Show the detected head of MODEL, or why it does not qualify (exit 2).

    \b
    Example:
      onnxflat inspect resnet18.onnx --json head.json
    """
    head = analyze(model)
    click.echo(head_summary(head))
    if json_out:
        from .report import head_dict
        write_json(head_dict(head), json_out)


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
@_guard
def measure(model, data_path, x_key, y_key, batch_size, no_filter_kappa, device, json_out):
    """Measure trace and relative flatness of MODEL's head on labelled DATA.

    \b
    Example:
      onnxflat measure models/digits_cnn.onnx --data models/digits_train.npz --json out.json
    """
    ds = load_npz(data_path, x_key, y_key)
    res = measure_api(model, ds, batch_size=batch_size, kappa=not no_filter_kappa,
                      device=device)
    click.echo(result_summary(res, data_name=Path(data_path).name))
    if json_out:
        write_json(res.to_dict(), json_out)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
