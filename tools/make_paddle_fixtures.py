"""Export small PaddlePaddle CNNs with paddle2onnx and compute references with Paddle autograd.

Writes tests/fixtures/paddle/: ``<case>.onnx`` (real paddle2onnx exports of
``paddle.jit.save``d models, MobileNetV3-style heads among them), ``data.npz`` (float32
NCHW inputs ``x``, int64 labels ``y``) and ``references.json`` (per measured case: Hessian
trace / kappa of the mean cross-entropy w.r.t. each head conv kernel as stored in the
file and w.r.t. the classifier weight, and the mean loss). The test suite reads these
files and does not need Paddle.

References are Paddle float64: the model is rebuilt in float64 with the same weights, the
loss is ``F.cross_entropy`` on the logits (a trailing softmax is switched off for the
reference), and the Hessian w.r.t. one parameter is built row by row with double
backward (``paddle.grad(..., create_graph=True)``). Conv filters are the first axis of a
Paddle conv weight ``(C_out, C_in/g, kh, kw)``; a ``nn.Linear`` weight is ``(F, C)``, so
the classifier's rows are its columns; a 1x1 conv classifier has rows = output channels.
If the exporter folded a per-channel scale ``s`` into the stored kernel ``K_f = s K``, the
Hessian is transformed exactly: ``H_f = diag(1/s) H diag(1/s)``. Likewise for the
classifier: onnxflat folds a per-feature scale between pooling and Linear (inference-mode
dropout ``downscale_in_infer``: Mul by 1-p) into its weight, so the classifier reference
is w.r.t. that folded weight (its kappa is unchanged by the fold, its trace is not).

Needs paddlepaddle and paddle2onnx (not test dependencies), e.g. in a separate venv:

    python -m venv /work/paddlevenv && /work/paddlevenv/bin/pip install \
        'paddlepaddle==3.3.*' 'paddle2onnx==2.1.*' packaging numpy onnx
    /work/paddlevenv/bin/python tools/make_paddle_fixtures.py [--out tests/fixtures/paddle]

(paddle2onnx's polygraphy step installs onnx_graphsurgeon, sympy and onnxruntime itself.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import paddle2onnx
from fixture_refs import stored_conv, trace_kappa

HW, C_IN, CLASSES, N = 8, 3, 5, 24

# Paddle's eager mode has no double-backward for hardswish, relu6, hardsigmoid, swish,
# flatten, log_softmax or depthwise convs. For the references (REF = True) the models run
# the same functions spelled with ops that have it (checked equal to the exported forward
# in float64), and eager "prim" decomposition for BatchNormalization and GELU.
REF = False
HARDSIGMOID_SLOPE = float(np.float32(0.1666667))  # F.hardsigmoid default, a float32 attribute


def relu6(t):
    return F.relu(t) - F.relu(t - 6.0) if REF else F.relu6(t)


def hardswish(t):
    return t * relu6(t + 3.0) / 6.0 if REF else F.hardswish(t)


def hardsigmoid(t):
    u = HARDSIGMOID_SLOPE * t + 0.5
    return F.relu(u) - F.relu(u - 1.0) if REF else F.hardsigmoid(t)


def swish(t):
    return t * F.sigmoid(t) if REF else F.swish(t)


def flatten(t):
    return t.reshape([t.shape[0], -1]) if REF else paddle.flatten(t, 1)


def conv(layer: nn.Conv2D, t):
    """``layer(t)``. For the references, a matmul of the kernel matrix with the input (1x1)
    or its im2col (``F.unfold``): Paddle's eager double backward of conv2d w.r.t. its
    filter returns zeros (checked against central differences of its gradient), that of
    matmul does not. unfold has no double backward, so a kxk conv's input is detached:
    in these models no differentiated parameter lies upstream of a kxk conv. A grouped
    kernel enters as a dense one times a block-diagonal 0/1 mask."""
    if not REF:
        return layer(t)
    w = layer.weight
    c_out, c_in = w.shape[0], t.shape[1]
    if layer._groups > 1:
        rows = np.arange(c_out)[:, None] // (c_out // layer._groups)
        cols = np.arange(c_in)[None, :] // (c_in // layer._groups)
        w = w * paddle.to_tensor((rows == cols).astype(np.float64)[:, :, None, None])
    with paddle.no_grad():
        shape = layer(t).shape
    if tuple(w.shape[2:]) == (1, 1) and shape[2:] == t.shape[2:]:
        cols = t.reshape([t.shape[0], c_in, -1])
    else:
        cols = F.unfold(t.detach(), list(w.shape[2:]), layer._stride, layer._padding,
                        layer._dilation)
    out = paddle.matmul(w.reshape([c_out, -1]), cols).reshape(shape)
    return out if layer.bias is None else out + layer.bias.reshape([1, -1, 1, 1])


class Net(nn.Layer):
    """stem conv -> ReLU -> ``body`` (ends at the last conv's channel-wise ops) -> ``head``.

    ``convs``: attribute names of the conv layers the analyzer must report; ``fc``: the
    classifier layer (``nn.Linear`` or a 1x1 ``nn.Conv2D``). ``ref`` turns a trailing
    softmax off (the references need logits).
    """

    def __init__(self, width=4, c=6, softmax=False):
        super().__init__()
        self.stem = nn.Conv2D(C_IN, width, 3, padding=1)
        self.width, self.c, self.softmax, self.ref = width, c, softmax, False
        self.convs = ("conv",)
        self.fc_input_scale = 1.0

    def forward(self, x):
        logits = self.head(self.body(F.relu(self.stem(x))))
        return F.softmax(logits, axis=-1) if self.softmax and not self.ref else logits


class HswishFC(Net):
    """MobileNetV3-style: conv -> BN -> hardswish -> adaptive avg pool -> dropout -> FC."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(self.width, self.c, 3, padding=1, bias_attr=False)
        self.bn = nn.BatchNorm2D(self.c)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.drop = nn.Dropout(0.2, mode="downscale_in_infer")  # inference: Mul by 0.8
        self.fc = nn.Linear(self.c, CLASSES)
        self.fc_input_scale = 0.8  # folded into the classifier by onnxflat

    def body(self, h):
        return hardswish(self.bn(conv(self.conv, h)))

    def head(self, a):
        return self.fc(self.drop(flatten(self.pool(a))))


class HswishConvClassifier(HswishFC):
    """conv -> BN -> hardswish -> pool -> 1x1 conv classifier -> flatten."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Conv2D(self.c, CLASSES, 1)
        self.fc_input_scale = 1.0

    def head(self, a):
        return flatten(conv(self.fc, self.pool(a)))


class AvgPoolSoftmax(Net):
    """conv stride 2 -> ReLU -> AvgPool2D over the whole 4x4 map -> FC -> softmax."""

    def __init__(self):
        super().__init__(softmax=True)
        self.conv = nn.Conv2D(self.width, self.c, 3, stride=2, padding=1)
        self.fc = nn.Linear(self.c, CLASSES)

    def body(self, h):
        return F.relu(conv(self.conv, h))

    def head(self, a):
        return self.fc(flatten(F.avg_pool2d(a, kernel_size=HW // 2)))


class DepthwiseRelu6Mean(Net):
    """depthwise conv (multiplier 2) -> BN -> ReLU6 -> mean over H, W -> FC."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(self.width, 2 * self.width, 3, padding=1, groups=self.width)
        self.bn = nn.BatchNorm2D(2 * self.width)
        self.fc = nn.Linear(2 * self.width, CLASSES)

    def body(self, h):
        return relu6(self.bn(conv(self.conv, h)))

    def head(self, a):
        return self.fc(paddle.mean(a, axis=[2, 3]))


class SwishDilated(Net):
    """dilated conv -> swish -> adaptive avg pool -> flatten -> dropout -> FC."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(self.width, self.c, 3, padding=2, dilation=2)
        self.drop = nn.Dropout(0.3)  # default upscale_in_train: the identity at inference
        self.fc = nn.Linear(self.c, CLASSES)

    def body(self, h):
        return swish(conv(self.conv, h))

    def head(self, a):
        return self.fc(self.drop(flatten(F.adaptive_avg_pool2d(a, 1))))


class GeluResidual(SwishDilated):
    """conv -> + stem features -> GELU (erf) -> pool -> FC."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(self.width, self.width, 3, padding=1)
        self.fc = nn.Linear(self.width, CLASSES)

    def body(self, h):
        return F.gelu(conv(self.conv, h) + h)


class HardsigmoidGate(SwishDilated):
    """conv -> x * hardsigmoid(x) written out (as in PP-LCNet) -> pool -> FC."""

    def body(self, h):
        z = conv(self.conv, h)
        return z * hardsigmoid(z)


# Refusals (the tests assert the node and reason).

class MobileNetV3Head(HswishFC):
    """The real MobileNetV3 head: pool -> 1x1 conv -> hardswish -> dropout -> FC (an MLP)."""

    def __init__(self):
        super().__init__()
        self.last = nn.Conv2D(self.c, 8, 1)
        self.fc = nn.Linear(8, CLASSES)

    def head(self, a):
        h = hardswish(self.last(self.pool(a)))
        return self.fc(self.drop(flatten(h)))


class SEBlock(HswishFC):
    """conv -> hardswish -> squeeze-excitation (pool, 1x1 conv, ReLU, 1x1 conv,
    hardsigmoid, multiply) -> pool -> FC."""

    def __init__(self):
        super().__init__()
        self.se1 = nn.Conv2D(self.c, 2, 1)
        self.se2 = nn.Conv2D(2, self.c, 1)

    def body(self, h):
        a = hardswish(self.bn(conv(self.conv, h)))
        g = hardsigmoid(self.se2(F.relu(self.se1(self.pool(a)))))
        return a * g


class MaxPoolBeforeGap(AvgPoolSoftmax):
    """conv -> ReLU -> MaxPool2D -> global pool -> FC."""

    def body(self, h):
        return F.max_pool2d(F.relu(conv(self.conv, h)), 2)

    def head(self, a):
        return self.fc(flatten(F.adaptive_avg_pool2d(a, 1)))


CASES = [  # (name, class, opset, measured)
    ("hswish_bn_dropout_fc", HswishFC, 15, True),
    ("hswish_conv1x1_classifier", HswishConvClassifier, 11, True),
    ("avgpool_full_map_softmax", AvgPoolSoftmax, 16, True),
    ("depthwise_relu6_mean", DepthwiseRelu6Mean, 17, True),
    ("swish_dilated", SwishDilated, 14, True),
    ("gelu_residual", GeluResidual, 18, True),
    ("hardsigmoid_gate", HardsigmoidGate, 13, True),
    ("refuse_mobilenetv3_head", MobileNetV3Head, 13, False),
    ("refuse_se_block", SEBlock, 13, False),
    ("refuse_maxpool_before_gap", MaxPoolBeforeGap, 13, False),
]

# Real paddle.vision architectures (paddle's own random init), exported for inspect only.
# MobileNetV3's head after the pooling is 1x1 conv -> hardswish -> dropout -> FC: an MLP.
VISION = [  # (name, builder, opset, input size)
    ("refuse_vision_mobilenet_v3_small",
     lambda: paddle.vision.models.mobilenet_v3_small(scale=0.1, num_classes=CLASSES), 13, 32),
]


def randomize(model: nn.Layer, seed: int) -> None:
    """Non-trivial weights: biases and BN statistics non-zero, logits not saturated."""
    rng = np.random.default_rng(seed)
    state, layers = {}, dict(model.named_sublayers())
    for name, v in model.state_dict().items():
        owner, kind = name.rsplit(".", 1)
        shape = tuple(v.shape)
        if isinstance(layers[owner], nn.BatchNorm2D):
            val = {"weight": lambda s: 0.5 + rng.random(s),
                   "bias": lambda s: rng.normal(0, 0.3, s),
                   "_mean": lambda s: rng.normal(0, 0.2, s),
                   "_variance": lambda s: 0.5 + rng.random(s)}[kind](shape)
        elif kind == "weight":
            fan_in = shape[0] if len(shape) == 2 else int(np.prod(shape[1:]))
            val = rng.normal(0, 1.6 / np.sqrt(fan_in), shape)
        else:
            val = rng.normal(0, 0.3, shape)
        state[name] = paddle.to_tensor(val.astype(np.float32))
    model.set_state_dict(state)


def export(model: nn.Layer, opset: int, path: Path, hw: int = HW) -> onnx.ModelProto:
    spec = [paddle.static.InputSpec([None, C_IN, hw, hw], "float32", "x")]
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "model")
        paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), prefix,
                        input_spec=spec)
        program = prefix + (".json" if Path(prefix + ".json").exists() else ".pdmodel")
        paddle2onnx.export(program, prefix + ".pdiparams", str(path), opset_version=opset,
                           auto_upgrade_opset=False)
    proto = onnx.load(path)
    assert proto.opset_import[0].version == opset, proto.opset_import
    return proto


