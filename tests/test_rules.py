"""The rule registries of graph/patterns.py and the math they name: every channel-wise rule,
run on a node of its op, emits a function that exists in ``measures.jets.FUNCTIONS``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from onnxflat.graph.head import NCHW
from onnxflat.graph.model import GraphIndex
from onnxflat.graph.patterns import CHANNELWISE_RULES, Ctx, channelwise_step
from onnxflat.measures import jets

C = 4
EXTRA_INPUTS = {  # op -> constant inputs after X
    "BatchNormalization": [np.full(C, v, np.float32) for v in (1.5, 0.1, 0.2, 0.9)],
    "PRelu": [np.full((C, 1, 1), 0.1, np.float32)],
    "Pow": [np.array(2.0, np.float32)],
    "Unsqueeze": [np.array([4], np.int64)],
    "Squeeze": [np.array([3], np.int64)],
}
SHAPES = {"Squeeze": [1, C, 2, 1]}  # Squeeze drops a spatial axis of static size 1
ATTRS = {"Cast": {"to": onnx.TensorProto.FLOAT}, "Transpose": {"perm": [0, 2, 3, 1]},
         "Clip": {}}


def _node_of(op: str) -> tuple[GraphIndex, onnx.NodeProto]:
    """A one-node model applying ``op`` to X ``(1, C, 2, 2)`` (binary ops: times a per-channel
    constant; ``SHAPES`` where the op needs another)."""
    consts = EXTRA_INPUTS.get(op)
    if consts is None and op in ("Add", "Sum", "Sub", "Mul", "Div", "Max", "Min"):
        consts = [np.full((C, 1, 1), 0.5, np.float32)]
    consts = consts or []
    names = [f"k{i}" for i in range(len(consts))]
    node = helper.make_node(op, ["X", *names], ["Y"], **ATTRS.get(op, {}))
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT,
                                                   SHAPES.get(op, [1, C, 2, 2]))],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, n) for v, n in zip(consts, names)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    ix = GraphIndex(model)
    return ix, ix.nodes[0]


@pytest.mark.parametrize("op", sorted(CHANNELWISE_RULES))
def test_every_channelwise_rule_names_a_jet_function(op):
    ix, node = _node_of(op)
    m = channelwise_step(Ctx(ix, frozenset(["X"]), NCHW), node)
    assert m, f"{op}: {m.reason}"
    assert m.value.step.fn in jets.FUNCTIONS, f"{op} emits unknown function {m.value.step.fn!r}"
    assert m.value.step.output == "Y"
