"""Partial results: the sufficient statistics of one shard of the data, as a versioned file.

Every measure is a mean over samples of per-sample terms, so shard I of N (a contiguous
range of the sample indices, see :class:`Shard`) can be computed anywhere and the shards
merged exactly (Chan et al. pairwise merge of :class:`~onnxflat.measures.Moments`).

File format (version 2): a .npz written without pickling, holding

- ``meta``: a JSON string: ``format`` ("onnxflat-partial"), ``version``, ``onnxflat``
  (the writer's version), ``model`` (path and sha256 of the file bytes), ``head``
  (sha256 of the head's structure and weights, :func:`~onnxflat.graph.structure.digest`,
  and the summary needed to report results),
  ``options`` (which measures), ``data`` (name, source, sha256 of its contents and
  options, number of samples), ``shard`` (index, count, start, stop), ``n`` and ``provider``;
- the float64 statistics ``n``, ``names``, ``mean``, ``m2`` and ``vec/<name>`` of
  :meth:`Moments.to_arrays` (binary float64, so merging is exact to rounding).
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import __version__
from .data.arrays import READ_ERRORS
from .data.spec import DataSpec
from .errors import ModelError, OnnxflatError
from .fingerprint import file_sha256
from .graph.structure import digest
from .measures import Moments, Result
from .measures.flatness import HeadSummary, assemble
from .prepared import PreparedModel, RunOptions

FORMAT = "onnxflat-partial"
VERSION = 2  # 2: the head summary's layers carry their kernel shape


class PartialError(OnnxflatError):
    """Partial results that cannot be read or merged (the message names the files)."""


@dataclass(frozen=True, order=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based, as in ``--shard 3/7``): the contiguous sample
    range ``[(index-1)*n//count, index*n//count)`` of the data's n samples."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise OnnxflatError(f"shard must be I/N (e.g. 3/7), got {text!r}")
        shard = cls(int(m.group(1)), int(m.group(2)))
        if not 1 <= shard.index <= shard.count:
            raise OnnxflatError(f"shard {shard}: I must be between 1 and N")
        return shard

    def bounds(self, n: int) -> tuple[int, int]:
        return (self.index - 1) * n // self.count, self.index * n // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass
class Partial:
    """Statistics of one shard (``meta`` as described in the module docstring)."""

    meta: dict
    moments: Moments

    @property
    def shard(self) -> Shard:
        return Shard(self.meta["shard"]["index"], self.meta["shard"]["count"])

    def result(self) -> Result:
        summary = self.meta["head"]["summary"]
        head = HeadSummary(summary["description"], tuple(map(tuple, summary["layers"])),
                           summary.get("classifier"))
        return assemble(self.moments, head, self.meta["options"]["kappa"],
                        self.meta["model"]["path"], self.meta.get("provider"))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (a rerun job never leaves a half-written partial)."""
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        try:
            with tmp.open("wb") as f:
                np.savez(f, meta=np.asarray(json.dumps(self.meta)), **self.moments.to_arrays())
            os.replace(tmp, p)
        except OSError as exc:
            raise OnnxflatError(f"cannot write {p}: {exc.strerror}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Partial:
        p = Path(path)
        if not p.is_file():
            raise PartialError(f"partial file not found: {p}")
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.keys()}
            meta = json.loads(str(arrays.pop("meta")))
        except READ_ERRORS:
            raise PartialError(f"{p}: not an onnxflat partial result file") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise PartialError(f"{p}: not an onnxflat partial result file")
        if meta.get("version") != VERSION:
            raise PartialError(f"{p}: partial format version {meta.get('version')}, this "
                               f"onnxflat ({__version__}) reads version {VERSION}")
        where = _mismatch(meta, _META)
        if where:
            raise PartialError(f"{p}: damaged partial result file (meta field {where})")
        try:
            moments = Moments.from_arrays(arrays)
        except (KeyError, ValueError, TypeError):
            raise PartialError(f"{p}: damaged partial result file (statistics missing)") from None
        k = len(moments.names)
        if (moments.mean.shape != (k,) or moments.m2.shape != (k,) or moments.n != meta["n"]
                or any(v.ndim != 1 for v in moments.vectors.values())):
            raise PartialError(f"{p}: damaged partial result file (statistics do not match)")
        return cls(meta, moments)


# The meta fields a partial must have, with their types (a dict: nested fields).
_META = {"model": {"path": str, "sha256": str},
         "head": {"sha256": str, "summary": {"description": str, "layers": list}},
         "options": {"kappa": bool},
         "data": {"name": str, "source": dict, "sha256": str, "n_total": int},
         "shard": {"index": int, "count": int, "start": int, "stop": int},
         "n": int, "provider": (str, type(None))}


