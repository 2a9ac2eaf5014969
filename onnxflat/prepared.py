"""One model made ready to measure: parsed and analyzed once, its onnxruntime session built on
first use. The API, partial runs, the Dask engine and every CLI command go through it, and
:class:`RunOptions` is the one home of the run's defaults."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from .data import ArrayDataset, DataSpec
from .errors import DataError, NumericalError
from .graph.head import Head
from .measures import FlatnessAccumulator, Options, Result
from .measures.samples import SampleSink
from .measures.stats import chance_floor

if TYPE_CHECKING:
    import onnx

    from .runtime import Extractor

DEFAULT_BATCH_SIZE = 64

log = logging.getLogger(__name__)

Batches = Iterable[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class RunOptions:
    """How a model runs over data: samples per onnxruntime run, execution provider ("auto",
    "cpu", "cuda"), the filter-wise kappa or not, CPU threads for onnxruntime and the math
    (None: all cores this process may use), and a forced patch route of the kappa's dense part
    (None: the cheapest)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "auto"
    kappa: bool = True
    threads: int | None = None
    route: str | None = None

    @property
    def measures(self) -> Options:
        return Options(kappa=self.kappa, route=self.route, threads=self.threads)


class PreparedModel:
    """A model's proto and head, with the onnxruntime session (``extractor``) made on first
    use (``inspect`` never makes one)."""

    def __init__(self, proto: onnx.ModelProto, name: str, options: RunOptions = RunOptions()):
        self.proto = proto
        self.name = name
        self.options = options
        from .graph import analyze_model  # onnx, on first use

        self.head: Head = analyze_model(proto, name)

    @classmethod
    def load(cls, model: str | os.PathLike | onnx.ModelProto,
             options: RunOptions = RunOptions()) -> PreparedModel:
        """From an ONNX file (checked, external data read from its folder only) or a
        ``ModelProto`` in memory (trusted: not checked as files are)."""
        if isinstance(model, str | os.PathLike):
            from .graph import load_model

            return cls(load_model(model), os.fspath(model), options)
        return cls(model, model.graph.name or "<memory>", options)

    @cached_property
    def extractor(self) -> Extractor:
        from .runtime import Extractor

        return Extractor(self.proto, self.head, device=self.options.device,
                         threads=self.options.threads)

    def fit(self, data: DataSpec) -> DataSpec:
        """``data`` with image options left open (channels, size, classes) filled from the
        model."""
        return data.fit(self.head.input_shape, self.head.num_classes)

    def batches(self, ds: ArrayDataset) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``ds`` checked against the model and cut into ``options.batch_size`` batches."""
        ds.check_fits(self.head.input_shape, self.head.num_classes)
        return ((xb, yb) for _, xb, yb in ds.batches(self.options.batch_size))

    def checked(self, batches: Batches) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Caller-made batches, each checked against the model as a data set is."""
        from .frameworks import to_numpy

        for batch in batches:
            if not isinstance(batch, tuple | list) or len(batch) != 2:
                raise DataError(f"each batch must be a pair (x_batch, y_batch), got "
                                f"{type(batch).__name__}")
            xb, yb = batch
            ds = ArrayDataset(to_numpy(xb), to_numpy(yb), "batch")
            ds.check_fits(self.head.input_shape, self.head.num_classes)
            for _, x, y in ds.batches(len(ds)):
                yield x, y

    def accumulate(self, batches: Batches, progress: Callable[[int], None] | None = None,
                   sink: SampleSink | None = None) -> FlatnessAccumulator:
        """Run the model over validated ``batches`` and accumulate the per-sample terms
        (raises DataError when there are no samples); ``sink`` keeps them sample by sample."""
        extractor = self.extractor
        acc = FlatnessAccumulator(self.head, self.options.measures, sink)
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

    def measure(self, data: ArrayDataset | None = None, *, batches: Batches | None = None,
                progress: Callable[[int], None] | None = None,
                per_sample: bool = False) -> Result:
        """The measures on a data set, or on caller-made ``batches``; ``per_sample`` also
        keeps each sample's terms in ``Result.per_sample`` (rows of ``data``, or positions in
        ``batches``)."""
        if batches is None:
            batches, rows = self.batches(data), data.index
        else:
            batches, rows = self.checked(batches), None
        sink = SampleSink() if per_sample else None
        res = self.accumulate(batches, progress, sink).result(
            model=self.name, provider=self.extractor.provider)
        if sink is not None:
            res.per_sample = sink.table(rows)
        warn_if_near_chance(res.accuracy, res.n_samples, self.head.num_classes,
                            os.path.basename(self.name))
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
