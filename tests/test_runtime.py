"""The onnxruntime stage's model surgery: the pruned copy with its weights handed over as
arrays runs exactly like the original model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxflat.runtime import INLINE_BYTES, session_options, with_outputs


def small_model() -> onnx.ModelProto:
    """x -> Conv (large kernel) -> Relu -> GAP -> Flatten -> Gemm -> Softmax, plus a branch
    that no fetched output needs (with its own large initializer)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "k"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "kb"),
             numpy_helper.from_array(rng.standard_normal((10, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "wb"),
             numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "k2")]
    nodes = [helper.make_node("Conv", ["x", "k", "kb"], ["z"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["z"], ["h"]),
             helper.make_node("GlobalAveragePool", ["h"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "wb"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["prob"]),
             helper.make_node("Conv", ["x", "k2"], ["unused"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("unused", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_pruned_copy_with_weights_as_arrays_runs_like_the_model():
    model = small_model()
    fetches = ["z", "g", "logits"]
    pruned, weights = with_outputs(model, fetches)
    assert [n.op_type for n in pruned.graph.node] == ["Conv", "Relu", "GlobalAveragePool",
                                                      "Flatten", "Gemm"]
    big = {t.name for t in model.graph.initializer if len(t.raw_data) > INLINE_BYTES}
    assert set(weights) == big - {"k2"} == {"k"}
    for t in pruned.graph.initializer:  # the kept large tensor is a data-less placeholder
        assert t.data_location == (TensorProto.EXTERNAL if t.name in weights else
                                   TensorProto.DEFAULT)
        assert (len(t.raw_data) == 0) == (t.name in weights)
    np.testing.assert_array_equal(weights["k"], numpy_helper.to_array(model.graph.initializer[0]))

    so = session_options(1)
    so.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(w)
                                                 for w in weights.values()])
    sess = ort.InferenceSession(pruned.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    full = onnx.ModelProto()
    full.CopyFrom(model)
    full.graph.output.extend(onnx.ValueInfoProto(name=n) for n in fetches)
    ref = ort.InferenceSession(full.SerializeToString(), session_options(1),
                               providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    for got, want in zip(sess.run(fetches, {"x": x}), ref.run(fetches, {"x": x})):
        np.testing.assert_array_equal(got, want)
