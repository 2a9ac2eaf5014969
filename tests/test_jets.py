"""Every channel-wise function of the math: value, phi' and phi'' against torch autograd.

Each function is applied to a non-trivial jet (an inner smooth function of t, so the chain
rule's second-order term is exercised) and compared elementwise in float64 with the first
and second derivatives torch computes for the same composition.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onnxflat.measures import jets

SELU_A, SELU_G = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946  # torch

def inner(t):
    return t + 0.3 * t * t - 0.2

def inner2(t):
    return 0.7 - 0.5 * t + 0.2 * t * t * t

def jet_of(fn, t):
    v = t.detach().numpy()
    tt = torch.tensor(v, requires_grad=True)
    y = fn(tt)
    d1 = torch.autograd.grad(y.sum(), tt, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), tt)[0]
    return jets.Jet(y.detach().numpy(), d1.detach().numpy(), d2.numpy())

SLOPE = np.linspace(0.1, 0.4, 5)[None, :, None]
CASES = {  # name: (jets call on u (and w), torch function of t)
    "identity": (lambda u, w: jets.identity(u), inner),
    "relu": (lambda u, w: jets.relu(u), lambda t: F.relu(inner(t))),
    "leaky_relu": (lambda u, w: jets.leaky_relu(u, 0.2), lambda t: F.leaky_relu(inner(t), 0.2)),
    "prelu": (lambda u, w: jets.prelu(u, SLOPE),
              lambda t: torch.where(inner(t) > 0, inner(t), torch.tensor(SLOPE) * inner(t))),
    "clip": (lambda u, w: jets.clip(u, -0.3, 0.9), lambda t: inner(t).clamp(-0.3, 0.9)),
    "sigmoid": (lambda u, w: jets.sigmoid(u), lambda t: torch.sigmoid(inner(t))),
    "tanh": (lambda u, w: jets.tanh(u), lambda t: torch.tanh(inner(t))),
    "erf": (lambda u, w: jets.erf(u), lambda t: torch.erf(inner(t))),
    "exp": (lambda u, w: jets.exp(u), lambda t: torch.exp(inner(t))),
    "softplus": (lambda u, w: jets.softplus(u), lambda t: F.softplus(inner(t))),
    "elu": (lambda u, w: jets.elu(u, 0.7), lambda t: F.elu(inner(t), 0.7)),
    "selu": (lambda u, w: jets.selu(u, SELU_A, SELU_G), lambda t: F.selu(inner(t))),
    "hard_sigmoid": (lambda u, w: jets.hard_sigmoid(u, 0.25, 0.4),
                     lambda t: (0.25 * inner(t) + 0.4).clamp(0, 1)),
    "hard_swish": (lambda u, w: jets.hard_swish(u), lambda t: F.hardswish(inner(t))),
    "swish": (lambda u, w: jets.swish(u, 1.7),
              lambda t: inner(t) * torch.sigmoid(1.7 * inner(t))),
    "mish": (lambda u, w: jets.mish(u), lambda t: F.mish(inner(t))),
    "gelu": (lambda u, w: jets.gelu(u), lambda t: F.gelu(inner(t))),
    "gelu_tanh": (lambda u, w: jets.gelu(u, "tanh"),
                  lambda t: F.gelu(inner(t), approximate="tanh")),
    "neg": (lambda u, w: jets.neg(u), lambda t: -inner(t)),
    "reciprocal": (lambda u, w: jets.reciprocal(w), lambda t: 1.0 / inner2(t)),
    "pow3": (lambda u, w: jets.power(u, 3), lambda t: inner(t) ** 3),
    "pow2.5": (lambda u, w: jets.power(w, 2.5), lambda t: inner2(t) ** 2.5),
    "add": (lambda u, w: jets.add(u, w), lambda t: inner(t) + inner2(t)),
    "add_const": (lambda u, w: jets.add(1.5, u), lambda t: inner(t) + 1.5),
    "sub": (lambda u, w: jets.sub(u, w), lambda t: inner(t) - inner2(t)),
    "sub_from_const": (lambda u, w: jets.sub(2.0, u), lambda t: 2.0 - inner(t)),
    "mul": (lambda u, w: jets.mul(u, w), lambda t: inner(t) * inner2(t)),
    "div": (lambda u, w: jets.div(u, w), lambda t: inner(t) / inner2(t)),
    "div_const": (lambda u, w: jets.div(u, 1.3), lambda t: inner(t) / 1.3),
    "max": (lambda u, w: jets.maximum(u, w), lambda t: torch.maximum(inner(t), inner2(t))),
    "min_const": (lambda u, w: jets.minimum(u, 0.4), lambda t: inner(t).clamp(max=0.4)),
    "affine": (lambda u, w: jets.affine(u, 1.5, -0.2), lambda t: 1.5 * inner(t) - 0.2),
}

def test_every_math_function_is_covered():
    names = set(jets.FUNCTIONS) - {"transpose", "unsqueeze", "squeeze", "take", "concat", "pow",
                                   "max", "min"}
    assert names <= set(CASES), names - set(CASES)


def test_channel_take_and_concat_move_whole_jets():
    """A channel Slice/Split (take) and Concat move value, phi' and phi'' together."""
    t = torch.linspace(-1.0, 1.0, 30, dtype=torch.float64).reshape(2, 5, 3)
    u, w2 = jet_of(inner, t), jet_of(inner2, t)
    w = jets.Jet(w2.v, w2.d1)  # phi'' identically 0
    got = jets.concat(jets.take(u, (4, 0, 2), axis=1), w, axis=1)
    for a, b in ((got.v, np.concatenate([u.v[:, [4, 0, 2]], w.v], 1)),
                 (got.d1, np.concatenate([u.d1[:, [4, 0, 2]], w.d1], 1)),
                 (got.d2, np.concatenate([u.d2[:, [4, 0, 2]], np.zeros_like(w.v)], 1))):
        np.testing.assert_array_equal(a, b)

