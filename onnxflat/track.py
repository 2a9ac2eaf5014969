"""Flatness along training: one row of every measure (with its standard error) per measured
epoch, appended to a JSONL or CSV run file, on a fixed, seeded subset of the training data.

Framework-neutral: :class:`Tracker` takes a ``measure(model, x, y) -> Result`` function;
``onnxflat.torch.Tracker``, ``onnxflat.lightning.FlatnessCallback`` and
``onnxflat.keras.FlatnessCallback`` bind it to their framework. Cost of one measured epoch:
one ONNX export plus one inference pass over the subset (the row's ``seconds``).
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import DataError, OnnxflatError
from .measures import Result

RUN_SUFFIXES = (".jsonl", ".csv")


def fixed_subset(n: int, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``size`` of ``n`` samples drawn without replacement with ``seed``
    (all samples when ``size`` is None or at least n)."""
    if n < 1:
        raise DataError("no samples to track flatness on")
    if size is None or size >= n:
        return np.arange(n)
    if size < 1:
        raise DataError(f"subset must be at least 1, got {size}")
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def result_row(res: Result) -> dict:
    """The measures of ``res`` as a flat dict: ``loss``, ``accuracy``, ``layer<i>.trace``,
    ``layer<i>.kappa``, ``layer<i>.kappa_layerwise``, ``classifier.trace``,
    ``classifier.kappa``, each with ``<name>_se`` (its standard error), and ``n_samples``."""
    row = {"n_samples": res.n_samples, "loss": res.loss, "loss_se": res.stderr["loss"],
           "accuracy": res.accuracy, "accuracy_se": res.stderr["accuracy"]}
    for i, layer in enumerate(res.layers):
        for m in ("trace", "kappa", "kappa_layerwise"):
            value = getattr(layer, m)
            if value is not None:
                row[f"layer{i}.{m}"] = value
                row[f"layer{i}.{m}_se"] = layer.stderr.get(m)
    for m in ("trace", "kappa"):
        value = getattr(res.classifier, m, None)
        if value is not None:
            row[f"classifier.{m}"] = value
            row[f"classifier.{m}_se"] = res.classifier.stderr.get(m)
    return row


class RunLog:
    """A run file, appended to (never rewritten): JSONL (one object per line) or CSV (a
    header, then one row per measured epoch)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.suffix.lower() not in RUN_SUFFIXES:
            raise OnnxflatError(f"run file {self.path.name}: give a name ending in .jsonl "
                                "or .csv")

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix.lower() == ".jsonl":
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            return
        header = None
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, newline="", encoding="utf-8") as fh:
                header = next(csv.reader(fh), None)
            new = [k for k in row if k not in header]
            if new:
                raise OnnxflatError(f"{self.path.name} was started with other columns (not "
                                    f"{', '.join(new)}); write to a new file or use .jsonl")
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            if header is None:
                header = list(row)
                out.writerow(header)
            out.writerow(["" if row.get(k) is None else row[k] for k in header])


def read_run(path: str | Path) -> list[dict]:
    """The rows of a run file, one per measured epoch; a restarted run's rows for an epoch
    replace the earlier ones (the last row of each epoch wins), sorted by epoch."""
    log = RunLog(path)
    p = log.path
    if not p.is_file():
        raise DataError(f"run file not found: {p}")
    rows = []
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            if p.suffix.lower() == ".jsonl":
                for k, line in enumerate(fh, 1):
                    if line.strip():
                        row = json.loads(line)
                        if not isinstance(row, dict):
                            raise ValueError(f"line {k} is not an object")
                        rows.append(row)
            else:
                rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(fh)]
    except (ValueError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{p.name}: not an onnxflat run file ({exc})") from None
    by_epoch = {}
    for row in rows:
        epoch = row.get("epoch")
        numeric = isinstance(epoch, (int, float)) and not isinstance(epoch, bool)
        if not numeric or not math.isfinite(epoch):
            raise DataError(f"{p.name}: a row without a numeric 'epoch' (not an onnxflat run "
                            "file?)")
        by_epoch[epoch] = row
    if not by_epoch:
        raise DataError(f"{p.name}: no rows")
    return [by_epoch[e] for e in sorted(by_epoch)]


def _number(text: str):
    if text in ("", None):
        return None
    try:
        return float(text)
    except ValueError:
        return text


class Tracker:
    """Measures a model every ``every`` epochs (epochs 0, k, 2k, ... as the caller numbers
    them) on fixed inputs ``x`` with labels ``y`` and appends a row to ``path``: ``epoch``,
    ``seconds`` (the cost: export + one pass), the caller's ``metrics`` (training loss,
    validation accuracy...; one named like a measure, e.g. ``loss``, is written as
    ``metric.loss``), then :func:`result_row` (``loss`` and ``accuracy`` there are on the
    subset, in eval mode). ``writer``: anything with
    ``add_scalar(tag, value, step)`` (a TensorBoard ``SummaryWriter``) also receives the
    measures as ``onnxflat/<name>``."""

    def __init__(self, measure: Callable[[object, np.ndarray, np.ndarray], Result],
                 x: np.ndarray, y: np.ndarray, path: str | Path, *, every: int = 1,
                 writer=None):
        if every < 1:
            raise OnnxflatError(f"every must be at least 1, got {every}")
        self.measure, self.x, self.y = measure, x, y
        self.log = RunLog(path)
        self.every, self.writer = every, writer
        self.last: Result | None = None

    def due(self, epoch: int) -> bool:
        return epoch % self.every == 0

    def __call__(self, model, epoch: int, **metrics) -> dict | None:
        """Measure ``model`` after ``epoch`` if due; the row written, else None."""
        if not self.due(epoch):
            return None
        t0 = time.perf_counter()
        self.last = res = self.measure(model, self.x, self.y)
        measures = result_row(res)
        row = {"epoch": int(epoch), "seconds": round(time.perf_counter() - t0, 4)}
        row.update({("metric." + k if k in measures or k in row else k): _plain(v)
                    for k, v in metrics.items()})
        row.update(measures)
        self.log.append(row)
        if self.writer is not None:
            for k, v in measures.items():
                if v is not None and not k.endswith("_se"):
                    self.writer.add_scalar(f"onnxflat/{k}", v, int(epoch))
        return row


def _plain(v):
    """A metric as a JSON number (tensors and NumPy scalars included)."""
    if hasattr(v, "item"):
        v = v.item()
    return v if isinstance(v, (int, str)) or v is None else float(v)
