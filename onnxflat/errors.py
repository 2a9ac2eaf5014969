"""User-facing errors. The CLI maps every :class:`OnnxflatError` to exit code 2 and one line."""

from __future__ import annotations


class OnnxflatError(Exception):
    """Base of all errors caused by the user's input (model, data, options)."""


class ModelError(OnnxflatError):
    """The model file cannot be read, is invalid, or is unsafe to load."""


class HeadNotFoundError(OnnxflatError):
    """The model has no conv -> channel-wise -> global-average-pool -> linear head.

    ``node`` names the ONNX node where matching stopped and ``reason`` says why.
    """

    def __init__(self, node: str | None, reason: str):
        self.node = node
        self.reason = reason
        where = f"node '{node}': " if node else ""
        super().__init__(f"no supported head: {where}{reason}")

    def __reduce__(self):  # picklable, so it can come back from a cluster worker
        return type(self), (self.node, self.reason)


class DataError(OnnxflatError):
    """The data does not fit the model (shape, dtype, labels, non-finite values, empty)."""


class NumericalError(OnnxflatError):
    """The model produced non-finite values on the data."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first informative line of a (possibly long, multi-line) library error message.

    A first line that ends with ':' is joined with the next one; the result is cut at
    ``limit`` characters. Falls back to the exception's type name.
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    return text if len(text) <= limit else text[:limit - 3] + "..."
