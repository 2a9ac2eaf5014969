"""Open a data source from a small, picklable description.

A :class:`DataSpec` holds only paths and options; :func:`open_data` turns it into an
:class:`~onnxflat.data.ArrayDataset` whose samples are read lazily (a memory-mapped .npy
pair, an image folder decoded batch by batch). The spec, not the opened dataset, is what
to ship to another process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from .arrays import ArrayDataset, load_npy_pair, load_npz
from .images import ImageFolder, ImageOptions

__all__ = ["DataSpec", "open_data", "random_subset"]


@dataclass(frozen=True)
class DataSpec:
    """Where the data is and how to read it.

    ``path`` is a .npz file, a .npy file of inputs (then ``labels`` is the .npy of labels)
    or a folder with one sub-folder of images per class. ``limit`` keeps a random subset of
    that many samples, drawn reproducibly with ``seed``.
    """

    path: str
    labels: str | None = None
    x_key: str = "x"
    y_key: str = "y"
    images: ImageOptions = ImageOptions()
    limit: int | None = None
    seed: int = 0

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def kind(self) -> str:
        p = Path(self.path)
        if p.is_dir():
            return "images"
        if p.suffix.lower() == ".npy" or self.labels is not None:
            return "npy"
        return "npz"

    def fit(self, input_shape) -> "DataSpec":
        """Fill image options the user left open (size, channels) from the model input."""
        if self.kind != "images":
            return self
        return replace(self, images=self.images.fit(input_shape))


def open_data(spec: DataSpec | str | os.PathLike) -> ArrayDataset:
    """The dataset a spec describes (a bare path means a .npz file or image folder)."""
    if not isinstance(spec, DataSpec):
        spec = DataSpec(os.fspath(spec))
    p = Path(spec.path)
    if not p.exists():
        raise DataError(f"data not found: {p}")
    kind = spec.kind
    if kind == "images":
        if spec.labels is not None:
            raise DataError(f"{p.name}: an image folder takes its labels from its sub-folders; "
                            "drop --labels")
        folder = ImageFolder(p, spec.images)
        ds = ArrayDataset(folder, folder.targets, p.name)
    elif kind == "npy":
        if spec.labels is None:
            raise DataError(f"{p.name}: a .npy file of inputs needs its labels: --labels Y.npy")
        ds = load_npy_pair(p, spec.labels)
    else:
        ds = load_npz(p, spec.x_key, spec.y_key)
    if spec.limit is not None:
        ds = random_subset(ds, spec.limit, spec.seed)
    return ds


def random_subset(ds: ArrayDataset, limit: int, seed: int = 0) -> ArrayDataset:
    """``limit`` samples drawn without replacement with ``seed`` (all if fewer), in file order."""
    if limit < 1:
        raise DataError(f"--limit must be >= 1, got {limit}")
    if limit >= len(ds):
        return ds
    idx = np.random.default_rng(seed).choice(len(ds), size=limit, replace=False)
    return ds.subset(np.sort(idx))

