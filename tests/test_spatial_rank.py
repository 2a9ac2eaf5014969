"""1-D and 3-D CNNs (sequences; clips and volumes): patch routes of any rank, the analyzer's
layouts and refusals, invariance, data of the wrong rank or layout, inspect. The measures
against autograd are in test_autograd.py (tests/zoo.py's conv1d/conv3d cases)."""

from __future__ import annotations

import copy
import itertools
import re

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxflat
from onnxflat.cli import main
from onnxflat.data.arrays import ArrayDataset
from onnxflat.errors import DataError, HeadNotFoundError
from onnxflat.graph import analyze_model
from onnxflat.measures.patches import filter_factors, geometry, route_costs

from .zoo import HeadNd, export


def _naive_patches(a, kernel, strides, pads, dilations, groups):
    """X ``(N, G, P, d)`` by explicit loops over output positions and kernel offsets."""
    n, c_in, *size = a.shape
    r = len(size)
    out = [(size[i] + pads[i] + pads[r + i] - dilations[i] * (kernel[i] - 1) - 1)
           // strides[i] + 1 for i in range(r)]
    padded = np.pad(a, [(0, 0), (0, 0)] + [(pads[i], pads[r + i]) for i in range(r)])
    rows = []
    for o in itertools.product(*map(range, out)):
        cols = []
        for k in itertools.product(*map(range, kernel)):
            at = tuple(o[i] * strides[i] + k[i] * dilations[i] for i in range(r))
            cols.append(padded[(slice(None), slice(None)) + at])  # (N, C_in)
        rows.append(np.stack(cols, axis=2))  # (N, C_in, K)
    x = np.stack(rows, axis=1)  # (N, P, C_in, K)
    x = x.reshape(n, len(rows), groups, c_in // groups, -1).transpose(0, 2, 1, 3, 4)
    return x.reshape(n, groups, len(rows), -1), tuple(out)


GEOMETRIES = [  # (input spatial size, kernel, strides, pads, dilations, groups)
    ((11,), (3,), (2,), (1, 2), (2,), 1),
    ((9,), (4,), (1,), (0, 0), (1,), 2),
    ((5, 6), (3, 2), (1, 2), (1, 0, 1, 1), (1, 2), 1),
    ((4, 5, 6), (3, 3, 3), (2, 1, 2), (1, 1, 0, 1, 1, 1), (1, 2, 1), 1),
    ((3, 4, 5), (1, 3, 2), (1, 1, 1), (0, 1, 1, 0, 1, 0), (1, 1, 2), 2),
    ((3, 3, 4), (1, 1, 1), (1, 1, 1), (0,) * 6, (1, 1, 1), 1),  # the pixel fast path
]


@pytest.mark.parametrize("size, kernel, strides, pads, dilations, groups", GEOMETRIES)
def test_routes_match_explicit_patches(size, kernel, strides, pads, dilations, groups):
    """R = V V^T and ||x_p||^2 of every route equal those of explicitly gathered patches."""
    rng = np.random.default_rng(0)
    c_in, c_out, n = 4, 6, 3
    a = rng.standard_normal((n, c_in, *size))
    x, out = _naive_patches(a, kernel, strides, pads, dilations, groups)
    g = geometry(c_in, size, (c_out, c_in // groups, *kernel), groups, out, strides, dilations,
                 pads)
    p = g.positions
    d1 = rng.standard_normal((n, c_out, p))
    dg = d1.reshape(n, groups, c_out // groups, p)
    v = np.einsum("ngjp,ngpd->ngjd", dg, x).reshape(n, c_out, -1) / p
    want_r = v @ v.transpose(0, 2, 1)
    want_sq = np.repeat(np.sum(x * x, axis=3), c_out // groups, axis=1)  # (N, C_out, P)
    for route in route_costs(g, True):
        left, right, sq = filter_factors(a, d1, g, route)
        np.testing.assert_allclose(left @ right.transpose(0, 2, 1), want_r, rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(np.broadcast_to(sq, want_sq.shape), want_sq, rtol=1e-12)


def test_geometry_rejects_an_output_of_another_size():
    with pytest.raises(ValueError, match="does not match"):
        geometry(2, (4, 5, 6), (3, 2, 3, 3, 3), 1, (4, 5, 5), (1, 1, 1), (1, 1, 1), (1,) * 6)


def _rescale_filters(model: HeadNd, lam: torch.Tensor) -> HeadNd:
    """Filter j of the (BN-folded) conv times lam_j, classifier column j over lam_j: ReLU
    makes it the same function."""
    m = copy.deepcopy(model)
    shape = (-1,) + (1,) * (m.conv.weight.dim() - 1)
    with torch.no_grad():
        m.conv.weight.mul_(lam.reshape(shape))
        m.conv.bias.mul_(lam)
        m.fc.weight.div_(lam[None, :])
    return m


@pytest.mark.parametrize("dims, sample", [(1, (2, 16)), (3, (2, 4, 5, 6))])
def test_kappa_invariant_under_filter_rescaling(tmp_path, dims, sample):
    base = HeadNd(dims, nn.ReLU(), stride=2, seed=4).eval()
    base.fold_bn()
    lam = torch.tensor([0.5, 2.0, 3.0, 0.25, 1.5, 4.0])
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, *sample, generator=g)
    y = torch.randint(0, 5, (30,), generator=g).numpy()
    res = []
    for name, model in (("a", base), ("b", _rescale_filters(base, lam))):
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(export(model, x[:4]).SerializeToString())
        res.append(onnxflat.measure(path, x.numpy(), y))
    a, b = res
    assert b.loss == pytest.approx(a.loss, rel=1e-6)
    assert b.layers[0].kappa == pytest.approx(a.layers[0].kappa, rel=1e-5)
    assert b.layers[0].trace != pytest.approx(a.layers[0].trace, rel=1e-2)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 1-D model on (2, 16) sequences and a 3-D one on (2, 4, 5, 6) volumes, as files."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for dims, sample in ((1, (2, 16)), (3, (2, 4, 5, 6))):
        path = root / f"conv{dims}d.onnx"
        path.write_bytes(export(HeadNd(dims, nn.SiLU()).eval(), torch.randn(4, *sample))
                         .SerializeToString())
        out[dims] = path, sample
    return out


def test_inspect_shows_the_spatial_rank(models):
    for dims, axes in ((1, "1-D (L)"), (3, "3-D (DHW)")):
        r = CliRunner().invoke(main, ["inspect", str(models[dims][0])])
        assert r.exit_code == 0, r.output
        assert f"conv:  {axes}" in r.output and f"Conv{dims}d '" in r.output, r.output
        assert ("3x3x3" if dims == 3 else "4->6 3 ->") in r.output, r.output


def _refused(path, x, *words):
    rng = np.random.default_rng(0)
    data = path.parent / "d.npz"
    np.savez(data, x=x.astype(np.float32), y=rng.integers(0, 5, len(x)))
    r = CliRunner().invoke(main, ["measure", str(path), "--data", str(data)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_data_of_the_wrong_layout_or_rank(models):
    rng = np.random.default_rng(0)
    path3, (c, d, h, w) = models[3]
    x3 = rng.standard_normal((6, c, d, h, w))
    _refused(path3, x3.transpose(0, 2, 3, 4, 1), "NDHWC data for an NCDHW model",
             "x.transpose(0, 4, 1, 2, 3)")
    _refused(path3, x3[:, 0], "(4, 5, 6)", "3 spatial axes: the model takes clips or volumes")
    path1, (c, n) = models[1]
    x1 = rng.standard_normal((6, c, n))
    _refused(path1, x1.transpose(0, 2, 1), "(16, 2)", "x.transpose(0, 2, 1)")
    _refused(path1, x1[:, None], "1 spatial axes: the model takes sequences")
    r = CliRunner().invoke(main, ["measure", str(path1), "--data", str(path1.parent)])
    assert r.exit_code == 2 and "an image folder feeds models of 2-D images" in r.stderr


@pytest.mark.parametrize("want, got, hint", [
    (("n", 1, 16), (16,), "no channel axis: add it with x[:, None]"),
    (("n", 8, 8, 8, 1), (8, 8, 8), "no channel axis: add it with x[..., None]"),
    ((None, 3, 4, 5, 6), (4, 5, 6, 3), "NDHWC data for an NCDHW model: use x.transpose(0, 4, 1, "
                                       "2, 3)"),
    ((None, 4, 5, 6, 3), (3, 4, 5, 6), "NCDHW data for an NDHWC model: use x.transpose(0, 2, 3, "
                                       "4, 1)"),
    ((None, 3, 16), (16, 3), "the channel and length axes look swapped"),
])
def test_data_hints(want, got, hint):
    ds = ArrayDataset(np.zeros((2, *got), np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match=re.escape(hint)):
        ds.check_fits(want, 5)


def _pooled_3d(axes: list[int], pool_input_perm=None, features=4) -> onnx.ModelProto:
    """Conv3d -> Relu -> [Transpose] -> ReduceMean(axes) -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3, 3)).astype(np.float32),
                                     "k"),
             numpy_helper.from_array(rng.standard_normal((5, features)).astype(np.float32),
                                     "w")]
    nodes = [helper.make_node("Conv", ["x", "k"], ["z"], pads=[1] * 6),
             helper.make_node("Relu", ["z"], ["a"])]
    pooled = "a"
    if pool_input_perm:
        nodes.append(helper.make_node("Transpose", ["a"], ["t"], perm=pool_input_perm))
        pooled = "t"
    nodes += [helper.make_node("ReduceMean", [pooled], ["g"], axes=axes, keepdims=0),
              helper.make_node("Flatten", ["g"], ["h"]),
              helper.make_node("Gemm", ["h", "w"], ["f"], transB=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 4, 5, 6])],
        [helper.make_tensor_value_info("f", TensorProto.FLOAT, ["n", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_pooling_must_cover_every_spatial_axis():
    assert analyze_model(_pooled_3d([2, 3, 4])).layers[0].layout == (0, 1, 2, 3, 4)
    head = analyze_model(_pooled_3d([1, 2, 3], [0, 2, 3, 4, 1]))  # NDHWC
    assert head.layers[0].layout == (0, 2, 3, 4, 1)
    with pytest.raises(HeadNotFoundError, match="not the conv's spatial axes"):
        analyze_model(_pooled_3d([3, 4], features=16))  # D stays
    with pytest.raises(HeadNotFoundError, match="not the conv's spatial axes"):
        analyze_model(_pooled_3d([2, 3, 4], [0, 2, 3, 4, 1]))  # averages C, not W


def test_squeeze_of_a_conv_axis_longer_than_one_is_refused():
    m = _pooled_3d([2, 3], features=20)
    nodes = list(m.graph.node)
    nodes.insert(2, helper.make_node("Squeeze", ["a", "ax"], ["s"]))
    nodes[3].input[0] = "s"
    m.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "ax"))
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    with pytest.raises(HeadNotFoundError, match="not a spatial axis of static size 1"):
        analyze_model(onnx.shape_inference.infer_shapes(m))


def test_conv_attributes_of_another_rank_are_refused():
    m = _pooled_3d([2, 3, 4])
    conv = m.graph.node[0]
    conv.attribute.append(helper.make_attribute("strides", [1, 1]))
    with pytest.raises(HeadNotFoundError, match="strides has 2 entries for a kernel with 3"):
        analyze_model(m)
