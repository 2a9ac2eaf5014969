"""onnxflat: exact Hessian trace and relative flatness of a CNN's conv-GAP-linear head.

>>> import onnxflat
>>> head = onnxflat.analyze("models/digits_cnn.onnx")      # doctest: +SKIP
>>> res = onnxflat.measure("models/digits_cnn.onnx", x, y)  # doctest: +SKIP
"""

__version__ = "0.2.0"  # first: modules imported below read it

from .api import measure
from .errors import DataError, HeadNotFoundError, ModelError, NumericalError, OnnxflatError
from .graph import analyze
from .measures import ClassifierResult, LayerResult, Result

__all__ = ["analyze", "measure", "Result", "LayerResult", "ClassifierResult", "OnnxflatError",
           "ModelError", "HeadNotFoundError", "DataError", "NumericalError", "__version__"]
