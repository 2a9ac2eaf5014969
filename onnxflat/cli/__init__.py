"""Command line. Each command lives in its own module and registers itself on ``main``."""

from . import compare, gate, inspect, measure, merge, plot, report  # noqa: F401  (registration)
from .app import main

__all__ = ["main"]
