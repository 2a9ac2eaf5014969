"""A data source as a small picklable description, opened where it is used.

A :class:`DataSpec` holds only paths and options, never arrays; :meth:`DataSpec.open`
turns it into an :class:`~onnxflat.data.ArrayDataset` whose samples are read lazily (a
memory-mapped .npy pair, an image folder decoded batch by batch). Cluster workers and
batch-scheduler jobs receive the spec and open the data themselves, so the data must sit
on storage every worker can read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fingerprint import file_sha256, json_sha256
from .arrays import ArrayDataset, load_npy_pair, load_npz
from .images import ImageFolder, ImageOptions


@dataclass(frozen=True)
class DataSpec:
    """Where the data is and how to read it.

    ``path`` is a .npz file (inputs ``x_key``, labels ``y_key``), a .npy file of inputs
    (then ``labels`` is the .npy of labels) or a folder with one sub-folder of images per
    class. ``limit`` keeps a random subset of that many samples, drawn with ``seed``.
    """

    path: str
    x_key: str = "x"
    y_key: str = "y"
    labels: str | None = None
    images: ImageOptions = ImageOptions()
    limit: int | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def kind(self) -> str:
        """``npz``, ``npy`` (a pair of .npy files) or ``images`` (a folder)."""
        p = Path(self.path)
        if p.is_dir():
            return "images"
        if p.suffix.lower() == ".npy" or self.labels is not None:
            return "npy"
        return "npz"

    def fit(self, input_shape) -> "DataSpec":
        """Fill image options left open (channels, size) from the model input shape."""
        if self.kind != "images":
            return self
        if len(input_shape) != 4:
            raise DataError(f"{self.name}: an image folder feeds models of 2-D images (N, C, H, "
                            f"W); this model takes {len(input_shape)}-axis inputs: give a .npz "
                            "or .npy of them")
        return replace(self, images=self.images.fit(input_shape))

    def open(self) -> ArrayDataset:
        p = Path(self.path)
        if not p.exists():
            raise DataError(f"data not found: {p}")
        kind = self.kind
        if kind == "images":
            if self.labels is not None:
                raise DataError(f"{p.name}: an image folder takes its labels from its "
                                "sub-folders; drop --labels")
            folder = ImageFolder(p, self.images)
            ds = ArrayDataset(folder, folder.targets, p.name)
        elif kind == "npy":
            if self.labels is None:
                raise DataError(f"{p.name}: a .npy file of inputs needs its labels: "
                                "--labels Y.npy")
            ds = load_npy_pair(p, self.labels)
        else:
            ds = load_npz(p, self.x_key, self.y_key)
        if self.limit is not None:
            ds = random_subset(ds, self.limit, self.seed)
        return ds

    def describe(self) -> dict:
        """JSON-ready description (paths and the options that apply to this kind)."""
        out = {"path": self.path, "kind": self.kind}
        if out["kind"] == "npz":
            out.update(x_key=self.x_key, y_key=self.y_key)
        elif out["kind"] == "npy":
            out.update(labels=self.labels)
        else:
            o = self.images
            out.update(size=list(o.size) if o.size else None, scale=str(o.scale),
                       mean=list(o.mean) if o.mean else None, std=list(o.std) if o.std else None,
                       layout=o.layout, channel_order=o.channel_order, channels=o.channels)
        if self.limit is not None:
            out.update(limit=self.limit, seed=self.seed)
        return out

    def fingerprint(self) -> str:
        """sha256 over the file contents (image folders: file names and sizes) and the
        options that select and shape the samples (not the paths, so a copy of the data on
        another machine matches)."""
        opts = {k: v for k, v in self.describe().items() if k not in ("path", "labels")}
        kind = opts["kind"]
        if kind == "images":
            # Names and sizes only: every shard of an ImageNet-sized folder would otherwise
            # read all of it to name it (an edit that keeps a file's size goes unnoticed).
            root = Path(self.path)
            files = sorted(f for f in root.rglob("*") if f.is_file())
            content = [[f.relative_to(root).as_posix(), f.stat().st_size] for f in files]
        else:
            content = [file_sha256(p) for p in (self.path, self.labels) if p is not None]
        return json_sha256({"files": content, "options": opts})


def open_data(spec: DataSpec | str | os.PathLike) -> ArrayDataset:
    """The dataset a spec describes (a bare path: a .npz file or an image folder)."""
    return (spec if isinstance(spec, DataSpec) else DataSpec(os.fspath(spec))).open()


def random_subset(ds: ArrayDataset, limit: int, seed: int = 0) -> ArrayDataset:
    """``limit`` samples drawn without replacement with ``seed`` (all if fewer), in file order."""
    if limit < 1:
        raise DataError(f"--limit must be >= 1, got {limit}")
    if limit >= len(ds):
        return ds
    idx = np.random.default_rng(seed).choice(len(ds), size=limit, replace=False)
    return ds.subset(np.sort(idx))
