"""Presentation: text summaries and JSON of heads and results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import OnnxflatError
from ..graph.head import AfterPool, Dense, Head, LayerNorm, Pointwise, channel_first, layout_name
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
        "after_pooling": after_pool_dict(head.after),
        "classifier": None if head.after.classifier is None else {
            "op": head.after.classifier,
            "nodes": list(head.after.classifier_layer.nodes),
            "shape": list(head.after.classifier_layer.weight.shape),
            "input": head.after.classifier_layer.input_name},
        "rejected": [{"node": node, "reason": reason} for node, reason in head.rejected],
    }


def after_pool_dict(after: AfterPool) -> dict:
    """The head after the pooling: its ops (value k+1 = op k of earlier values), logits."""
    ops = []
    for op in after.ops:
        if isinstance(op, Dense):
            d = {"op": "dense", "input": op.input, "shape": list(op.weight.shape),
                 "stored": op.stored, "nodes": list(op.nodes)}
        elif isinstance(op, Pointwise):
            d = {"op": "pointwise", "input": op.input, "steps": [
                {"node": s.node, "fn": s.fn} for s in op.steps]}
        elif isinstance(op, LayerNorm):
            d = {"op": "layernorm", "input": op.input, "nodes": list(op.nodes)}
        else:
            d = {"op": "add", "inputs": list(op.inputs), "nodes": [op.node]}
        ops.append(d)
    return {"features": after.features, "ops": ops, "logits": after.logits,
            "softmax": after.softmax, "summary": after.describe()}


def head_summary(head: Head) -> str:
    ranks = sorted({layer.conv.spatial_rank for layer in head.layers})
    axes = ", ".join(f"{r}-D ({layout_name(channel_first(r + 2))[2:]})" for r in ranks)
    lines = [f"model: {head.model_path}",
             f"input: {head.input_name} {_shape(head.input_shape)} {head.input_dtype}",
             f"conv:  {axes}"]
    lines += [f"head:  {line}" for line in head.describe().splitlines()]
    lines += [f"classifier measures: {head.after.describe_classifier()}"]
    lines += [f"not a layer (at node '{node}'): {reason}" for node, reason in head.rejected]
    return "\n".join(lines)


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + "]"


def pm(value: float | None, stderr: float | None, missing: str = "-") -> str:
    """'879.658 ± 56': the value to 6 significant digits, its standard error to 2 (plain
    notation where that is exact: '± 170', not '± 1.7e+02'); ``missing`` for no value."""
    if value is None:
        return missing
    return f"{value:.6g} ± {float(f'{stderr:.2g}'):g}" if stderr is not None else f"{value:.6g}"


def _pm(value: float | None, stderr: float | None) -> str:
    return pm(value, stderr, missing="skipped")


def columns(rows: list[list[str]]) -> str:
    """Rows of cells as left-aligned text columns (the first row is the header)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# What each measure says, for the text output (lower is flatter for all of them).
MEANINGS = {
    "kappa": "relative flatness, filter-wise: curvature weighted by the filters; unchanged "
             "when filters are rescaled (the number to look at)",
    "trace": "Hessian trace: the loss's summed curvature w.r.t. the kernel; changes when "
             "weights are rescaled",
    "kappa_layerwise": "||K||^2 x trace: relative flatness of the layer as a whole",
    "classifier trace": "Hessian trace w.r.t. the classifier's weights",
    "classifier kappa": "relative flatness of the classifier (Petzka's feature-layer measure)",
}

READING = [
    "Lower is flatter for every measure. Look at kappa (summed over the conv layers when the "
    "head has several): it does not change when weights are rescaled; the trace does.",
    "Absolute values depend on the data and the architecture: compare models on the same data. "
    "A ratio kappa(A) / kappa(B) of 1.5 means A is 50% sharper than B; it is beyond noise "
    "when the difference is well above the two standard errors combined "
    "(sqrt(se_A^2 + se_B^2)).",
    "± is the standard error over samples: how much a new sample of this size would move the "
    "value.",
]


def result_summary(res: Result, data_name: str = "") -> str:
    """Readable multi-line summary of a measurement: each measure with its standard error and
    its meaning, then how to read them."""
    lines = [f"model:     {res.model}"]
    lines += [f"head:      {line}" for line in res.head.splitlines()]
    lines += [f"data:      {data_name + ', ' if data_name else ''}{res.n_samples} samples"
              + (f" (onnxruntime {res.provider})" if res.provider else ""),
              f"loss:      {_pm(res.loss, res.stderr.get('loss'))}  (mean cross-entropy)",
              f"accuracy:  {_pm(res.accuracy, res.stderr.get('accuracy'))}"]
    rows = [["measure", "value ± se", "meaning (lower is flatter)"]]
    for layer in res.layers:
        rows.append([f"conv {layer.conv}:", "", ""])
        rows += [[f"  {m}", _pm(getattr(layer, m), layer.stderr.get(m)), MEANINGS[m]]
                 for m in ("kappa", "trace", "kappa_layerwise")]
    if len(res.layers) > 1:
        rows.append(["total over the conv layers:", "", ""])
        for m in ("kappa", "trace"):
            vals = [getattr(layer, m) for layer in res.layers]
            rows.append([f"  {m}", _pm(None if None in vals else sum(vals), None), ""])
    c = res.classifier
    if c is None:
        rows.append(["classifier:", "none", "the head has no classifier layer: no classifier "
                     "measures"])
    elif c.trace is not None or c.kappa is not None:
        rows.append([f"classifier {c.layer}:" if c.layer else "classifier:", "", ""])
        rows += [[f"  {m}", _pm(getattr(c, m), (c.stderr or {}).get(m)),
                  MEANINGS[f"classifier {m}"]] for m in ("kappa", "trace")]
    lines += columns(rows).splitlines()
    lines += READING
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
