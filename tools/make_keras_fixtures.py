"""Export small Keras CNNs with tf2onnx and compute reference values with TensorFlow autograd.

Writes one folder per suite, tests/fixtures/keras/ (2-D CNNs, NHWC images) and
tests/fixtures/keras_conv1d/ (1-D CNNs, NLC sequences: Conv1D -> GlobalAveragePooling1D ->
Dense, which tf2onnx writes as Unsqueeze -> a 1 x k Conv -> Squeeze): one ``<case>.onnx``
per model, ``data.npz`` (the float32 channel-last
inputs ``x`` and int64 labels ``y`` shared by every case; a case exported with tf2onnx's
``inputs_as_nchw`` takes them transposed) and ``references.json`` (for each
measured case, the Hessian trace / kappa of the mean cross-entropy w.r.t. each head conv
kernel *as stored in the ONNX file* and w.r.t. the Dense kernel, and the mean loss;
for refusal cases only the file). The test suite reads these files and does not need TF.

References are TensorFlow float64: the model is rebuilt with float64 weights (the same
float32 values), the loss is ``sparse_softmax_cross_entropy_with_logits`` on the logits
(a Dense softmax activation is switched off for the reference), and the full Hessian
w.r.t. one kernel comes from nested ``tf.GradientTape`` (jacobian of the gradient).
Filters are the last axis of a Keras kernel ``(*k, C_in/g, C_out)`` (a depthwise
kernel ``(kh, kw, C_in, m)`` has filter ``c * m + k``, the ONNX channel order); for the
Dense kernel ``(F, C)`` the rows of the classifier are its columns. tf2onnx folds
per-channel scales into the conv (e.g. a BatchNormalization right after it); the
reference then differentiates the stored kernel ``K_f = K * s`` through ``K = K_f / s``,
with ``s`` read off the file and checked to be per-filter.

Needs TensorFlow and tf2onnx (not test dependencies), e.g. in a separate venv:

    python -m venv /work/tfvenv && /work/tfvenv/bin/pip install 'tensorflow-cpu==2.21.*' \
        'tf2onnx==1.17.*' numpy onnx
    /work/tfvenv/bin/python tools/make_keras_fixtures.py [--suite keras_conv1d] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from fixture_refs import stored_conv, trace_kappa  # noqa: E402
from keras import layers as L  # noqa: E402

HW, C_IN, CLASSES, N = 8, 3, 5, 24
SEQ, C_SEQ = 16, 2  # the 1-D suite's sequences: (N, SEQ, C_SEQ)


def stem(x, width=4):
    return L.Conv2D(width, 3, padding="same", activation="relu", name="stem")(x)


def head(h, ref, softmax=False, keepdims=False):
    """GAP -> Dense; ``ref`` switches a softmax activation off (the reference needs logits)."""
    g = L.GlobalAveragePooling2D(keepdims=keepdims, name="gap")(h)
    if keepdims:
        g = L.Flatten(name="flatten")(g)
    return L.Dense(CLASSES, activation="softmax" if softmax and not ref else None, name="fc")(g)


def erf_gelu(x):
    return 0.5 * x * (1.0 + tf.math.erf(x / np.sqrt(2.0).astype(x.dtype.as_numpy_dtype)))


# Measured cases: each builder maps (input, ref) -> output; ``convs`` are the Keras layers
# whose kernels the analyzer must report (in graph order).

def conv_bn_relu(x, ref):
    h = L.Conv2D(6, 3, padding="same", use_bias=False, name="head_conv")(stem(x))
    return head(L.ReLU()(L.BatchNormalization(name="bn")(h)), ref)


def relu6_dense_softmax(x, ref):
    h = L.Conv2D(6, 3, padding="same", name="head_conv")(stem(x))
    return head(L.ReLU(max_value=6.0)(h), ref, softmax=True)


def swish_stride2_same(x, ref):
    h = L.Conv2D(6, 3, strides=2, padding="same", activation="swish", name="head_conv")(stem(x))
    return head(h, ref)


def gelu_tanh_keepdims(x, ref):
    h = L.Conv2D(6, 3, padding="same", name="head_conv")(stem(x))
    h = L.Activation(lambda t: keras.activations.gelu(t, approximate=True))(h)
    return head(h, ref, keepdims=True)


def dilated_valid_bn_after_relu(x, ref):
    h = L.Conv2D(6, 3, dilation_rate=2, padding="valid", name="head_conv")(stem(x))
    return head(L.BatchNormalization(name="bn")(L.ReLU()(h)), ref)


def depthwise_bn_relu6(x, ref):
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="head_conv")(stem(x))
    h = L.ReLU(max_value=6.0)(L.BatchNormalization(name="bn")(h))
    return head(h, ref, softmax=True)


def leaky_stride2_valid(x, ref):
    # (Keras grouped convs compile to a function call tf2onnx 1.17 cannot convert.)
    h = L.Conv2D(6, 3, strides=2, padding="valid", name="head_conv")(stem(x))
    return head(L.LeakyReLU(negative_slope=0.1)(h), ref)


def separable_relu(x, ref):
    # SeparableConv2D = depthwise 3x3 -> pointwise 1x1: the head conv is the pointwise one
    h = L.SeparableConv2D(6, 3, padding="same", name="head_conv")(stem(x))
    return head(L.ReLU()(h), ref)


def residual_add(x, ref):
    s = stem(x, width=6)
    h = L.Conv2D(6, 3, padding="same", name="head_conv")(s)
    return head(L.ReLU()(L.Add()([h, s])), ref)


def concat_branches(x, ref):
    s = stem(x)
    a = L.Conv2D(4, 1, activation="relu", name="head_conv_a")(s)
    b = L.Conv2D(3, 3, padding="same", activation="sigmoid", name="head_conv_b")(s)
    return head(L.Concatenate(axis=-1)([a, b]), ref)


def erf_gelu_transposes(x, ref):
    h = L.Conv2D(6, 3, padding="same", name="head_conv")(stem(x))
    return head(L.Activation(erf_gelu)(h), ref)


# 1-D CNNs (suite keras_conv1d)

def stem1d(x):
    return L.Conv1D(4, 3, padding="same", activation="relu", name="stem")(x)


def head1d(h, ref, softmax=False):
    g = L.GlobalAveragePooling1D(name="gap")(h)
    return L.Dense(CLASSES, activation="softmax" if softmax and not ref else None, name="fc")(g)


def conv1d_bn_relu(x, ref):
    h = L.Conv1D(6, 3, padding="same", use_bias=False, name="head_conv")(stem1d(x))
    return head1d(L.ReLU()(L.BatchNormalization(name="bn")(h)), ref)


def conv1d_swish_stride2_softmax(x, ref):
    h = L.Conv1D(6, 3, strides=2, padding="same", activation="swish", name="head_conv")(
        stem1d(x))
    return head1d(h, ref, softmax=True)


def conv1d_causal_dilated_gelu_tanh(x, ref):
    # (Keras' exact GELU uses Erfc, which tf2onnx 1.17 cannot convert.)
    h = L.Conv1D(6, 3, dilation_rate=2, padding="causal", name="head_conv")(stem1d(x))
    h = L.Activation(lambda t: keras.activations.gelu(t, approximate=True))(h)
    return head1d(h, ref)


def conv1d_residual_leaky(x, ref):
    s = L.Conv1D(6, 3, padding="same", activation="relu", name="stem")(x)
    h = L.Conv1D(6, 5, padding="same", name="head_conv")(s)
    return head1d(L.LeakyReLU(negative_slope=0.1)(L.Add()([h, s])), ref)
def dense_pointwise_residual(x, ref):
    # Dense on a feature map: tf2onnx's Tensordot (Reshape to rows -> MatMul -> Reshape back);
    # the last Dense is the head layer, the first one's output its patches
    s = stem(x, width=6)
    h = L.Dense(6, name="head_conv")(L.Dense(12, activation="relu", name="pw1")(s))
    return head(L.ReLU()(L.Add()([h, s])), ref)


def dense_pointwise_swish(x, ref):
    h = L.Dense(12, activation="relu", name="pw1")(stem(x))
    return head(L.Dense(6, activation="swish", name="head_conv")(h), ref)


# Refusals: the analyzer must name a node and a reason (asserted by the tests).

def maxpool_before_gap(x, ref):
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="head_conv")(stem(x))
    return head(L.MaxPooling2D(2)(h), ref)


def mlp_after_gap(x, ref):
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="head_conv")(stem(x))
    g = L.GlobalAveragePooling2D()(h)
    return L.Dense(CLASSES)(L.Dense(8, activation="relu", name="hidden")(g))


def flatten_dense(x, ref):
    h = L.Conv2D(6, 3, strides=2, padding="same", activation="relu", name="head_conv")(stem(x))
    return L.Dense(CLASSES, name="fc")(L.Flatten()(h))


def global_max_pool(x, ref):
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="head_conv")(stem(x))
    return L.Dense(CLASSES, name="fc")(L.GlobalMaxPooling2D()(h))


def squeeze_excitation(x, ref):
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="head_conv")(stem(x))
    g = L.GlobalAveragePooling2D(keepdims=True)(h)
    g = L.Conv2D(2, 1, activation="relu")(g)
    g = L.Conv2D(6, 1, activation="sigmoid")(g)
    return head(L.Multiply()([h, g]), ref)


NO_TRANSPOSE_OPT = "no_transpose_optimizer"
INPUTS_AS_NCHW = "inputs_as_nchw"  # tf2onnx --inputs-as-nchw: the file takes NCHW input
FIXED_BATCH = "fixed_batch_8"


@dataclass
class Case:
    name: str
    build: callable
    opset: int
    convs: tuple[str, ...] = ("head_conv",)
    measured: bool = True
    options: tuple[str, ...] = field(default_factory=tuple)


CASES = [
    Case("conv_bn_relu", conv_bn_relu, 13),
    Case("relu6_dense_softmax", relu6_dense_softmax, 17),
    Case("swish_stride2_same", swish_stride2_same, 13),
    Case("gelu_tanh_keepdims", gelu_tanh_keepdims, 18),
    Case("dilated_valid_bn_after_relu", dilated_valid_bn_after_relu, 15),
    Case("depthwise_bn_relu6", depthwise_bn_relu6, 13),
    Case("leaky_stride2_valid", leaky_stride2_valid, 17),
    Case("residual_add", residual_add, 18),
    Case("concat_branches", concat_branches, 13, convs=("head_conv_a", "head_conv_b")),
    Case("erf_gelu_transposes", erf_gelu_transposes, 13, options=(NO_TRANSPOSE_OPT,)),
    Case("erf_gelu_transposes_op18", erf_gelu_transposes, 18, options=(NO_TRANSPOSE_OPT,)),
    Case("bn_after_relu_nhwc", dilated_valid_bn_after_relu, 17, options=(NO_TRANSPOSE_OPT,)),
    Case("concat_branches_nhwc", concat_branches, 15, convs=("head_conv_a", "head_conv_b"),
         options=(NO_TRANSPOSE_OPT,)),
    Case("swish_inputs_as_nchw", swish_stride2_same, 17, options=(INPUTS_AS_NCHW,)),
    Case("separable_relu", separable_relu, 15),
    Case("relu6_fixed_batch", relu6_dense_softmax, 13, options=(FIXED_BATCH, NO_TRANSPOSE_OPT)),
    Case("refuse_maxpool_before_gap", maxpool_before_gap, 13, measured=False),
    Case("refuse_mlp_after_gap", mlp_after_gap, 17, measured=False),
    Case("refuse_flatten_dense", flatten_dense, 13, measured=False),
    Case("refuse_global_max_pool", global_max_pool, 13, measured=False),
    Case("refuse_squeeze_excitation", squeeze_excitation, 13, measured=False),
    Case("dense_pointwise_residual", dense_pointwise_residual, 13),
    Case("dense_pointwise_swish_nhwc", dense_pointwise_swish, 18, options=(NO_TRANSPOSE_OPT,)),
]


CASES_1D = [
    Case("conv1d_bn_relu", conv1d_bn_relu, 13),
    Case("conv1d_swish_stride2_softmax", conv1d_swish_stride2_softmax, 17),
    Case("conv1d_causal_dilated_gelu_tanh", conv1d_causal_dilated_gelu_tanh, 15),
    Case("conv1d_residual_leaky", conv1d_residual_leaky, 18),
    Case("conv1d_bn_relu_nlc", conv1d_bn_relu, 13, options=(NO_TRANSPOSE_OPT,)),
]
# suite (folder under tests/fixtures) -> (cases, one sample's channel-last shape)
SUITES = {"keras": (CASES, (HW, HW, C_IN)), "keras_conv1d": (CASES_1D, (SEQ, C_SEQ))}


def build(case: Case, dtype: str, ref: bool, shape: tuple[int, ...]) -> keras.Model:
    keras.config.set_floatx(dtype)
    try:
        x = keras.Input(shape, name="input")
        return keras.Model(x, case.build(x, ref), name=case.name)
    finally:
        keras.config.set_floatx("float32")


def randomize(model: keras.Model, seed: int) -> None:
    """Non-trivial weights: every bias and BN statistic non-zero, logits not saturated."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        kind, shape = v.path.split("/")[-1], tuple(v.shape)
        if kind in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            fan_in = int(np.prod(shape[:-1]))
            val = rng.normal(0, 1.6 / np.sqrt(fan_in), shape)
        elif kind == "bias":
            val = rng.normal(0, 0.3, shape)
        elif kind == "gamma":
            val = 0.5 + rng.random(shape)
        elif kind == "beta":
            val = rng.normal(0, 0.3, shape)
        elif kind == "moving_mean":
            val = rng.normal(0, 0.2, shape)
        elif kind == "moving_variance":
            val = 0.5 + rng.random(shape)
        else:
            raise ValueError(f"unexpected weight {v.path}")
        v.assign(val.astype(np.float32))


