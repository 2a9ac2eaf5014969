"""Public pipeline: model file + data -> :class:`Result`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from .data import ArrayDataset
from .errors import DataError
from .measures import Result
from .prepared import DEFAULT_BATCH_SIZE, PreparedModel, RunOptions

if TYPE_CHECKING:
    import onnx


def measure(model: str | os.PathLike | onnx.ModelProto, x=None, y=None, *,
            batches: Iterable[tuple[np.ndarray, np.ndarray]] | None = None,
            batch_size: int = DEFAULT_BATCH_SIZE, kappa: bool = True, device: str = "auto",
            route: str | None = None, threads: int | None = None,
            progress: Callable[[int], None] | None = None, per_sample: bool = False) -> Result:
    """Exact trace and relative flatness of a model's head on labelled data.

    ``model``: an ONNX file, or a ``ModelProto`` in memory (trusted: not checked as files are).

    Give either arrays ``x`` ``(N, *input_shape)`` and ``y`` ``(N,)`` (int labels), an
    :class:`~onnxflat.data.ArrayDataset` as ``x``, or ``batches``, an iterable of
    ``(x_batch, y_batch)``. ``kappa=False`` skips the filter-wise kappa (its dense part
    dominates on wide 1000-class heads). ``progress`` is called with the number of samples
    done after each batch. ``per_sample=True`` also keeps each sample's terms in
    ``Result.per_sample`` (indexed by the sample's row in x, or its position in ``batches``;
    memory O(N x measures)).
    """
    options = RunOptions(batch_size=batch_size, device=device, kappa=kappa, threads=threads,
                         route=route)
    prepared = PreparedModel.load(model, options)
    if batches is not None:
        return prepared.measure(batches=batches, progress=progress, per_sample=per_sample)
    if isinstance(x, ArrayDataset):
        ds = x
    elif x is None or y is None:
        raise DataError("give x and y (or an ArrayDataset), or batches")
    else:
        ds = ArrayDataset(x if hasattr(x, "shape") else np.asarray(x), y)
    return prepared.measure(ds, progress=progress, per_sample=per_sample)
