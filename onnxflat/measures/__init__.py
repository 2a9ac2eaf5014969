"""Array math of the measures: per-batch sufficient statistics, mergeable, ONNX-free."""

from .flatness import FlatnessAccumulator, Options
from .result import ClassifierResult, LayerResult, Result
from .stats import Moments

__all__ = ["FlatnessAccumulator", "Options", "Result", "LayerResult", "ClassifierResult",
           "Moments"]
