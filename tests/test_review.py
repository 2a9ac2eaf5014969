"""Re-views after the pooling with indices computed from shapes (the dynamo exporter's
``as_strided``: Reshape to 1-D, Gather of indices built from the batch size by Shape, Range
and arithmetic): accepted only when proven to hand on each sample's features in order, for
1-D, 2-D and 3-D poolings, channel first or last; reordered, repeated or mixed indices are
refused naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxflat
from onnxflat.errors import HeadNotFoundError
from onnxflat.graph import analyze_model
from onnxflat.graph.head import Dense

from .helpers import rel

C, K, S = 6, 4, 4  # channels, classes, spatial size


def _const(name, value, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _model(d: int, nhwc: bool, spelling: str | None) -> onnx.ModelProto:
    """x (n, 3, S..) -> 1x1 Conv (C) -> ReduceMean keepdims [after a Transpose to channel last]
    -> ``spelling`` -> Flatten -> Gemm. ``spelling``: None (no re-view), "identity",
    "features_reversed", "samples_reversed", "repeated" (Gather of indices computed from
    Shape(x)), "reshape_back" (Reshape to (n, C) from Shape(x)) or "reshape_swapped" (to
    (C, n))."""
    rng = np.random.default_rng(d)
    pooled = [1] * (d + 1)
    pooled[-1 if nhwc else 0] = C
    inits = [numpy_helper.from_array(rng.normal(size=(C, 3) + (1,) * d).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(size=C).astype(np.float32), "B"),
             numpy_helper.from_array(rng.normal(size=(K, C)).astype(np.float32), "fc"),
             numpy_helper.from_array(rng.normal(size=K).astype(np.float32), "fcb"),
             _const("axes", range(1, d + 1) if nhwc else range(2, d + 2)),
             _const("flat", [-1]), _const("zero", 0), _const("one", 1), _const("C", C),
             _const("batch_axes", range(1, d + 2)), _const("cdim", [C])]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"])]
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["c"], ["t"], perm=[0, *range(2, d + 2), 1]))
    nodes.append(helper.make_node("ReduceMean", ["t" if nhwc else "c", "axes"], ["p"],
                                  keepdims=1))
    view = "p"
    if spelling is not None:
        nodes += [helper.make_node("Shape", ["x"], ["n1"], start=0, end=1),
                  helper.make_node("Reshape", ["p", "flat"], ["f"])]
        view = "v"
    if spelling in ("reshape_back", "reshape_swapped"):
        order = ["n1", "cdim"] if spelling == "reshape_back" else ["cdim", "n1"]
        nodes += [helper.make_node("Concat", order, ["shape"], axis=0),
                  helper.make_node("Reshape", ["f", "shape"], ["v"], name="back")]
    elif spelling is not None:
        feats = np.arange(C)[::-1] if spelling == "features_reversed" else (
            np.zeros(C) if spelling == "repeated" else np.arange(C))
        inits.append(_const("feats", feats.reshape([1] + pooled)))
        nodes += [helper.make_node("Squeeze", ["n1"], ["n"]),
                  helper.make_node("Range", ["zero", "n", "one"], ["b"])]
        if spelling == "samples_reversed":
            nodes += [helper.make_node("Sub", ["n", "one"], ["last"]),
                      helper.make_node("Sub", ["last", "b"], ["b2"])]
        nodes += [helper.make_node("Mul", ["b2" if spelling == "samples_reversed" else "b", "C"],
                                   ["base"]),
                  helper.make_node("Unsqueeze", ["base", "batch_axes"], ["base4"]),
                  helper.make_node("Add", ["base4", "feats"], ["idx"]),
                  helper.make_node("Gather", ["f", "idx"], ["v"], name="as_strided", axis=0)]
    nodes += [helper.make_node("Flatten", [view], ["z"], axis=1),
              helper.make_node("Gemm", ["z", "fc", "fcb"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "review", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                        ["n", 3] + [S] * d)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", K])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("spelling", ["identity", "reshape_back"])
@pytest.mark.parametrize("d,nhwc", [(1, False), (2, False), (3, False), (1, True), (2, True),
                                    (3, True)])
def test_identity_reviews_measure_as_without_them(d, nhwc, spelling):
    """Accepted as the bare pooled features: the same head, the same measures as the model
    without the re-view (identical activations)."""
    plain, viewed = _model(d, nhwc, None), _model(d, nhwc, spelling)
    head = analyze_model(viewed)
    assert [type(op) for op in head.after.ops] == [Dense]
    assert head.after.classifier_layer.nodes == analyze_model(plain).after.classifier_layer.nodes
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3) + (S,) * d).astype(np.float32)
    y = rng.integers(0, K, 7)
    a, b = (onnxflat.measure(m, x, y, batch_size=3) for m in (plain, viewed))
    for got, want in ((b.layers[0].trace, a.layers[0].trace),
                      (b.layers[0].kappa, a.layers[0].kappa),
                      (b.classifier.trace, a.classifier.trace)):
        assert rel(got, want) < 1e-12, (got, want)


@pytest.mark.parametrize("spelling,node", [
    ("features_reversed", "as_strided"), ("samples_reversed", "as_strided"),
    ("repeated", "as_strided"), ("reshape_swapped", "back")])
@pytest.mark.parametrize("d,nhwc", [(2, False), (1, True), (3, True)])
def test_other_shape_computed_indices_are_refused(d, nhwc, spelling, node):
    with pytest.raises(HeadNotFoundError) as err:
        analyze_model(_model(d, nhwc, spelling))
    assert err.value.node == node
    assert "not a pure re-view of the pooled features 'p'" in err.value.reason


def test_indices_from_values_are_refused():
    """Indices computed from the input's values, not its shape."""
    m = _model(2, False, "identity")
    for n in m.graph.node:
        if n.op_type == "Shape":  # the batch size read from a value of x instead
            n.op_type = "ReduceMax"
            del n.attribute[:]
            n.input[:] = ["x"]
            n.attribute.append(helper.make_attribute("keepdims", 0))
    with pytest.raises(HeadNotFoundError) as err:
        analyze_model(m)
    assert err.value.node == "as_strided"
    assert "computed by ReduceMax" in err.value.reason
