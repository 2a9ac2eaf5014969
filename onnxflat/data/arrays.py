"""In-memory and streamed array data, with the checks every source shares."""

from __future__ import annotations

import logging
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import DataError, first_line
from ..graph.head import channel_first, layout_name
from ..lfs import refuse_pointer
from .npyfile import NpyFile

log = logging.getLogger(__name__)

FLOAT32_EXACT = 2 ** 24
# An uncompressed .npz member of x larger than this is streamed from the file.
STREAM_BYTES = 64 << 20


class ArrayDataset:
    """Samples ``x`` ``(N, ...)`` with integer labels ``y`` ``(N,)``; x may be any array-like
    with shape, dtype and slice / row-array indexing (an :class:`NpyFile`, an image folder).

    ``batches(b)`` yields ``(start, x_batch, y_batch)`` with x cast to float and checked
    (NaN/Inf; integers float32 cannot hold exactly) batch by batch, so memory is bounded by
    the batch, not by N.
    """

    def __init__(self, x, y, name: str = "data", index: np.ndarray | None = None,
                 scale: Fraction | None = None):
        self.name = name
        self.x = x
        self.scale = scale  # inputs are multiplied by this (e.g. 1/255 for 8-bit pixels)
        self.y, self.onehot_width = _labels(y, name)
        # Optional sorted subset of sample indices, read lazily (files stay on disk).
        self.index = None if index is None else np.asarray(index, np.int64)
        if self.x.ndim < 2:
            raise DataError(f"{name}: x must have a sample axis and input axes, got shape "
                            f"{self.x.shape}")
        if len(self.x) != len(self.y):
            raise DataError(f"{name}: x has {len(self.x)} samples but y has {len(self.y)} "
                            "labels")
        if len(self.x) == 0:
            raise DataError(f"{name}: no samples")
        self.x_dtype = _check_x_dtype(self.x, name)

    def __len__(self) -> int:
        return len(self.y) if self.index is None else len(self.index)

    def subset(self, indices) -> ArrayDataset:
        """The samples at ``indices`` (kept in the given order), without copying x."""
        idx = np.asarray(indices, np.int64)
        if self.index is not None:
            idx = self.index[idx]
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self.y)):
            raise DataError(f"{self.name}: subset index out of range")
        sub = ArrayDataset(self.x, self.y, self.name, idx, self.scale)
        sub.onehot_width = self.onehot_width
        return sub

    def check_fits(self, input_shape: tuple, num_classes: int) -> None:
        """Raise DataError unless x fits the model input and labels fit the classes."""
        want = tuple(input_shape[1:])
        got = tuple(self.x.shape[1:])
        fixed = [(i, w) for i, w in enumerate(want) if isinstance(w, int) and w > 0]
        if len(want) != len(got) or any(got[i] != w for i, w in fixed):
            shown = "x".join(str(w) if isinstance(w, int) and w > 0 else "?" for w in want)
            raise DataError(f"{self.name}: samples have shape {got}, the model expects "
                            f"{shown}{_layout_hint(got, want)}")
        if self.onehot_width not in (None, num_classes):
            raise DataError(f"{self.name}: one-hot labels have {self.onehot_width} columns, "
                            f"the model has {num_classes} classes")
        lo, hi = int(self.y.min()), int(self.y.max())  # over all samples, not only a subset
        if lo < 0 or hi >= num_classes:
            bad = int(np.flatnonzero((self.y < 0) | (self.y >= num_classes))[0])
            raise DataError(f"{self.name}: label {int(self.y[bad])} at index {bad} is out of "
                            f"range for a model with {num_classes} classes (0..{num_classes - 1})")

    def batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        if self.x.dtype.kind in "iu" and self.scale is None:
            log.warning("%s: x is %s, used as float32 without scaling (lossless): if the "
                        "model expects inputs in [0, 1], give --scale 1/255 (or scale x "
                        "yourself)", self.name, self.x.dtype)
        for s in range(0, len(self), batch_size):
            if self.index is None:
                rows = np.arange(s, min(s + batch_size, len(self)))
                xb = np.asarray(self.x[s:s + batch_size])
            else:
                rows = self.index[s:s + batch_size]
                xb = np.asarray(self.x[rows])
            if xb.dtype != self.x_dtype:
                _check_exact(xb, rows, self.name)
                xb = xb.astype(self.x_dtype)
            if self.scale is not None:
                xb = (xb * (self.scale.numerator / self.scale.denominator)).astype(self.x_dtype)
            finite = np.isfinite(xb)
            if not finite.all():
                i = int(rows[np.flatnonzero(~finite.reshape(len(xb), -1).all(axis=1))[0]])
                raise DataError(f"{self.name}: sample {i} of x contains NaN or Inf")
            yield s, xb, self.y[rows]


def _check_x_dtype(x, name: str) -> np.dtype:
    """The float dtype batches of x are given in (integers become float32, with a notice)."""
    dt = x.dtype
    if dt.kind == "f":
        return dt
    if dt.kind in "iu":  # lossless up to |x| = 2**24 (a larger value is refused)
        return np.dtype(np.float32)
    raise DataError(f"{name}: x has dtype {dt}; give floating-point (or integer) inputs")


def _check_exact(xb: np.ndarray, rows: np.ndarray, name: str) -> None:
    """Refuse integer values that float32 cannot hold exactly, naming the sample."""
    if xb.dtype.kind not in "iu" or xb.dtype.itemsize <= 2:
        return
    big = ((xb > FLOAT32_EXACT) | (xb < -FLOAT32_EXACT)).reshape(len(xb), -1).any(axis=1)
    if big.any():
        i = int(np.flatnonzero(big)[0])
        row = xb[i].reshape(-1)
        v = int(row[np.abs(row.astype(np.float64)) > FLOAT32_EXACT][0])
        raise DataError(f"{name}: sample {int(rows[i])} of x holds {v}, which float32 cannot "
                        f"hold exactly ({xb.dtype} data is converted to float32); convert it "
                        "yourself")


