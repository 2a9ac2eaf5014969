"""Row-block reads of a .npy array (a file, or an uncompressed member of a .npz).

A memory map keeps every page it has touched resident, so streaming a file larger than RAM
through one still grows the process to the file's size. Plain reads into a fresh buffer per
batch keep resident memory at one batch.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
_ZIP_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length


class NpyFile:
    """The array stored at ``offset`` of ``path`` (a .npy header and C-ordered data).

    Has ``shape``, ``dtype``, ``ndim``, ``size`` and ``len``; ``a[i:j]`` and ``a[rows]``
    (an integer array; consecutive rows are read together) return new ndarrays. Raises
    ValueError for a header numpy cannot read, DataError for object, Fortran-ordered or
    truncated data.
    """

    def __init__(self, path: str | os.PathLike, offset: int = 0):
        self.path = os.fspath(path)
        name = Path(self.path).name
        with open(self.path, "rb") as f:
            f.seek(offset)
            version = np.lib.format.read_magic(f)
            if version not in _HEADER_READERS:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, dtype = _HEADER_READERS[version](f)
            self.data_offset = f.tell()
            size = os.fstat(f.fileno()).st_size
        if dtype.hasobject:
            raise ValueError("object arrays cannot be loaded when allow_pickle=False")
        if fortran and len(shape) > 1:
            raise DataError(f"{name}: x is stored in Fortran order; save "
                            "np.ascontiguousarray(x) instead")
        self.shape, self.dtype = tuple(shape), dtype
        self.row_bytes = math.prod(shape[1:]) * dtype.itemsize
        if self.data_offset + self.size * dtype.itemsize > size:
            raise DataError(f"{name}: holds less data than its header's shape {self.shape} "
                            f"and dtype {dtype} need (truncated file?)")

    @classmethod
    def in_npz(cls, path: str | os.PathLike, member: str) -> NpyFile | None:
        """The uncompressed ``member`` (e.g. ``'x.npy'``) of a .npz, or None if compressed."""
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(member)
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1:
                return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            sig, n_name, n_extra = _ZIP_LOCAL_HEADER.unpack(f.read(_ZIP_LOCAL_HEADER.size))
        if sig != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"bad local header of {member}")
        return cls(path, info.header_offset + _ZIP_LOCAL_HEADER.size + n_name + n_extra)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                out = np.empty((max(stop - start, 0),) + self.shape[1:], self.dtype)
                with open(self.path, "rb") as f:
                    self._read(f, start, out)
                return out
            key = np.arange(start, stop, step)
        rows = np.asarray(key, np.int64).reshape(-1)
        if len(rows) and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        rows = rows % max(len(self), 1)
        out = np.empty((len(rows),) + self.shape[1:], self.dtype)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        with open(self.path, "rb") as f:
            for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(rows)]):
                self._read(f, int(rows[lo]), out[lo:hi])
        return out

    def _read(self, f, row: int, out: np.ndarray) -> None:
        f.seek(self.data_offset + row * self.row_bytes)
        view = memoryview(out.reshape(-1).view(np.uint8))
        if f.readinto(view) != len(view):
            raise DataError(f"{Path(self.path).name}: the file ended early (truncated?)")
