"""Options shared by the commands that run a model over data, and the run they drive.

``@data_options`` adds the data source options and passes ``data=DataSpec``;
``@run_options`` adds batch size, device, quiet... and passes ``run=CliRun``. A command
prepares each model once (:func:`prepare`) and hands the prepared model to the rest.
"""

from __future__ import annotations

import functools
import logging
import sys
from dataclasses import dataclass, fields
from fractions import Fraction

import click

from .. import __version__
from ..data import DataSpec, ImageOptions
from ..data.images import parse_scale
from ..errors import DataError
from ..fingerprint import json_sha256
from ..measures import Result
from ..prepared import DEFAULT_BATCH_SIZE, PreparedModel, RunOptions

log = logging.getLogger(__name__)

DATA_HELP = """\b
Data (--data): a .npz with x (model layout) and y (integer labels); a .npy of inputs with
--labels Y.npy (streamed: data larger than RAM works); or a folder with one sub-folder of
images per class (searched recursively; sorted names = labels 0, 1, ..., or --classes
FILE), preprocessed as: decode (grayscale or RGB, as the model's channels) -> --resize H W
(default: the model's size) or --resize-shorter S -> --center-crop H W -> x --scale ->
--channel-order -> (x - --mean) / --std -> --layout. torchvision's Resize(256),
CenterCrop(224), ToTensor(), Normalize(m, s) is --resize-shorter 256 --center-crop 224 224
--mean m --std s."""


@dataclass(frozen=True)
class CliRun(RunOptions):
    """The run's options, and whether to hide the progress bar."""

    quiet: bool = False

    def options(self) -> RunOptions:
        """The run's options without the command line's own (picklable for workers)."""
        return RunOptions(**{f.name: getattr(self, f.name) for f in fields(RunOptions)})


def _scale(ctx, param, value):
    if value is None:
        return None
    try:
        return parse_scale(value)
    except DataError as exc:
        raise click.BadParameter(str(exc)) from None


def _floats(ctx, param, value):
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    return out


