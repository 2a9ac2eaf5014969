"""The onnxruntime stage's model surgery: the pruned copy with its weights handed over as
arrays runs exactly like the original model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, numpy_helper

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
    model = onnx.parser.parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 3, 8, 8] x) => (float[N, 10] prob, float unused) {
            z = Conv <pads = [1, 1, 1, 1]> (x, k, kb)
            h = Relu (z)
            g = GlobalAveragePool (h)
            f = Flatten (g)
            logits = Gemm <transB = 1> (f, w, wb)
            prob = Softmax (logits)
            unused = Conv <pads = [1, 1, 1, 1]> (x, k2)
        }""")
    model.graph.initializer.extend(inits)
    return model


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
