"""Presentation: text, JSON, gate verdicts and HTML pages of heads and results."""

from .text import head_dict, head_summary, result_summary, write_json

__all__ = ["head_dict", "head_summary", "result_summary", "write_json"]
