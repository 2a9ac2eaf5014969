"""Result objects: plain numbers, JSON-ready."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LayerResult:
    """Measures of one conv kernel (means over samples; ``stderr`` of each mean).

    per_filter: each filter's share, ``trace`` (diagonal blocks) and ``kappa`` (rows),
    lists of length C_out that sum to the layer's values. kappa is None when switched off.
    """

    conv: str
    description: str
    trace: float
    kappa: float | None
    kappa_layerwise: float
    stderr: dict = field(default_factory=dict)
    per_filter: dict = field(default_factory=dict)


@dataclass
class ClassifierResult:
    """Petzka's trace and relative flatness of the (folded) linear classifier."""

    trace: float
    kappa: float
    stderr: dict = field(default_factory=dict)


@dataclass
class Result:
    """Everything ``onnxflat measure`` reports for one model on one data set."""

    model: str
    n_samples: int
    loss: float
    accuracy: float
    layers: list[LayerResult]
    classifier: ClassifierResult
    stderr: dict = field(default_factory=dict)
    provider: str | None = None
    head: str = ""

    def to_dict(self) -> dict:
        return asdict(self)
