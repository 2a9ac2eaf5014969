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

    The data, one of:

    - ``x`` ``(N, *input_shape)`` and ``y`` ``(N,)`` integer labels: NumPy arrays, or any
      arrays NumPy can take (torch tensors on any device, CuPy, anything with ``__array__``
      or ``__dlpack__``), or an :class:`~onnxflat.data.ArrayDataset` as ``x`` (no ``y``);
    - ``batches=``: an iterable of ``(x_batch, y_batch)`` pairs of such arrays, e.g. a torch
      ``DataLoader`` (measured in the batches it gives: ``batch_size`` does not apply). A
      DataLoader-like iterable given as ``x`` with no ``y`` is taken as ``batches``.

    ``kappa=False`` skips the filter-wise kappa (its dense part dominates on wide 1000-class
    heads). ``progress`` is called with the number of samples done after each batch.
    ``per_sample=True`` also keeps each sample's terms in ``Result.per_sample`` (indexed by
    the sample's row in x, or its position in ``batches``; memory O(N x measures)).

    Raises:
        ModelError: the file is missing, corrupt, unsafe or of an unsupported opset.
        HeadNotFoundError: the model has no supported head (the node and reason say why).
        DataError: the data does not fit the model (shape, dtype, labels, NaN/Inf, empty).
        NumericalError: the model gives non-finite activations or logits (the batch named).
    """
    options = RunOptions(batch_size=batch_size, device=device, kappa=kappa, threads=threads,
                         route=route)
    prepared = PreparedModel.load(model, options)
    if batches is None and y is None and _iterable_of_batches(x):
        x, batches = None, x
    if batches is not None:
        return prepared.measure(batches=batches, progress=progress, per_sample=per_sample)
    if isinstance(x, ArrayDataset):
        ds = x
    elif x is None or y is None:
        raise DataError("give x and y (or an ArrayDataset), or batches=(x, y) pairs")
    else:
        from .frameworks import to_numpy

        ds = ArrayDataset(to_numpy(x), to_numpy(y))
    return prepared.measure(ds, progress=progress, per_sample=per_sample)


def _iterable_of_batches(x) -> bool:
    """Whether ``x`` is an iterable of batches (a DataLoader) rather than an array."""
    return (x is not None and hasattr(x, "__iter__") and not hasattr(x, "shape")
            and not isinstance(x, (list, tuple, ArrayDataset)))
