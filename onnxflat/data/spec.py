"""A data source as a small picklable description, opened where it is used.

A :class:`DataSpec` holds only paths and options, never arrays; :meth:`DataSpec.open`
turns it into an :class:`~onnxflat.data.ArrayDataset` whose samples are read lazily (a
.npy pair read in row blocks, an image folder decoded batch by batch). Cluster workers and
batch-scheduler jobs receive the spec and open the data themselves, so the data must sit
on storage every worker can read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fingerprint import array_sha256, json_sha256
from .arrays import ArrayDataset, load_npy_pair, load_npz
from .images import ImageFolder, ImageOptions


@dataclass(frozen=True)
class DataSpec:
    """Where the data is and how to read it.

    ``path`` is a .npz file (inputs ``x_key``, labels ``y_key``), a .npy file of inputs
    (then ``labels`` is the .npy of labels) or a folder with one sub-folder of images per
    class. ``limit`` keeps a random subset of that many samples, drawn with ``seed``.
    ``scale`` multiplies array inputs (image folders have their own, ``images.scale``).
    """

    path: str
    x_key: str = "x"
    y_key: str = "y"
    labels: str | None = None
    images: ImageOptions = ImageOptions()
    limit: int | None = None
    seed: int = 0
    scale: Fraction | None = None

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

    def fit(self, input_shape, num_classes: int | None = None) -> DataSpec:
        """Fill image options left open (channels, size, the model's classes) from the
        model."""
        if self.kind != "images":
            return self
        if len(input_shape) != 4:
            raise DataError(f"{self.name}: an image folder feeds models of 2-D images (N, C, H, "
                            f"W); this model takes {len(input_shape)}-axis inputs: give a .npz "
                            "or .npy of them")
        return replace(self, images=self.images.fit(input_shape, num_classes))

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
        if kind != "images":
            ds.scale = self.scale
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
        if out["kind"] != "images" and self.scale is not None:
            out.update(scale=str(self.scale))
        if out["kind"] == "images":
            o = self.images
            out.update(size=list(o.size) if o.size else None, scale=str(o.scale),
                       mean=list(o.mean) if o.mean else None, std=list(o.std) if o.std else None,
                       layout=o.layout, channel_order=o.channel_order, channels=o.channels)
            if o.resize_shorter or o.crop:
                out.update(resize_shorter=o.resize_shorter,
                           center_crop=list(o.crop) if o.crop else None)
            if o.classes:
                out.update(classes=o.classes)
            if o.skip_bad:
                out.update(skip_bad=True)
        if self.limit is not None:
            out.update(limit=self.limit, seed=self.seed)
        return out

    def fingerprint_parts(self) -> dict[str, str]:
        """sha256 of each part that decides the samples: ``samples`` (the values of x: a
        .npz member and a .npy file of one array agree; an image folder: its image files'
        names and sizes, so that no shard decodes all of it to name it), ``labels``,
        ``selection`` (--limit, --seed) and ``preprocessing`` (the options that shape the
        samples). Paths and file formats do not count: a copy of the data matches."""
        ds = replace(self, limit=None).open()
        x = ds.x
        if isinstance(x, ImageFolder):
            samples = json_sha256([[f.relative_to(x.root).as_posix(), f.stat().st_size]
                                   for f in x.files])
        else:
            samples = array_sha256(x)
        shaping = {k: v for k, v in self.describe().items()
                   if k not in ("path", "kind", "labels", "x_key", "y_key", "limit", "seed",
                                "classes")}
        return {"samples": samples, "labels": array_sha256(ds.y),
                "selection": json_sha256({"limit": self.limit,
                                          "seed": self.seed if self.limit else None}),
                "preprocessing": json_sha256(shaping)}

    def fingerprint(self) -> str:
        """sha256 of :meth:`fingerprint_parts`."""
        return json_sha256(self.fingerprint_parts())


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
