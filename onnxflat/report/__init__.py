"""Presentation: text, JSON, gate verdicts, comparisons and HTML pages of heads and results.

``html`` needs matplotlib and is imported on use: ``from onnxflat.report import html``.
"""

from .text import columns, head_dict, head_summary, result_summary, write_json

__all__ = ["columns", "head_dict", "head_summary", "result_summary", "write_json"]