def get(model: nn.Layer, name: str):
    for part in name.split("."):
        model = getattr(model, part)
    return model


def hessian_measures(model, x, y, param, scale, classifier=False):
    """(trace, kappa, ||w||^2) w.r.t. ``s * param`` (``s`` along the first axis); rows are
    the first axis (conv filters, 1x1-conv classes), or the columns of a Linear weight."""
    onehot = F.one_hot(y, CLASSES)
    w = param
    z = model(x)
    z = z - float(z.numpy().max())  # a constant shift: log-softmax unchanged
    loss = -((z - paddle.log(paddle.exp(z).sum(axis=1, keepdim=True))) * onehot).sum() / len(y)
    (g,) = paddle.grad(loss, w, create_graph=True)
    g = g.flatten()
    rows = [paddle.grad(g[i], w, retain_graph=True, allow_unused=True)[0]
            for i in range(g.shape[0])]  # None: the row does not depend on w (it is 0)
    h = np.stack([np.zeros(w.size) if r is None else r.numpy().reshape(-1) for r in rows])
    w = param.numpy()
    s = np.repeat(scale, w.size // w.shape[0])  # scale acts along the first axis
    h = h / s[:, None] / s[None, :]
    w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    if classifier and w.ndim == 2:  # nn.Linear (F, C): classes are columns
        f, c = w.shape
        return trace_kappa(h.reshape(f, c, f, c).transpose(1, 0, 3, 2), w.T)
    c = w.shape[0]
    return trace_kappa(h.reshape(c, -1, c, w[0].size), w.reshape(c, -1))


def references(cls, model32, proto, x, y) -> dict:
    global REF
    paddle.set_default_dtype("float64")
    try:
        model = cls()
    finally:
        paddle.set_default_dtype("float32")
    model.set_state_dict({k: paddle.to_tensor(v.numpy().astype(np.float64))
                          for k, v in model32.state_dict().items()})
    model.eval()
    model.ref = True
    x64, y64 = paddle.to_tensor(x.astype(np.float64)), paddle.to_tensor(y)
    with paddle.no_grad():
        logits = model(x64)
        REF = True
        same = model(x64)
    assert np.allclose(same.numpy(), logits.numpy(), rtol=1e-12, atol=1e-12)
    paddle.framework.core.set_prim_eager_enabled(True)
    out = {"loss": float(F.cross_entropy(logits, y64)),
           "accuracy": float((logits.numpy().argmax(1) == y).mean()), "layers": []}
    for name in model.convs:
        conv = get(model, name)
        node, s = stored_conv(proto, get(model32, name).weight.numpy())
        tr, kappa, k2 = hessian_measures(model, x64, y64, conv.weight, s)
        out["layers"].append({"paddle_layer": name, "onnx_conv": node, "trace": tr,
                              "kappa": kappa, "kappa_layerwise": k2 * tr,
                              "bn_folded_into_kernel": bool(not np.allclose(s, 1.0))})
    fc = model.fc.weight
    s = np.full(fc.shape[0], model.fc_input_scale)
    assert fc.ndim == 2 or model.fc_input_scale == 1.0
    tr, kappa, _ = hessian_measures(model, x64, y64, fc, s, classifier=True)
    out["classifier"] = {"trace": tr, "kappa": kappa, "input_scale_folded": model.fc_input_scale}
    paddle.framework.core.set_prim_eager_enabled(False)
    REF = False
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1]
                                         / "tests" / "fixtures" / "paddle"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paddle.seed(0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, C_IN, HW, HW)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=N).astype(np.int64)
    np.savez(out / "data.npz", x=x, y=y)
    refs = {"generator": "tools/make_paddle_fixtures.py", "paddlepaddle": paddle.__version__,
            "paddle2onnx": paddle2onnx.__version__, "cases": {}}
    for i, (name, cls, opset, measured) in enumerate(CASES):
        model = cls()
        randomize(model, seed=200 + i)
        model.eval()
        proto = export(model, opset, out / f"{name}.onnx")
        entry = {"file": f"{name}.onnx", "opset": opset}
        if measured:
            entry.update(references(cls, model, proto, x, y))
        refs["cases"][name] = entry
        print(name, {k: v for k, v in entry.items() if k in ("loss", "classifier")})
    for name, build, opset, hw in VISION:
        model = build()
        model.eval()
        export(model, opset, out / f"{name}.onnx", hw)
        refs["cases"][name] = {"file": f"{name}.onnx", "opset": opset, "input_hw": hw}
    (out / "references.json").write_text(json.dumps(refs, indent=1) + "\n")


if __name__ == "__main__":
    main()
