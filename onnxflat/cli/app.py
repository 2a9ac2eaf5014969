"""The ``onnxflat`` command group and the error guard every command uses.

Exit codes: 0 success, 2 bad input (one line on stderr), 3 unexpected error
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import functools
import logging
import sys

import click
import numpy as np

from .. import __version__
from ..errors import OnnxflatError, first_line

EXIT_BAD_INPUT = 2
EXIT_UNEXPECTED = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def say_error(message: str) -> None:
    """Print ``message`` as one line on stderr and, under GitHub Actions, as an ``::error::``
    annotation on stdout."""
    from ..report.gate import github_error, in_github_actions

    message = " ".join(message.split())
    click.echo(message, err=True)
    if in_github_actions():
        click.echo(github_error(message))


def fail(ctx: click.Context, message: str, code: int) -> None:
    say_error(message)
    ctx.exit(code)


class Group(click.Group):
    """click's group, with usage errors annotated like every other exit 2 and Ctrl-C (which
    click turns into Abort) exiting 130 with one line instead of click's exit 1 (the gate's
    "failed")."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            exc.show()
            if exc.exit_code == EXIT_BAD_INPUT:
                from ..report.gate import github_error, in_github_actions
                if in_github_actions():
                    click.echo(github_error(exc.format_message()))
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted (Ctrl-C)", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


def guard(fn):
    """Map user errors to exit 2 and anything else to exit 3, without a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            with np.errstate(all="ignore"):  # non-finite values are detected and reported
                return fn(*args, **kwargs)
        except OnnxflatError as exc:
            fail(ctx, f"error: {exc}", EXIT_BAD_INPUT)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except MemoryError as exc:
            batched = any(p.name == "batch_size" for p in ctx.command.params)
            hint = ("use a smaller --batch-size or a smaller model input" if batched else
                    "the model needs more memory than this machine has")
            fail(ctx, f"error: out of memory ({first_line(exc)}); {hint}", EXIT_BAD_INPUT)
        except Exception as exc:  # noqa: BLE001 - last line of defence
            if (ctx.find_root().obj or {}).get("debug"):
                raise
            fail(ctx, f"internal error: {type(exc).__name__}: {first_line(exc)} (rerun with "
                 "--debug for the traceback, and please report it)", EXIT_UNEXPECTED)
    return wrapper


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
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
      onnxflat gate models/digits_cnn_sharp.onnx --data models/digits_train.npz \\
          --baseline docs/ci/baseline.json --max-increase 10%
      onnxflat compare models/*.onnx --data models/digits_train.npz --csv ranks.csv
      onnxflat report models/digits_cnn.onnx --data models/digits_train.npz --out report/
      onnxflat plot run.jsonl --out run.png

    Every command: onnxflat COMMAND --help (options and examples).
    """
    ctx.obj = {"debug": debug}
    logger = logging.getLogger("onnxflat")
    logger.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)])
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    if not logging.getLogger().handlers:  # other libraries' log lines (Pillow...): not on stderr
        logging.getLogger().addHandler(logging.NullHandler())


class _EchoHandler(logging.Handler):
    """Log records as ``level: message`` lines on the current stderr (click's, when captured)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)