def export(model: keras.Model, case: Case, shape: tuple[int, ...]) -> onnx.ModelProto:
    batch = 8 if FIXED_BATCH in case.options else None
    spec = (tf.TensorSpec((batch, *shape), tf.float32, name="input"),)
    nchw = ["input"] if INPUTS_AS_NCHW in case.options else None
    optimizers = None
    if NO_TRANSPOSE_OPT in case.options:
        from tf2onnx import optimizer
        optimizers = {k: v for k, v in optimizer._get_optimizers().items()
                      if k != "optimize_transpose"}
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=case.opset,
                                          optimizers=optimizers, inputs_as_nchw=nchw)
    proto.producer_version = f"{tf2onnx.__version__} (tensorflow {tf.__version__})"
    return proto


def filters(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """Keras kernel -> (d, C_out): column j is filter j in the ONNX channel order."""
    if depthwise:
        kh, kw, ci, m = kernel.shape
        return kernel.reshape(kh * kw, ci * m)
    return kernel.reshape(-1, kernel.shape[-1])


def onnx_layout(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """Keras kernel -> ONNX Conv weight (C_out, C_in/g, *k)."""
    if depthwise:
        kh, kw, ci, m = kernel.shape
        return kernel.reshape(kh, kw, ci * m).transpose(2, 0, 1)[:, None]
    return np.moveaxis(kernel, (-1, -2), (0, 1))


def hessian_measures(model64, x, y, var, scale, depthwise):
    """(trace, kappa) of the Hessian of the mean CE w.r.t. the stored kernel K_f = s * var."""
    trainable = [v.value for v in model64.trainable_variables]
    fixed = [v.value for v in model64.non_trainable_variables]
    idx = [i for i, v in enumerate(model64.trainable_variables) if v is var][0]
    s = tf.constant(scale.reshape(var.shape[-2:]) if depthwise else scale, tf.float64)
    w_f = tf.constant(var.numpy() * s.numpy())

    def loss(wf):
        vals = list(trainable)
        vals[idx] = wf / s
        logits, _ = model64.stateless_call(vals, fixed, x, training=False)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))

    with tf.GradientTape() as outer:
        outer.watch(w_f)
        with tf.GradientTape() as inner:
            inner.watch(w_f)
            value = loss(w_f)
        grad = inner.gradient(value, w_f)
    h = outer.jacobian(grad, w_f).numpy()
    wf = filters(w_f.numpy(), depthwise)
    d, c = wf.shape
    return trace_kappa(h.reshape(d, c, d, c).transpose(1, 0, 3, 2), wf.T)


