"""A head's structure as plain data: what the measures compute on, with no presentation text.

Partial result files name their head by :func:`digest`, so a change of wording in
``describe()`` never stops old partials from merging, while any change of structure or
weights does.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from ..fingerprint import json_sha256
from .head import Head

# Head fields that do not change the numbers: where the file was, and diagnostics.
NOT_STRUCTURE = ("model_path", "rejected")


def structure(head: Head) -> dict:
    """Every field of the head's typed description (layers, steps with their operands and
    parameters, pooling, what follows it) but ``NOT_STRUCTURE``, as JSON-ready data; an
    array becomes its shape, dtype and the sha256 of its bytes."""
    return {f.name: _plain(getattr(head, f.name)) for f in dataclasses.fields(head)
            if f.name not in NOT_STRUCTURE}


def digest(head: Head) -> str:
    """sha256 of :func:`structure`: same structure and weights, same digest."""
    return json_sha256(structure(head))


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {"type": type(value).__name__,
                **{f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        return {"shape": list(a.shape), "dtype": a.dtype.str,
                "sha256": hashlib.sha256(a.tobytes()).hexdigest()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