def _labels(y, name: str) -> tuple[np.ndarray, int | None]:
    """Integer labels ``(N,)`` and, for one-hot ``y`` ``(N, C)``, its width C (else None)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        ok = y.dtype.kind in "biuf" and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()
        if not ok:
            raise DataError(f"{name}: y has shape {y.shape} but is not one-hot (rows of 0/1 "
                            "with a single 1); give integer class labels")
        log.warning("%s: y is one-hot %s; using its argmax as the class labels", name, y.shape)
        return np.argmax(y, axis=1).astype(np.int64), y.shape[1]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{name}: y must be a vector of integer labels, got shape {y.shape}")
    if y.dtype.kind == "b" or y.dtype.kind not in "iu":
        raise DataError(f"{name}: labels have dtype {y.dtype}; give integer class indices "
                        "(e.g. y.astype(int) if they are whole numbers)")
    return y.astype(np.int64), None


# What numpy, zipfile and zlib raise on a corrupt or foreign file.
READ_ERRORS = (OSError, EOFError, KeyError, ValueError, SyntaxError, NotImplementedError,
               tokenize.TokenError, zipfile.BadZipFile, zlib.error)


def _unreadable(p: Path, kind: str, exc: Exception) -> DataError:
    if "pickle" in str(exc).lower():
        return DataError(f"{p.name}: holds pickled Python objects, which onnxflat never "
                         "loads; save plain numeric arrays")
    return DataError(f"{p.name}: not a readable {kind} file ({first_line(exc)})")


def load_npz(path: str | Path, x_key: str = "x", y_key: str = "y") -> ArrayDataset:
    """Read ``x`` and ``y`` from a .npz file (never unpickles). A large uncompressed x
    (``np.savez``) is streamed from the file, not loaded."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file not found: {p}")
    refuse_pointer(p, "data", DataError)
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            missing = [k for k in (x_key, y_key) if k not in keys]
            if missing:
                raise DataError(f"{p.name}: no array named {missing[0]!r} (it has: "
                                f"{', '.join(keys) or 'nothing'}); use --x-key/--y-key")
            y = z[y_key]
            member = f"{x_key}.npy"
            big = member in z.zip.namelist() and z.zip.getinfo(member).file_size > STREAM_BYTES
            x = NpyFile.in_npz(p, member) if big else None
            if x is None:
                x = z[x_key]
    except DataError:
        raise
    except READ_ERRORS as exc:
        raise _unreadable(p, ".npz", exc) from None
    return ArrayDataset(x, y, p.name)


def load_npy_pair(x_path: str | Path, y_path: str | Path) -> ArrayDataset:
    """x and y from two .npy files; x is streamed batch by batch (never loaded whole), so a
    file larger than RAM works."""
    px, py = Path(x_path), Path(y_path)
    for p in (px, py):
        if not p.is_file():
            raise DataError(f"data file not found: {p}")
        refuse_pointer(p, "data", DataError)
    try:
        x = NpyFile(px)
    except READ_ERRORS as exc:
        raise _unreadable(px, ".npy", exc) from None
    try:
        y = np.load(py, allow_pickle=False)
    except READ_ERRORS as exc:
        raise _unreadable(py, ".npy", exc) from None
    if not isinstance(y, np.ndarray):
        y.close()
        raise DataError(f"{py.name}: is a .npz archive, not a .npy file of labels")
    return ArrayDataset(x, y, px.name)


def _layout_hint(got: tuple, want: tuple) -> str:
    """Why samples of shape ``got`` may not fit a model input ``want`` (both without the batch
    axis): the channel axis at the other end, or missing, or the wrong number of axes."""
    def fits(shape):
        return len(shape) == len(want) and all(
            not isinstance(w, int) or w <= 0 or s == w for s, w in zip(shape, want))

    r = len(want) - 1  # spatial axes, channel first or last
    if r == 1 and fits(got[::-1]) and got != got[::-1]:
        return " (the channel and length axes look swapped: use x.transpose(0, 2, 1))"
    first, last = channel_first(len(want) + 1), (0,) + tuple(range(2, len(want) + 1)) + (1,)
    if r >= 1 and fits(got[-1:] + got[:-1]) and got != got[-1:] + got[:-1]:
        perm = ", ".join(map(str, (0, len(got)) + tuple(range(1, len(got)))))
        return (f" (looks like {layout_name(last)} data for an {layout_name(first)} model: use "
                f"x.transpose({perm}))")
    if r >= 1 and fits(got[1:] + got[:1]) and got != got[1:] + got[:1]:
        perm = ", ".join(map(str, (0,) + tuple(range(2, len(got) + 1)) + (1,)))
        return (f" (looks like {layout_name(first)} data for an {layout_name(last)} model: use "
                f"x.transpose({perm}))")
    if len(got) + 1 == len(want) and (fits((1,) + got) or fits(got + (1,))):
        where = "x[:, None]" if fits((1,) + got) else "x[..., None]"
        return f" (no channel axis: add it with {where})"
    if len(got) != len(want):
        kind = {2: "sequences", 3: "images", 4: "clips or volumes"}.get(len(want), "inputs")
        return (f" ({len(want) - 1} spatial axes: the model takes {kind} with "
                f"{len(want)} axes per sample, the data has {len(got)})")
    return ""