def data_options(fn):
    """Add the data options; the command receives ``data: DataSpec``."""
    options = [
        click.option("--data", "data_path", required=True, type=click.Path(exists=True),
                     help=".npz file, .npy of inputs (with --labels) or image folder."),
        click.option("--labels", type=click.Path(exists=True, dir_okay=False),
                     help=".npy of integer labels, for a .npy of inputs."),
        click.option("--x-key", default="x", show_default=True, help="Inputs in the .npz."),
        click.option("--y-key", default="y", show_default=True, help="Labels in the .npz."),
        click.option("--resize", nargs=2, type=click.IntRange(min=1), metavar="H W",
                     default=None, help="Images: resize to H x W (default: model input size)."),
        click.option("--resize-shorter", type=click.IntRange(min=1), metavar="S",
                     help="Images: resize the shorter side to S, keeping the aspect ratio "
                          "(torchvision's Resize(S)); needs --center-crop."),
        click.option("--center-crop", nargs=2, type=click.IntRange(min=1), metavar="H W",
                     default=None, help="Images: then crop the center H x W "
                                        "(torchvision's CenterCrop)."),
        click.option("--classes", "classes_file", type=click.Path(exists=True, dir_okay=False),
                     help="Images: file naming each class folder's label (one folder name per "
                          "line in label order, 'FOLDER LABEL' lines, or JSON), so a folder "
                          "with a subset of the classes keeps the model's labels."),
        click.option("--skip-bad", is_flag=True,
                     help="Images: skip files that do not decode (counted in a warning) "
                          "instead of stopping."),
        click.option("--scale", callback=_scale, metavar="F",
                     help="Multiply inputs by F (a number or fraction) [images: 1/255; "
                          "arrays: 1, e.g. 1/255 for uint8 pixels]."),
        click.option("--mean", callback=_floats, metavar="M[,M,M]",
                     help="Images: subtract (per channel, after --scale)."),
        click.option("--std", callback=_floats, metavar="S[,S,S]",
                     help="Images: then divide by (per channel)."),
        click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default="NCHW",
                     show_default=True, help="Images: axis order the model takes."),
        click.option("--channel-order", type=click.Choice(["RGB", "BGR"]), default="RGB",
                     show_default=True, help="Images: channel order the model takes."),
        click.option("--limit", type=click.IntRange(min=1),
                     help="Use a random subset of this many samples."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the --limit subset."),
    ]

    @functools.wraps(fn)
    def wrapper(*args, data_path, labels, x_key, y_key, resize, resize_shorter, center_crop,
                classes_file, skip_bad, scale, mean, std, layout, channel_order, limit, seed,
                **kwargs):
        images = ImageOptions(size=tuple(resize) if resize else None,
                              scale=scale or Fraction(1, 255), mean=mean, std=std,
                              layout=layout, channel_order=channel_order,
                              resize_shorter=resize_shorter,
                              crop=tuple(center_crop) if center_crop else None,
                              classes=classes_file, skip_bad=skip_bad)
        kwargs["data"] = DataSpec(data_path, labels=labels, x_key=x_key, y_key=y_key,
                                  images=images, limit=limit, seed=seed, scale=scale)
        return fn(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def run_options(fn):
    """Add batch size, device, --no-filter-kappa, --quiet and --threads; the command receives
    ``run``."""
    options = [
        click.option("--batch-size", "-b", default=DEFAULT_BATCH_SIZE, show_default=True,
                     type=click.IntRange(min=1), help="Samples per onnxruntime run."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True, help="Execution provider."),
        click.option("--no-filter-kappa", is_flag=True,
                     help="Skip the filter-wise kappa (its dense part dominates on wide heads)."),
        click.option("--quiet", "-q", is_flag=True,
                     help="No progress bar (it is also off when stderr is not a terminal)."),
        click.option("--threads", type=click.IntRange(min=1),
                     help="CPU threads for onnxruntime and the math [default: all cores]."),
    ]

    @functools.wraps(fn)
    def wrapper(*args, batch_size, device, no_filter_kappa, quiet, threads, **kwargs):
        kwargs["run"] = CliRun(batch_size=batch_size, device=device, kappa=not no_filter_kappa,
                               quiet=quiet, threads=threads)
        return fn(*args, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def json_option(help_text: str = "Write the full result as JSON."):
    return click.option("--json", "json_out", type=click.Path(dir_okay=False), help=help_text)


def prepare(model: str, run: CliRun | None = None) -> PreparedModel:
    """``model`` parsed and analyzed (once per command), to run with ``run``'s options."""
    return PreparedModel.load(model, run.options() if run else RunOptions())


def progress_bar(total: int, model: str, quiet: bool):
    """A tqdm bar over samples (rate in samples/s, ETA), off when quiet or not a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, unit="sample", desc=click.format_filename(model, shorten=True),
                disable=quiet or not sys.stderr.isatty(), leave=False, file=sys.stderr)


def data_fingerprint(data: DataSpec) -> dict:
    """What names the data (fitted to the model) a result was measured on: name, source
    (``DataSpec.describe``), sha256 (contents and options) and its parts
    (``DataSpec.fingerprint_parts``), which ``gate`` compares with its baseline's."""
    parts = data.fingerprint_parts()
    return {"name": data.name, "source": data.describe(), "sha256": json_sha256(parts),
            "parts": parts}


def result_doc(res: Result, data: DataSpec, fingerprint: dict | None = None) -> dict:
    """``res`` as a JSON-ready dict with the onnxflat version that wrote it and the data
    (fitted to the model) it was measured on (``fingerprint``, computed if not given)."""
    return {"onnxflat": __version__, **res.to_dict(),
            "data": fingerprint or data_fingerprint(data)}


def run_measure(prepared: PreparedModel, data: DataSpec, quiet: bool = False,
                per_sample: bool = False) -> Result:
    """Measure ``prepared`` on ``data`` (fitted to it) with a progress bar unless quiet."""
    ds = data.open()
    log.info("data: %s, %d samples", data.name, len(ds))
    if quiet or not sys.stderr.isatty():  # no bar: tqdm is not even imported
        return prepared.measure(ds, per_sample=per_sample)
    with progress_bar(len(ds), prepared.name, quiet) as bar:
        return prepared.measure(ds, per_sample=per_sample,
                                progress=lambda done: bar.update(done - bar.n))
