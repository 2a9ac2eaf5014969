"""Graph analysis: ONNX file -> :class:`Head` (never runs the model).

The head types import only NumPy; ``analyze``, ``analyze_model`` and ``load_model`` import
onnx on first use, so the math (which reads head types) never loads it.
"""

from importlib import import_module

from .head import AfterPool, Conv, Head, Layer, Operand, Pooling, Step

# Lazily imported names -> their submodule.
_LAZY = {"analyze": "analyze", "analyze_model": "analyze", "load_model": "model"}

__all__ = ["analyze", "analyze_model", "load_model", "Head", "Layer", "Conv", "Step",
           "Operand", "Pooling", "AfterPool"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = import_module(f"{__name__}.{_LAZY[name]}")
    # Importing the submodule ``analyze`` set this package's ``analyze`` to the module: bind
    # the functions over it.
    for key, sub in _LAZY.items():
        if sub == _LAZY[name]:
            globals()[key] = getattr(module, key)
    return globals()[name]
