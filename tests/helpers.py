"""Small helpers shared by the tests."""

from __future__ import annotations


def rel(a: float, b: float) -> float:
    """Relative difference of ``a`` from the reference ``b`` (absolute below 1e-12)."""
    return abs(a - b) / max(abs(b), 1e-12)