@pytest.mark.parametrize("name", CASES)
def test_jet_matches_autograd(name):
    fn, ref = CASES[name]
    g = torch.Generator().manual_seed(0)
    t = torch.rand(3, 5, 7, dtype=torch.float64, generator=g) * 2.4 - 1.2
    if name == "pow2.5" or name == "reciprocal":
        t = t.abs() * 0.5  # inner2 > 0 there
    u, w = jet_of(inner, t), jet_of(inner2, t)
    got, want = fn(u, w), jet_of(ref, t)
    kinks = {"relu": [0.0], "leaky_relu": [0.0], "prelu": [0.0], "elu": [0.0], "selu": [0.0],
             "clip": [-0.3, 0.9], "hard_sigmoid": [-1.6, 2.4], "hard_swish": [-3.0, 3.0],
             "min_const": [0.4]}.get(name, [])
    ok = np.ones(t.shape, bool)
    for k in kinks:
        ok &= np.abs(u.v - k) > 1e-6
    if name == "max":
        ok &= np.abs(u.v - w.v) > 1e-6
    for a, b in ((got.v, want.v), (got.d1, want.d1),
                 (np.zeros_like(want.d2) if got.d2 is None else got.d2, want.d2)):
        np.testing.assert_allclose(np.broadcast_to(a, t.shape)[ok], b[ok], rtol=1e-12,
                                   atol=1e-12)

def test_transpose_moves_all_orders():
    v = np.arange(24.0).reshape(1, 2, 3, 4)
    out = jets.transpose(jets.Jet(v, 2 * v, 3 * v), (0, 2, 3, 1))
    for a, k in ((out.v, 1), (out.d1, 2), (out.d2, 3)):
        np.testing.assert_array_equal(a, k * v.transpose(0, 2, 3, 1))


def test_unsqueeze_and_squeeze_move_all_orders():
    v = np.arange(6.0).reshape(1, 2, 3)
    up = jets.unsqueeze(jets.Jet(v, 2 * v, None), (2, 4))
    assert up.v.shape == up.d1.shape == (1, 2, 1, 3, 1) and up.d2 is None
    down = jets.squeeze(up, (2, 4))
    for a, k in ((down.v, 1), (down.d1, 2)):
        np.testing.assert_array_equal(a, k * v)
