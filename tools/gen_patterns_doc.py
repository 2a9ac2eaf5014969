"""Write docs/patterns.md: the analyzer's rule tables and what it reads in every tested export.

The rule tables come from ``onnxflat.graph.patterns``; the case tables run the analyzer on
the test suite's own exports (tests/heads.py, tests/test_refusals.py, tests/architectures.py)
and committed fixtures (tests/fixtures/*/*.onnx), so the doc cannot drift from the code:
tests/test_patterns_doc.py fails when the committed file differs from ``render()``.

Usage: PYTHONPATH=. python tools/gen_patterns_doc.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "patterns.md"


def _table(header: tuple[str, ...], rows) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out + [""]


def _kind(conv) -> str:
    """``Conv3d 3x3x3`` (the spatial rank and kernel) or ``MatMul`` (a pointwise layer)."""
    if conv.op != "Conv":
        return conv.op
    return f"Conv{conv.spatial_rank}d {'x'.join(map(str, conv.kernel_size))}"


def _reading(proto) -> tuple[str, str, str, str]:
    """(layers, pooling, classifier, refusal) as the analyzer reads ``proto``."""
    from onnxflat.errors import HeadNotFoundError
    from onnxflat.graph import analyze_model
    try:
        head = analyze_model(proto)
    except HeadNotFoundError as exc:
        return "", "", "", f"`{exc.node}`: {exc.reason}" if exc.node else exc.reason
    layers = "<br>".join(
        f"{_kind(layer.conv)} {layer.conv.out_channels}ch"
        f"{f' @{layer.channel_offset}' if layer.channel_offset else ''}"
        f": {' → '.join(s.fn for s in layer.steps) or 'identity'}" for layer in head.layers)
    after = head.after
    clf = " → ".join(_op_text(op) for op in after.ops) or "none"
    if after.classifier is not None and len(after.ops) > 1:
        clf += f" (classifier: op {after.classifier + 1})"
    if after.softmax:
        clf += " + softmax"
    return layers, head.pooling.op, clf, ""


def _op_text(op) -> str:
    from onnxflat.graph.head import Dense, LayerNorm, Pointwise
    if isinstance(op, Dense):
        if op.weight.ndim == 1:
            return "scale+shift"
        n = len(op.nodes)
        return f"{op.weight.shape[1]}→{op.weight.shape[0]} ({n} node{'s' if n != 1 else ''})"
    if isinstance(op, Pointwise):
        return op.describe()
    if isinstance(op, LayerNorm):
        return "layernorm"
    return "add"


def _rules() -> list[str]:
    from onnxflat.graph import patterns as p
    out = ["## Head layers (the weights the measures differentiate)", ""]
    out += _table(("ONNX op", "condition"), p.LAYER_NOTES.items())
    out += ["## Channel-wise operations (conv output → pooling input)", ""]
    rows = [(op, f"`{fn}`", p.CHANNELWISE_NOTES.get(op, p.CHANNELWISE_NOTES["unary"]))
            for op, fn in p.UNARY.items()]
    rows += [(op, f"`{fn}` ({', '.join(f'{k}={v}' for k, v in d.items())})",
              p.CHANNELWISE_NOTES["unary"]) for op, (fn, d) in p.UNARY_WITH_ATTRS.items()]
    rows += [(op, f"`{fn}`", p.CHANNELWISE_NOTES.get(op, p.CHANNELWISE_NOTES["binary"]))
             for op, fn in p.BINARY.items()]
    rows += [(op, "", note) for op, note in p.CHANNELWISE_NOTES.items()
             if op not in ("unary", "binary") and op not in p.UNARY and op not in p.BINARY]
    out += _table(("ONNX op", "math (`onnxflat.measures.jets`)", "condition"), rows)
    out += ["## Global average pooling", ""]
    out += _table(("ONNX op", "condition"), p.POOLING_NOTES.items())
    out += ["## After the pooling (pooled features → logits: any chain or DAG of these)", ""]
    out += _table(("ONNX op", "condition"), p.AFTER_POOL_NOTES.items())
    out += ["## Refused on the conv → pooling path", ""]
    out += _table(("ONNX op", "why"), sorted(p.SPATIAL_OPS.items()))
    out += ["After the pooling, any other op is refused, naming the node: a MaxPool or max "
            "pooling concatenated to the average (avg+max concat pooling), attention "
            "(MatMul of two feature-dependent tensors, Softmax inside the head), a product of "
            "two branches.", ""]
    return out + _weights()


def _weights() -> list[str]:
    import importlib
    a = importlib.import_module("onnxflat.graph.analyze")  # the module, not the function
    from onnxflat.graph import model as m
    return [
        "## Weights, precision and quantization", "",
        "Weights computed in the graph are folded before matching (onnx's reference evaluator "
        "on the weight-producing subgraph, at most "
        f"{m.MAX_FOLD_ELEMENTS:,} elements per tensor): outputs of "
        + ", ".join(sorted(m.FOLDABLE)) + " whose inputs are all constants. The measures "
        "refer to the float kernel the graph computes with: an integer kernel behind "
        "DequantizeLinear (per tensor or per axis) is dequantized, a float16/bfloat16 one "
        "widened; `inspect` and `measure` say so beside the layer (`measured kernel: ...`).", "",
        "A conv whose activations are float16 (e.g. onnxconverter-common's "
        "`convert_float_to_float16(keep_io_types=True)`, whose float32 output follows a Cast) "
        "is measured from those activations; the output notes it, and the measures agree "
        f"with the float32 model's within {a.FLOAT16_TOLERANCE:g} relative (tested on the "
        "sample model). bfloat16 activations are noted without a tested tolerance "
        "(onnxruntime's CPU build has no bfloat16 Conv: such a model is refused when it "
        "runs).", "",
        "Quantized activations on the head's path (" + ", ".join(a.QUANTIZED_OPS) + " on a "
        "non-constant tensor: QDQ pairs, onnxruntime's `quantize_dynamic` and "
        "`quantize_static`) are refused, naming the op, with the advice to measure the float "
        "model before quantization: a quantized activation is piecewise constant, so its "
        "derivatives in the kernel vanish almost everywhere and no convention would make "
        "the Hessian of the quantized model meaningful.", ""]


def _cases() -> list[str]:
    sys.path.insert(0, str(ROOT))
    import onnx
    import torch

    from tests import afterpool_heads, architectures, heads, test_refusals, zoo
    from tests.zoo import export

    out = ["## Tested torch exports (tests/heads.py; measure vs autograd in tests/test_heads.py)",
           ""]
    rows = []
    for v in heads.VARIANTS:
        exporter = "dynamo" if v.dynamo else "TorchScript"
        reading = _reading(heads.exported_variant(v)[1])
        rows.append((v.name, exporter, v.opset or "default", *reading[:3]))
    for c in zoo.CASES:  # pointwise MatMul layers (measured in tests/test_autograd.py)
        if "pointwise" in c.name:
            proto = export(c.build().eval(), torch.randn(2, 3, c.input_hw, c.input_hw),
                           dynamo=c.dynamo)
            rows.append((c.name, "dynamo" if c.dynamo else "TorchScript", "default",
                         *_reading(proto)[:3]))
    out += _table(("case", "exporter", "opset", "layers: steps", "pooling", "classifier"), rows)
    out += ["## Heads after the pooling (tests/afterpool_heads.py; measure vs autograd in "
            "tests/test_afterpool.py)", ""]
    rows = []
    for c in afterpool_heads.CASES:
        r = _reading(afterpool_heads.exported_case(c)[1])
        rows.append((c.name, "dynamo" if c.dynamo else "TorchScript", c.opset or "default",
                     r[3] or r[2]))
    out += _table(("case", "exporter", "opset", "after the pooling"), rows)
    out += ["## 1-D and 3-D CNNs (tests/zoo.py; measure vs autograd in tests/test_autograd.py)",
            ""]
    rows = []
    for case in zoo.CASES:
        if case.sample is None:
            continue
        rows.append((case.name, "dynamo" if case.dynamo else "TorchScript",
                     "x".join(map(str, case.sample)), *_reading(zoo.exported_case(case)[1])[:3]))
    out += _table(("case", "exporter", "sample (C, spatial)", "layers: steps", "pooling",
                   "classifier"), rows)
    out += ["## Tested refusals (tests/test_refusals.py)", ""]
    rows = [(name, _reading(test_refusals._proto(build()))[3])
            for name, build, _, _ in test_refusals.CASES]
    out += _table(("case", "refusal: node and reason"), rows)
    out += ["## Architectures (tests/architectures.py, `onnxflat inspect` in "
            "tests/test_architectures.py)", ""]
    rows = []
    for a in architectures.ARCHS:
        proto = export(architectures.build(a), torch.randn(2, 3, architectures.HW,
                                                            architectures.HW),
                       keep_bn=True, opset=17)
        r = _reading(proto)
        rows.append((a.name, r[3] or f"{r[0]}; {r[1]}; classifier {r[2]}"))
    out += _table(("architecture", "reading"), rows)
    out += ["## ONNX model zoo graphs (the `light_*` models of the onnx wheel, "
            "tests/test_real_world.py)", ""]
    light = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    rows = []
    for f in sorted(light.glob("light_*.onnx")):
        r = _reading(onnx.load(f))
        rows.append((f.stem, r[3] or f"{r[0]}; {r[1]}; classifier {r[2]}"))
    out += _table(("graph", "reading"), rows)
    fixtures = sorted((ROOT / "tests" / "fixtures").glob("*/*.onnx"))
    if fixtures:
        out += ["## Committed exporter fixtures (tests/fixtures)", ""]
        rows = []
        for f in fixtures:
            r = _reading(onnx.load(f))
            rows.append((f"{f.parent.name}/{f.stem}", r[3] or f"{r[0]}; {r[1]}; "
                                                            f"classifier {r[2]}"))
        out += _table(("fixture", "reading"), rows)
    return out


def render() -> str:
    lines = ["# Supported head patterns", "",
             "Generated by `tools/gen_patterns_doc.py` from the analyzer's rule tables "
             "(`onnxflat/graph/patterns.py`) and the tests' own exports; do not edit by hand. "
             "A head is: one or more Conv (1, 2 or 3 spatial axes: sequences, images, clips "
             "and volumes; `Conv3d 3x3x3` below) or pointwise MatMul nodes → channel-wise "
             "operations → global average pooling over all spatial axes → any differentiable "
             "map of the pooled features built from the ops below (an affine classifier, an "
             "MLP, LayerNorm, conv_head; or none) → optional Softmax. The classifier measures "
             "refer to the last stored weight (Gemm, MatMul or 1x1 Conv) followed only by affine "
             "ops. Several convs reaching "
             "the pooling channel-wise (Inception concat, DenseNet, residual projection) are "
             "each reported as a layer; `ch @k` means the conv's channels start at pooled "
             "feature k.", ""]
    return "\n".join(lines + _rules() + _cases()).rstrip() + "\n"


def main() -> int:
    import logging
    import warnings
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    text = render()
    if "--check" in sys.argv:
        same = DOC.exists() and DOC.read_text() == text
        print("docs/patterns.md is up to date" if same else "docs/patterns.md is stale")
        return 0 if same else 1
    DOC.write_text(text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