def _mismatch(value, schema, path: str = "") -> str | None:
    """The first field of ``value`` that is missing or of the wrong type, else None."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return path or "(top)"
        for key, sub in schema.items():
            if key not in value:
                return f"{path}{key} missing"
            found = _mismatch(value[key], sub, f"{path}{key}.")
            if found:
                return found
        return None
    ok = isinstance(value, schema) and not (schema is int and isinstance(value, bool))
    return None if ok else f"{path.rstrip('.')} is not {getattr(schema, '__name__', 'str')}"


@lru_cache(maxsize=4)
def _prepared(path: str, sha256: str, options: RunOptions) -> PreparedModel:
    """A model file prepared once per process (a cluster worker loads it once), keyed by
    content so a replaced file is reloaded."""
    del sha256
    return PreparedModel.load(path, options)


def compute(model: str | os.PathLike | PreparedModel, data: DataSpec,
            shard: Shard = Shard(1, 1), options: RunOptions = RunOptions(), *,
            progress=None) -> Partial:
    """Statistics of ``shard`` of ``data`` for ``model``, a file (prepared with ``options``
    once per process) or a prepared model (its own options)."""
    given = isinstance(model, PreparedModel)
    path = model.name if given else os.fspath(model)
    if not Path(path).is_file():
        raise ModelError(f"model file not found: {path}")
    sha = file_sha256(path)
    prepared = model if given else _prepared(path, sha, options)
    head = prepared.head
    data = prepared.fit(data)
    ds = data.open()
    ds.check_fits(head.input_shape, head.num_classes)
    start, stop = shard.bounds(len(ds))
    if stop == start:
        raise OnnxflatError(f"shard {shard} of {data.name} is empty: it has {len(ds)} "
                            f"samples, so use at most {len(ds)} shards")
    acc = prepared.accumulate(prepared.batches(ds.subset(np.arange(start, stop))), progress)
    summary = HeadSummary.of(head)
    meta = {
        "format": FORMAT, "version": VERSION, "onnxflat": __version__,
        "model": {"path": path, "sha256": sha},
        "head": {"sha256": digest(head),
                 "summary": {"description": summary.description,
                             "layers": [list(x) for x in summary.layers],
                             "classifier": summary.classifier}},
        "options": {"kappa": prepared.options.kappa},
        "data": {"name": data.name, "source": data.describe(), "sha256": data.fingerprint(),
                 "n_total": len(ds)},
        "shard": {"index": shard.index, "count": shard.count, "start": start, "stop": stop},
        "n": acc.moments.n,
        "provider": prepared.extractor.provider,
    }
    return Partial(meta, acc.moments)


# What every partial of one run must share: (label for messages, field getter).
_SAME = [
    ("models", lambda m: m["model"]["sha256"]),
    ("heads", lambda m: m["head"]["sha256"]),
    ("measures", lambda m: json.dumps(m["options"], sort_keys=True)),
    ("data", lambda m: (m["data"]["sha256"], m["data"]["n_total"])),
    ("splits", lambda m: m["shard"]["count"]),
]


def merge(partials: list[Partial], names: list[str] | None = None) -> Partial:
    """Merge the partials of all N shards of one run into the partial of shard 1/1.

    Raises :class:`PartialError` naming the files when they come from different models,
    heads, measures, data or splits, or when shards are missing or given twice.
    """
    if not partials:
        raise PartialError("no partial results to merge")
    names = names or [f"partial #{i + 1}" for i in range(len(partials))]
    for label, key in _SAME:
        groups = defaultdict(list)
        for name, p in zip(names, partials):
            groups[_show(key(p.meta))].append(name)
        if len(groups) > 1:
            detail = "; ".join(f"{', '.join(files)}: {value}" for value, files in groups.items())
            raise PartialError(f"partials of different {label} cannot be merged ({detail})")
    count = partials[0].shard.count
    by_index = defaultdict(list)
    for name, p in zip(names, partials):
        by_index[p.shard.index].append(name)
    dup = {i: files for i, files in by_index.items() if len(files) > 1}
    if dup:
        raise PartialError("duplicate shards: " + "; ".join(
            f"{i}/{count} in {', '.join(files)}" for i, files in sorted(dup.items())))
    missing = [i for i in range(1, count + 1) if i not in by_index]
    if missing:
        raise PartialError(f"missing shards {', '.join(f'{i}/{count}' for i in missing)} "
                           f"(have {len(by_index)} of {count})")
    n_total = partials[0].meta["data"]["n_total"]
    moments = Moments(partials[0].moments.names)
    for name, p in sorted(zip(names, partials), key=lambda t: t[1].shard.index):
        start, stop = p.shard.bounds(n_total)
        if (p.meta["shard"]["start"], p.meta["shard"]["stop"], p.moments.n) != (
                start, stop, stop - start) or p.meta["n"] != p.moments.n:
            raise PartialError(f"{name}: shard {p.shard} does not hold samples "
                               f"{start}..{stop - 1} of {n_total} (damaged or edited file)")
        shapes = {k: v.shape for k, v in p.moments.vectors.items()}
        if p.moments.names != moments.names or shapes != {
                k: v.shape for k, v in partials[0].moments.vectors.items()}:
            raise PartialError(f"{name}: its statistics do not match those of the other "
                               "partials (damaged or edited file)")
        moments.merge(p.moments)
    meta = json.loads(json.dumps(partials[0].meta))
    meta["shard"] = {"index": 1, "count": 1, "start": 0, "stop": n_total}
    meta["n"] = moments.n
    providers = {p.meta.get("provider") for p in partials}
    meta["provider"] = providers.pop() if len(providers) == 1 else None
    return Partial(meta, moments)


def _show(value) -> str:
    if isinstance(value, tuple):
        return ", ".join(_show(v) for v in value)
    text = str(value)
    return f"sha256 {text[:12]}" if re.fullmatch(r"[0-9a-f]{64}", text) else text
