"""What the framework entry points (:mod:`onnxflat.torch`, :mod:`onnxflat.keras`) share:
framework tensors as NumPy, data given as arrays or as batches, measuring an export, and the
fixed subset a tracker measures on. Imports no framework."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import onnx

from . import api
from .errors import DataError
from .measures import Result


def to_numpy(a) -> np.ndarray:
    """A torch tensor (any device, with or without grad), a TensorFlow tensor, a CuPy array,
    any array with ``__dlpack__`` (on the CPU) or ``__array__``, or a nested sequence as a
    NumPy array."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "detach"):  # torch
        a = a.detach().cpu()
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    if hasattr(a, "numpy"):
        return np.asarray(a.numpy())
    if hasattr(a, "__dlpack__") and not hasattr(a, "__array__"):
        return np.from_dlpack(a)
    return np.asarray(a)


def split(data, y) -> tuple[object, Iterable | None]:
    """``(first inputs, batches)``: for arrays ``data`` with labels ``y``, ``data[:2]`` and
    None; for an iterable of ``(x, y)`` batches (a DataLoader, a tf.data.Dataset), its first
    batch's inputs and all batches as NumPy pairs (the first one not read twice)."""
    if y is not None:
        return data[:2], None
    it = iter(data)
    try:
        first = next(it)
    except StopIteration:
        raise DataError("the data yields no batches") from None

    def pair(batch):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise DataError("each batch must be (inputs, labels), got "
                            f"{type(batch).__name__}")
        return to_numpy(batch[0]), to_numpy(batch[1])

    return first[0] if isinstance(first, (tuple, list)) else first, (
        pair(b) for b in itertools.chain([first], it))


def measure_export(proto: onnx.ModelProto, data, y, batches: Iterable | None, name: str, *,
                   batch_size: int = api.DEFAULT_BATCH_SIZE, **options) -> Result:
    """``api.measure`` of an exported model on ``data``/``y`` or ``batches`` (see
    :func:`split`), with ``Result.model = name`` (the graph is named so: warnings name it)."""
    proto.graph.name = name
    if batches is None:
        return api.measure(proto, to_numpy(data), to_numpy(y), batch_size=batch_size, **options)
    return api.measure(proto, batches=batches, **options)


def subset_arrays(data, y=None, size: int | None = 1024, seed: int = 0):
    """``(x, y)`` NumPy arrays of a fixed, seeded subset (:func:`~onnxflat.track.fixed_subset`)
    of arrays ``data`` with labels ``y``, or of a map-style dataset of ``(x, y)`` items (a
    torch ``Dataset``, or a ``DataLoader``'s, read in a fixed order whatever its shuffling).
    The dataset should apply no random augmentation, or the subset changes between calls."""
    from .track import fixed_subset

    if y is not None:
        x, y = to_numpy(data), to_numpy(y)
        idx = fixed_subset(len(y), size, seed)
        return x[idx], y[idx]
    ds = getattr(data, "dataset", data)
    if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__"):
        raise DataError("track on arrays (x, y), a map-style dataset or a DataLoader over one")
    items = [ds[int(i)] for i in fixed_subset(len(ds), size, seed)]
    return (np.stack([to_numpy(it[0]) for it in items]),
            np.asarray([int(to_numpy(it[1])) for it in items]))
