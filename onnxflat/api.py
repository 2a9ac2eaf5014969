"""Public pipeline: model file + data -> :class:`Result`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable

import numpy as np
import onnx

from .data import ArrayDataset
from .errors import DataError, NumericalError
from .graph import analyze_model, load_model
from .graph.head import Head
from .measures import FlatnessAccumulator, Options, Result
from .measures.samples import SampleSink
from .measures.stats import chance_floor
from .runtime import Extractor

DEFAULT_BATCH_SIZE = 64

log = logging.getLogger(__name__)


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
    if isinstance(model, onnx.ModelProto):
        proto, name = model, model.graph.name or "<memory>"
    else:
        proto, name = load_model(model), os.fspath(model)
    head = analyze_model(proto, name)
    rows = None
    if batches is None and y is None and _iterable_of_batches(x):
        x, batches = None, x
    if batches is None:
        if isinstance(x, ArrayDataset):
            ds = x
        elif x is None or y is None:
            raise DataError("give x and y (or an ArrayDataset), or batches=(x, y) pairs")
        else:
            from .frameworks import to_numpy
            ds = ArrayDataset(to_numpy(x), to_numpy(y))
        ds.check_fits(head.input_shape, head.classifier.num_classes)
        batches = ((xb, yb) for _, xb, yb in ds.batches(batch_size))
        rows = ds.index
    else:
        batches = _checked(batches, head)
    extractor = Extractor(proto, head, device=device, threads=threads)
    sink = SampleSink() if per_sample else None
    acc = accumulate(extractor, batches, Options(kappa=kappa, route=route, threads=threads),
                     progress, sink)
    res = acc.result(model=name, provider=extractor.provider)
    if sink is not None:
        res.per_sample = sink.table(rows)
    warn_if_near_chance(res.accuracy, res.n_samples, head.classifier.num_classes,
                        os.path.basename(name))
    return res


def warn_if_near_chance(accuracy: float, n: int, num_classes: int, model: str = "") -> bool:
    """Log a warning naming ``model`` (and return True) when accuracy is near chance
    (:func:`~onnxflat.measures.stats.chance_floor`): the flatness of a model that does not
    fit the data (wrong preprocessing, layout or labels) says little."""
    if accuracy >= chance_floor(n, num_classes):
        return False
    log.warning("%saccuracy %.3g on %d samples is near chance (1/%d = %.3g): check the data's "
                "preprocessing, layout and labels; the measures say little about such a model",
                f"{model}: " if model else "", accuracy, n, num_classes, 1 / num_classes)
    return True


def accumulate(extractor: Extractor, batches: Iterable[tuple[np.ndarray, np.ndarray]],
               options: Options = Options(),
               progress: Callable[[int], None] | None = None,
               sink: SampleSink | None = None) -> FlatnessAccumulator:
    """Run ``extractor`` over validated ``batches`` and accumulate the per-sample terms
    (raises DataError when there are no samples); ``sink`` keeps them sample by sample."""
    acc = FlatnessAccumulator(extractor.head, options, sink)
    done = 0
    for i, (xb, yb) in enumerate(batches):
        tensors = extractor.run(xb)
        try:
            acc.update(tensors, yb)
        except NumericalError as exc:
            raise NumericalError(f"batch {i} (samples {done}..{done + len(yb) - 1}): "
                                 f"{exc}") from None
        done += len(yb)
        if progress:
            progress(done)
    if done == 0:
        raise DataError("no samples in the data")
    return acc


def _iterable_of_batches(x) -> bool:
    """Whether ``x`` is an iterable of batches (a DataLoader) rather than an array."""
    return (x is not None and hasattr(x, "__iter__") and not hasattr(x, "shape")
            and not isinstance(x, (list, tuple, ArrayDataset)))


def _checked(batches, head: Head):
    from .frameworks import to_numpy

    for batch in batches:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise DataError(f"each batch must be a pair (x_batch, y_batch), got "
                            f"{type(batch).__name__}")
        xb, yb = batch
        ds = ArrayDataset(to_numpy(xb), to_numpy(yb), "batch")
        ds.check_fits(head.input_shape, head.classifier.num_classes)
        for _, x, y in ds.batches(len(ds)):
            yield x, y
