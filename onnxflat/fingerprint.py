"""Content fingerprints (sha256) of model files and data, for checking that partial results
and a gate's baseline were computed on the same inputs."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from .errors import OnnxflatError

CHUNK = 1 << 20
# Files larger than this are fingerprinted from their size and SAMPLES evenly spaced 1 MiB
# blocks (each shard of a huge data set must not read all of it just to name it).
FULL_HASH_LIMIT = 1 << 30
SAMPLES = 256


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (sampled blocks plus size above ``FULL_HASH_LIMIT``)."""
    p = Path(path)
    h = hashlib.sha256()
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            if size <= FULL_HASH_LIMIT:
                for block in iter(lambda: f.read(CHUNK), b""):
                    h.update(block)
            else:
                h.update(f"sampled:{size}:{SAMPLES}".encode())
                for k in range(SAMPLES):
                    f.seek((size - CHUNK) * k // (SAMPLES - 1))
                    h.update(f.read(CHUNK))
    except OSError as exc:
        raise OnnxflatError(f"cannot read {p}: {exc.strerror}") from None
    return h.hexdigest()


def json_sha256(obj) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def array_sha256(x) -> str:
    """sha256 of an array-like's dtype, shape and values (``x[i:j]`` row blocks of about 1
    MiB; above ``FULL_HASH_LIMIT`` bytes, ``SAMPLES`` evenly spaced blocks), independent of
    the file it was read from (a .npz member and a .npy file of one array agree)."""
    dtype = np.dtype(x.dtype).newbyteorder("<")
    shape = tuple(int(d) for d in x.shape)
    h = hashlib.sha256(json.dumps([dtype.str, shape]).encode())
    n = shape[0] if shape else 1
    row_bytes = max(math.prod(shape[1:]) * dtype.itemsize, 1)
    rows = max(1, CHUNK // row_bytes)
    if n * row_bytes <= FULL_HASH_LIMIT:
        starts = range(0, n, rows)
    else:
        starts = sorted({(n - rows) * k // (SAMPLES - 1) for k in range(SAMPLES)})
    for s in starts:
        h.update(np.ascontiguousarray(np.asarray(x[s:s + rows]), dtype).tobytes())
    return h.hexdigest()
