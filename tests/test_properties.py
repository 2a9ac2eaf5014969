"""Property-based tests of the math core (hypothesis, bounded examples).

Random small heads ``Conv -> [BN] -> activation -> [BN] -> GlobalAveragePool -> Gemm`` are
built directly as float64 ONNX graphs; their tensors come from onnx's reference evaluator,
and the closed forms must match a float64 torch autograd Hessian of the same function
(tests/reference.py). Invariances: compensated filter rescaling leaves kappa unchanged;
any split of the samples into merged partial statistics, and any order, give the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxflat.graph import analyze_model
from onnxflat.measures import FlatnessAccumulator, Options
from onnxflat.measures.stats import Moments

from .reference import hessian_measures

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
ACTIVATIONS = {  # ONNX op (attributes) -> torch function
    "Relu": ({}, F.relu),
    "LeakyRelu": ({"alpha": 0.125}, lambda z: F.leaky_relu(z, 0.125)),  # float32-exact
    "Tanh": ({}, torch.tanh), "Sigmoid": ({}, torch.sigmoid), "Softplus": ({}, F.softplus),
    "Elu": ({"alpha": 1.0}, F.elu), "Identity": ({}, lambda z: z)}
EPS = 1e-5
# On a saturated softmax (loss ~1e-9) the autograd reference forms p - e_y by subtraction,
# so its rounding bounds the absolute, not the relative error: 1e-9 relative or 1e-14
# absolute. (onnxflat keeps the tail exact: see test_saturated_softmax_keeps_relative_precision.)
ATOL = 1e-14


@dataclass(frozen=True)
class Spec:
    c_in: int
    c_out: int
    groups: int
    k: int
    stride: int
    pad: int
    dilation: int
    hw: int
    classes: int
    act: str
    bn: str | None  # None, "before" or "after" the activation
    n: int
    seed: int


@st.composite
def specs(draw):
    groups = draw(st.sampled_from([1, 1, 2]))
    s = Spec(c_in=groups * draw(st.integers(1, 2)), c_out=groups * draw(st.integers(1, 3)),
             groups=groups, k=draw(st.integers(1, 3)), stride=draw(st.integers(1, 2)),
             pad=draw(st.integers(0, 1)), dilation=draw(st.integers(1, 2)),
             hw=draw(st.integers(3, 6)), classes=draw(st.integers(2, 4)),
             act=draw(st.sampled_from(sorted(ACTIVATIONS))),
             bn=draw(st.sampled_from([None, "before", "after"])), n=draw(st.integers(1, 5)),
             seed=draw(st.integers(0, 2 ** 16)))
    assume(s.hw + 2 * s.pad - s.dilation * (s.k - 1) >= 1)
    return s


class Ref(nn.Module):
    """The head as a float64 torch function of its parameters ``w`` and ``fc``."""

    def __init__(self, s: Spec, p: dict):
        super().__init__()
        self.s = s
        self.w = nn.Parameter(torch.from_numpy(p["w"]))
        self.fc = nn.Parameter(torch.from_numpy(p["fc"]))
        self.t = {k: torch.from_numpy(v) for k, v in p.items() if k not in ("w", "fc")}

    def _bn(self, z):
        t = self.t
        view = (1, -1, 1, 1)
        return ((z - t["mean"].view(view)) / torch.sqrt(t["var"].view(view) + EPS)
                * t["gamma"].view(view) + t["beta"].view(view))

    def forward(self, x):
        s = self.s
        z = F.conv2d(x, self.w, self.t["b"], s.stride, s.pad, s.dilation, s.groups)
        if s.bn == "before":
            z = self._bn(z)
        a = ACTIVATIONS[s.act][1](z)
        if s.bn == "after":
            a = self._bn(a)
        return a.mean(dim=(2, 3)) @ self.fc.T + self.t["fc_b"]


def parameters(s: Spec) -> dict:
    rng = np.random.default_rng(s.seed)
    c = s.c_out
    return {"w": rng.standard_normal((c, s.c_in // s.groups, s.k, s.k)),
            "b": 0.3 * rng.standard_normal(c), "fc": 2 * rng.standard_normal((s.classes, c)),
            "fc_b": 0.3 * rng.standard_normal(s.classes),
            "gamma": rng.uniform(0.5, 1.5, c), "beta": rng.uniform(-0.3, 0.3, c),
            "mean": rng.uniform(-0.2, 0.2, c), "var": rng.uniform(0.5, 1.5, c)}


def graph(s: Spec, p: dict) -> onnx.ModelProto:
    """The head as a float64 ONNX model."""
    attrs, _ = ACTIVATIONS[s.act]
    bn = [helper.make_node("BatchNormalization", ["?", "gamma", "beta", "mean", "var"], ["?"],
                           epsilon=EPS)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["z"], kernel_shape=[s.k, s.k],
                              strides=[s.stride] * 2, pads=[s.pad] * 4,
                              dilations=[s.dilation] * 2, group=s.groups)]
    cur = "z"
    for part in ("before", "act", "after"):
        if part == "act":
            nodes.append(helper.make_node(s.act, [cur], ["act"], **attrs))
            cur = "act"
        elif s.bn == part:
            node = onnx.NodeProto()
            node.CopyFrom(bn[0])
            node.input[0], node.output[0] = cur, f"bn_{part}"
            nodes.append(node)
            cur = f"bn_{part}"
    nodes += [helper.make_node("GlobalAveragePool", [cur], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "fc", "fc_b"], ["logits"], transB=1)]
    inits = [numpy_helper.from_array(v, k) for k, v in p.items()]
    g = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.DOUBLE,
                                                      ["n", s.c_in, s.hw, s.hw])],
        [helper.make_tensor_value_info("logits", TensorProto.DOUBLE, ["n", s.classes])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def tensors(proto, head, x):
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    names = [n for n in head.fetches if n != head.input_name]
    for name in names:
        if name not in {o.name for o in m.graph.output}:
            m.graph.output.append(onnx.ValueInfoProto(name=name))
    out = dict(zip(names, ReferenceEvaluator(m).run(names, {head.input_name: x})))
    out[head.input_name] = x
    return out


def case(s: Spec):
    p = parameters(s)
    proto = graph(s, p)
    head = analyze_model(proto)
    rng = np.random.default_rng(s.seed + 1)
    x = rng.standard_normal((s.n, s.c_in, s.hw, s.hw))
    y = rng.integers(0, s.classes, s.n)
    return p, proto, head, x, y


def measures(head, t, y, options=Options()):
    acc = FlatnessAccumulator(head, options)
    acc.update(t, y)
    return acc


def flat(res) -> np.ndarray:
    layer = res.layers[0]
    return np.array([res.loss, res.accuracy, layer.trace, layer.kappa, res.classifier.trace,
                     res.classifier.kappa, *layer.per_filter["trace"],
                     *layer.per_filter["kappa"]])



@SETTINGS
@given(specs())
def test_closed_forms_match_autograd(s):
    p, proto, head, x, y = case(s)
    res = measures(head, tensors(proto, head, x), y).result("m")
    model = Ref(s, p)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    trace, kappa = hessian_measures(model, xt, yt, "w")
    fc_trace, fc_kappa = hessian_measures(model, xt, yt, "fc")
    layer = res.layers[0]
    for got, want in ((layer.trace, trace), (layer.kappa, kappa), (res.classifier.trace, fc_trace),
                      (res.classifier.kappa, fc_kappa)):
        assert abs(got - want) <= 1e-9 * abs(want) + ATOL, (s, got, want)
    k2 = float(np.sum(p["w"] ** 2))
    assert layer.kappa_layerwise == pytest.approx(k2 * trace, rel=1e-9, abs=1e-12)


@SETTINGS
@given(specs(), st.lists(st.floats(0.25, 4.0), min_size=4, max_size=4))
def test_kappa_invariant_under_compensated_filter_rescaling(s, lams):
    """Scaling filter j (and its bias) by lam_j > 0 and classifier column j by 1/lam_j leaves
    a ReLU head's function and its filter-wise kappa unchanged; with one lam for all filters
    the classifier's kappa too (Petzka's invariance is layer-wise)."""
    s = Spec(**{**s.__dict__, "act": "Relu", "bn": None})
    p, proto, head, x, y = case(s)
    a = measures(head, tensors(proto, head, x), y).result("m")
    for lam in (np.resize(np.asarray(lams), s.c_out), np.full(s.c_out, lams[0])):
        q = dict(p, w=p["w"] * lam[:, None, None, None], b=p["b"] * lam,
                 fc=p["fc"] / lam[None, :])
        proto2 = graph(s, q)
        head2 = analyze_model(proto2)
        b = measures(head2, tensors(proto2, head2, x), y).result("m")
        assert b.loss == pytest.approx(a.loss, rel=1e-12)
        assert b.layers[0].kappa == pytest.approx(a.layers[0].kappa, rel=1e-9, abs=1e-12)
    assert b.classifier.kappa == pytest.approx(a.classifier.kappa, rel=1e-9, abs=1e-12)


@SETTINGS
@given(specs(), st.data())
def test_merged_parts_and_any_order_equal_the_whole(s, data):
    s = Spec(**{**s.__dict__, "n": data.draw(st.integers(2, 9))})
    _, proto, head, x, y = case(s)
    t = tensors(proto, head, x)
    whole = measures(head, t, y).result("m")
    order = np.asarray(data.draw(st.permutations(range(s.n))))
    cuts = sorted(data.draw(st.lists(st.integers(1, s.n - 1), max_size=3, unique=True)))
    parts = np.split(order, cuts)
    acc = FlatnessAccumulator(head, Options())
    for part in parts:  # each part accumulated on its own, then merged
        other = measures(head, {k: v[part] for k, v in t.items()}, y[part])
        acc.merge(other)
    merged = acc.result("m")
    assert merged.n_samples == whole.n_samples == s.n
    np.testing.assert_allclose(flat(merged), flat(whole), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(
        [merged.layers[0].stderr["kappa"], merged.classifier.stderr["trace"]],
        [whole.layers[0].stderr["kappa"], whole.classifier.stderr["trace"]], rtol=1e-8,
        atol=1e-13)


@settings(max_examples=50, deadline=None, derandomize=True, database=None)
@given(st.lists(st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=7), min_size=1,
                max_size=5))
def test_moments_merge_equals_numpy(chunks):
    """Chan's merge of per-chunk mean / centred sum of squares equals the whole sample's."""
    m = Moments(("a",))
    for c in chunks:
        m.add({"a": np.asarray(c)}, {"a": np.asarray([sum(c)])})
    allv = np.concatenate([np.asarray(c) for c in chunks])
    assert m.n == len(allv)
    assert m.value("a") == pytest.approx(allv.mean(), rel=1e-12, abs=1e-9)
    if len(allv) > 1:
        want = allv.std(ddof=1) / np.sqrt(len(allv))
        assert m.stderr("a") == pytest.approx(want, rel=1e-8, abs=1e-9)
    assert m.vector_mean("a")[0] == pytest.approx(allv.mean(), rel=1e-12, abs=1e-9)


@SETTINGS
@given(specs(), st.floats(5.0, 60.0))
def test_saturated_softmax_keeps_relative_precision(s, scale):
    """Classifier weights scaled up until the softmax saturates (tails down to 1e-300): the
    loss and the classifier measures keep 1e-12 relative precision against 400-digit
    arithmetic, and a ReLU head's conv trace and kappa stay >= 0 (PSD forms), where a
    subtraction 1 - p would leave rounding noise of either sign."""
    s = Spec(**{**s.__dict__, "act": "Relu", "bn": None})
    p, proto, head, x, y = case(s)
    q = dict(p, fc=p["fc"] * scale, fc_b=p["fc_b"] * scale)
    proto = graph(s, q)
    head = analyze_model(proto)
    t = tensors(proto, head, x)
    res = measures(head, t, y).result("m")
    g = np.asarray(t[head.pooling.output]).reshape(s.n, -1)
    w, b = head.after.compose()
    loss = trace = kappa = 0.0
    with mpmath.workdps(400):  # 1 - p for tails down to float64's 1e-308
        for gi, yi in zip(g, y):
            f = [mpmath.mpf(float(v)) for v in w @ gi + b]
            z = sum(mpmath.exp(v - max(f)) for v in f)
            pr = [mpmath.exp(v - max(f)) / z for v in f]
            gn2 = mpmath.mpf(float(gi @ gi))
            rows = [[mpmath.mpf(float(v)) for v in row] for row in w]
            mean = [sum(pc * row[k] for pc, row in zip(pr, rows)) for k in range(len(gi))]
            loss += float(-mpmath.log(pr[int(yi)])) / s.n
            trace += float(gn2 * sum(pc * (1 - pc) for pc in pr)) / s.n
            kappa += float(gn2 * sum(pc * sum((row[k] - mean[k]) ** 2 for k in range(len(gi)))
                                     for pc, row in zip(pr, rows))) / s.n
    for got, want in ((res.loss, loss), (res.classifier.trace, trace),
                      (res.classifier.kappa, kappa)):
        assert abs(got - want) <= 1e-12 * abs(want) + 1e-300, (s, scale, got, want)
    assert res.layers[0].trace >= 0 and res.layers[0].kappa >= 0
