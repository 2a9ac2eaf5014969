"""Graph analysis: ONNX file -> :class:`Head` (never runs the model)."""

from .analyze import analyze, analyze_model
from .head import AfterPool, Conv, Head, Layer, Operand, Pooling, Step
from .model import load_model

__all__ = ["analyze", "analyze_model", "load_model", "Head", "Layer", "Conv", "Step",
           "Operand", "Pooling", "AfterPool"]