def references(case: Case, model32: keras.Model, proto: onnx.ModelProto, x, y) -> dict:
    model64 = build(case, "float64", ref=True, shape=x.shape[1:])
    model64.set_weights([w.astype(np.float64) for w in model32.get_weights()])
    x64, y64 = tf.constant(x, tf.float64), tf.constant(y)
    logits = model64(x64, training=False).numpy()
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    out = {"loss": float(-logp[np.arange(len(y)), y].mean()),
           "accuracy": float((logits.argmax(1) == y).mean()), "layers": []}
    for name in case.convs:
        layer = model64.get_layer(name)
        depthwise = isinstance(layer, L.DepthwiseConv2D)
        kind = "pointwise_kernel" if isinstance(layer, L.SeparableConv2D) else "kernel"
        var = getattr(layer, kind)
        kernel = getattr(model32.get_layer(name), kind).numpy()
        if isinstance(layer, L.Dense):  # on a feature map: a 1x1 conv (a MatMul in the file)
            kernel = kernel[None, None]
        kernel = onnx_layout(kernel, depthwise)
        node, s = stored_conv(proto, kernel)
        tr, kappa, k2 = hessian_measures(model64, x64, y64, var, s, depthwise)
        out["layers"].append({"keras_layer": name, "onnx_conv": node, "trace": tr,
                              "kappa": kappa, "kappa_layerwise": k2 * tr,
                              "bn_folded_into_kernel": bool(not np.allclose(s, 1.0))})
    fc = model64.get_layer("fc").kernel
    tr, kappa, _ = hessian_measures(model64, x64, y64, fc, np.ones(fc.shape[-1]), False)
    out["classifier"] = {"trace": tr, "kappa": kappa}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", choices=sorted(SUITES), action="append",
                    help="suite(s) to write (default: all)")
    ap.add_argument("--out", help="output folder (one suite; default tests/fixtures/SUITE)")
    args = ap.parse_args()
    suites = args.suite or sorted(SUITES)
    if args.out and len(suites) != 1:
        ap.error("--out needs exactly one --suite")
    for suite in suites:
        out = Path(args.out) if args.out else (
            Path(__file__).resolve().parents[1] / "tests" / "fixtures" / suite)
        write_suite(*SUITES[suite], out)


def write_suite(cases: list[Case], shape: tuple[int, ...], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, *shape)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=N).astype(np.int64)
    np.savez(out / "data.npz", x=x, y=y)
    refs = {"generator": "tools/make_keras_fixtures.py", "tensorflow": tf.__version__,
            "keras": keras.__version__, "tf2onnx": tf2onnx.__version__, "cases": {}}
    for i, case in enumerate(cases):
        model = build(case, "float32", ref=False, shape=shape)
        randomize(model, seed=100 + i)
        proto = export(model, case, shape)
        onnx.checker.check_model(proto)
        onnx.save(proto, out / f"{case.name}.onnx")
        entry = {"file": f"{case.name}.onnx", "opset": case.opset,
                 "tf2onnx_options": list(case.options),
                 "input_layout": "NCHW" if INPUTS_AS_NCHW in case.options else
                 {2: "NLC", 3: "NHWC"}[len(shape)]}
        if case.measured:
            entry.update(references(case, model, proto, x, y))
        refs["cases"][case.name] = entry
        print(case.name, {k: v for k, v in entry.items() if k in ("loss", "classifier")})
    (out / "references.json").write_text(json.dumps(refs, indent=1) + "\n")


if __name__ == "__main__":
    main()
