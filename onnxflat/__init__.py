"""onnxflat: exact Hessian trace and relative flatness of a CNN's conv-GAP-linear head.

>>> import onnxflat
>>> head = onnxflat.analyze("models/digits_cnn.onnx")      # doctest: +SKIP
>>> res = onnxflat.measure("models/digits_cnn.onnx", x, y)  # doctest: +SKIP

``analyze`` and ``measure`` import onnx and onnxruntime on first use: importing the package
(the math, the command line's --help) stays light.
"""

__version__ = "0.2.0"

from .errors import DataError, HeadNotFoundError, ModelError, NumericalError, OnnxflatError
from .measures import ClassifierResult, LayerResult, Result

__all__ = ["analyze", "measure", "Result", "LayerResult", "ClassifierResult", "OnnxflatError",
           "ModelError", "HeadNotFoundError", "DataError", "NumericalError", "__version__"]


def __getattr__(name: str):
    if name == "analyze":
        from .graph import analyze

        return analyze
    if name == "measure":
        from .api import measure

        return measure
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
