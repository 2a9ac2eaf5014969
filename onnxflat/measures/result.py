"""Result objects: plain numbers, JSON-ready, with short reprs and a DataFrame view."""

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

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.kernel_shape))
        return (f"LayerResult({self.conv!r}, {shape}, "
                f"kappa={_pm(self.kappa, self.stderr, 'kappa')}, "
                f"trace={_pm(self.trace, self.stderr, 'trace')})")


@dataclass
class ClassifierResult:
    """Petzka's trace and relative flatness of the classifier: w.r.t. the weight stored in
    the file for the last affine layer (``layer``: its nodes, shape and input tensor), with
    that layer's own input as the features."""

    trace: float
    kappa: float
    stderr: dict = field(default_factory=dict)
    layer: str = ""

    def __repr__(self) -> str:
        return (f"ClassifierResult(kappa={_pm(self.kappa, self.stderr, 'kappa')}, "
                f"trace={_pm(self.trace, self.stderr, 'trace')})")


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
    classifier: ClassifierResult | None  # None: the head has no classifier layer
    stderr: dict = field(default_factory=dict)
    provider: str | None = None
    head: str = ""
    per_sample: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = asdict(replace(self, per_sample=None))
        del out["per_sample"]
        return out

    def __repr__(self) -> str:
        return (f"Result(model={self.model!r}, n_samples={self.n_samples}, "
                f"loss={_pm(self.loss, self.stderr, 'loss')}, "
                f"accuracy={_pm(self.accuracy, self.stderr, 'accuracy')}, "
                f"layers={self.layers!r}, classifier={self.classifier!r})")

    def to_frame(self):
        """A pandas DataFrame, one row per conv layer and one for the classifier: ``model``,
        ``subject`` (conv node or 'classifier'), ``kernel_shape``, each measure and its
        ``<measure>_stderr``, and the run's ``n_samples``, ``loss``, ``accuracy`` (repeated,
        so frames of several models concatenate). Lower measures are flatter.

        Raises ImportError (saying how to install it) without pandas
        (``pip install "onnxflat[frame]"``).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError('Result.to_frame needs pandas: pip install "onnxflat[frame]"') \
                from None
        rows = [{"subject": layer.conv, "kernel_shape": tuple(layer.kernel_shape),
                 **_measures(layer, ("kappa", "trace", "kappa_layerwise"))}
                for layer in self.layers]
        if self.classifier is not None:
            rows.append({"subject": "classifier", "kernel_shape": None,
                         **_measures(self.classifier, ("kappa", "trace"))})
        run = {"n_samples": self.n_samples, "loss": self.loss,
               "loss_stderr": self.stderr.get("loss"), "accuracy": self.accuracy,
               "accuracy_stderr": self.stderr.get("accuracy")}
        return pd.DataFrame([{"model": self.model, **row, **run} for row in rows])


def _measures(obj, names: tuple[str, ...]) -> dict:
    out = {}
    for m in names:
        out[m] = getattr(obj, m)
        out[f"{m}_stderr"] = (obj.stderr or {}).get(m)
    return out


def _pm(value, stderr: dict | None, key: str) -> str:
    """'879.7 ± 56' for a repr (4 significant digits, the error to 2)."""
    if value is None:
        return "None"
    err = (stderr or {}).get(key)
    return f"{value:.4g}" if err is None else f"{value:.4g} ± {err:.2g}"
