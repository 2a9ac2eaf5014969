"""Presentation: text summaries and JSON of heads and results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import OnnxflatError
from ..graph.head import Head, channel_first, layout_name
from ..measures import Result


def head_dict(head: Head) -> dict:
    """JSON-ready description of a head (no weights)."""
    return {
        "model": head.model_path,
        "input": {"name": head.input_name, "shape": list(head.input_shape),
                  "dtype": head.input_dtype},
        "layers": [{
            "conv": layer.conv.node,
            "op": layer.conv.op, "spatial_rank": layer.conv.spatial_rank,
            "conv_layout": layout_name(layer.conv.layout),
            "kernel_shape": list(layer.conv.kernel.shape),
            "strides": list(layer.conv.strides), "pads": list(layer.conv.pads),
            "dilations": list(layer.conv.dilations), "groups": layer.conv.groups,
            "steps": [{"node": s.node, "fn": s.fn} for s in layer.steps],
            "layout": layout_name(layer.layout),
            "channel_offset": layer.channel_offset,
            "summary": layer.describe(),
        } for layer in head.layers],
        "pooling": {"node": head.pooling.node, "op": head.pooling.op},
        "classifier": {"nodes": list(head.classifier.nodes),
                       "shape": list(head.classifier.weight.shape),
                       "softmax": head.classifier.softmax,
                       "logits": head.classifier.logits},
        "rejected": [{"node": node, "reason": reason} for node, reason in head.rejected],
    }


def head_summary(head: Head) -> str:
    ranks = sorted({layer.conv.spatial_rank for layer in head.layers})
    axes = ", ".join(f"{r}-D ({layout_name(channel_first(r + 2))[2:]})" for r in ranks)
    lines = [f"model: {head.model_path}",
             f"input: {head.input_name} {_shape(head.input_shape)} {head.input_dtype}",
             f"conv:  {axes}"]
    lines += [f"head:  {line}" for line in head.describe().splitlines()]
    lines += [f"not a layer (at node '{node}'): {reason}" for node, reason in head.rejected]
    return "\n".join(lines)


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def _pm(value: float | None, err: float | None) -> str:
    if value is None:
        return "skipped"
    return f"{value:.6g} ± {err:.2g}" if err is not None else f"{value:.6g}"


def columns(rows: list[list[str]]) -> str:
    """Rows of cells as left-aligned text columns (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def result_summary(res: Result, data_name: str = "") -> str:
    """Readable multi-line summary of a measurement."""
    lines = [f"model:     {res.model}"]
    lines += [f"head:      {line}" for line in res.head.splitlines()]
    lines += [f"data:      {data_name + ', ' if data_name else ''}{res.n_samples} samples"
              + (f" (onnxruntime {res.provider})" if res.provider else ""),
              f"loss:      {_pm(res.loss, res.stderr.get('loss'))}",
              f"accuracy:  {_pm(res.accuracy, res.stderr.get('accuracy'))}"]
    for layer in res.layers:
        lines += [f"conv {layer.conv}:",
                  f"  trace            {_pm(layer.trace, layer.stderr.get('trace'))}",
                  f"  kappa            {_pm(layer.kappa, layer.stderr.get('kappa'))}",
                  f"  kappa_layerwise  {_pm(layer.kappa_layerwise, layer.stderr.get('kappa_layerwise'))}"]
    c = res.classifier
    lines += ["classifier:",
              f"  trace            {_pm(c.trace, c.stderr.get('trace'))}",
              f"  kappa            {_pm(c.kappa, c.stderr.get('kappa'))}",
              "(± is the standard error over samples: how much a new sample of this size "
              "would move the value)"]
    return "\n".join(lines)


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(obj: dict, path: str | Path) -> None:
    try:
        Path(path).write_text(json.dumps(_plain(obj), indent=2) + "\n")
    except OSError as exc:
        raise OnnxflatError(f"cannot write {path}: {exc.strerror}") from None
