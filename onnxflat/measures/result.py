"""Result objects: plain numbers, JSON-ready."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np


@dataclass
class LayerResult:
    """Measures of one conv kernel (means over samples; ``stderr`` of each mean).

    per_filter: each filter's share, ``trace`` (diagonal blocks) and ``kappa`` (rows),
    lists of length C_out that sum to the layer's values. kappa is None when switched off.
    kernel_shape: ``[C_out, C_in / groups, kH, kW]``, which (with the layer's position in
    the head) matches layers of two exports of one network whose node names differ.
    """

    conv: str
    description: str
    trace: float
    kappa: float | None
    kappa_layerwise: float
    stderr: dict = field(default_factory=dict)
    per_filter: dict = field(default_factory=dict)
    kernel_shape: list[int] = field(default_factory=list)


@dataclass
class ClassifierResult:
    """Petzka's trace and relative flatness of the (folded) linear classifier."""

    trace: float
    kappa: float
    stderr: dict = field(default_factory=dict)


@dataclass
class Result:
    """Everything ``onnxflat measure`` reports for one model on one data set.

    per_sample: with ``measure(..., per_sample=True)``, a structured array ``(N,)`` sorted by
    sample index: index, label, loss, correct, ``layer<i>.trace``, ``layer<i>.kappa``,
    ``classifier.trace``, ``classifier.kappa``; each column's mean is the total above.
    Not part of :meth:`to_dict` (write it with ``onnxflat.report.samples.write``).
    """

    model: str
    n_samples: int
    loss: float
    accuracy: float
    layers: list[LayerResult]
    classifier: ClassifierResult
    stderr: dict = field(default_factory=dict)
    provider: str | None = None
    head: str = ""
    per_sample: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = asdict(replace(self, per_sample=None))
        del out["per_sample"]
        return out
