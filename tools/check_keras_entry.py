"""Check onnxflat.keras in a TensorFlow venv (TensorFlow cannot share the test venv with
torch): ``measure`` equals the CLI on the tf2onnx file for three Keras models (arrays and a
tf.data.Dataset), and ``FlatnessCallback`` writes one row per measured epoch during
``model.fit``, appending after a restart (``initial_epoch``). Writes docs/keras-entry-check.md
(commit it); exits 1 if a check fails.

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install 'tensorflow-cpu==2.21.*' \\
        'tf2onnx==1.17.*' numpy onnx onnxruntime click array-api-compat scipy tqdm threadpoolctl
    PYTHONPATH=. /tmp/tfvenv/bin/python tools/check_keras_entry.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers as L  # noqa: E402

import onnxflat  # noqa: E402
import onnxflat.keras as ofk  # noqa: E402
from onnxflat.track import read_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HW, C_IN, CLASSES, N = 8, 3, 5, 48
TOL = 1e-6


def build(kind: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((HW, HW, C_IN))
    h = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    if kind == "relu":
        h = L.Conv2D(6, 3, padding="same", activation="relu")(h)
        out = L.Dense(CLASSES)(L.GlobalAveragePooling2D()(h))
    elif kind == "bn_swish":
        h = L.Activation("swish")(L.BatchNormalization()(L.Conv2D(6, 3, strides=2)(h)))
        out = L.Dense(CLASSES)(L.GlobalAveragePooling2D()(h))
    else:  # a Dense softmax classifier, tanh
        h = L.Conv2D(6, 1, activation="tanh")(h)
        out = L.Dense(CLASSES, activation="softmax")(L.GlobalAveragePooling2D()(h))
    model = keras.Model(x, out, name=kind)
    loss = "sparse_categorical_crossentropy" if kind == "softmax_tanh" else \
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, metrics=["accuracy"])
    return model


def numbers(doc: dict) -> np.ndarray:
    out = [doc["loss"], doc["accuracy"], doc["classifier"]["trace"], doc["classifier"]["kappa"]]
    for layer in doc["layers"]:
        out += [layer["trace"], layer["kappa"], layer["stderr"]["kappa"]]
    return np.array(out)


def main() -> int:
    # the briefly trained models are near chance on purpose-made data: keep those warnings quiet
    __import__("logging").getLogger("onnxflat").setLevel("ERROR")
    rng = np.random.default_rng(0)
    y = rng.integers(0, CLASSES, N)  # learnable: one random pattern per class, plus noise
    patterns = rng.standard_normal((CLASSES, HW, HW, C_IN))
    x = (patterns[y] + 0.5 * rng.standard_normal((N, HW, HW, C_IN))).astype(np.float32)
    lines, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "d.npz", x=x, y=y)
        lines += ["## measure vs the CLI on the tf2onnx file", "",
                  "| model | layers | max relative difference (arrays) | (tf.data batches) |",
                  "| --- | --- | --- | --- |"]
        for kind in ("relu", "bn_swish", "softmax_tanh"):
            model = build(kind)
            model.fit(x, y, epochs=3, batch_size=16, verbose=0)
            res = ofk.measure(model, x, y, save=tmp / f"{kind}.onnx")
            batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
            res_ds = ofk.measure(model, batches)
            cli = subprocess.run([sys.executable, "-m", "onnxflat", "measure",
                                  str(tmp / f"{kind}.onnx"), "--data", str(tmp / "d.npz"),
                                  "--json", str(tmp / "r.json"), "-q"],
                                 capture_output=True, text=True)
            if cli.returncode:
                raise SystemExit(f"CLI failed on {kind}: {cli.stderr}")
            ref = numbers(json.loads((tmp / "r.json").read_text()))
            errs = [float(np.max(np.abs(numbers(r.to_dict()) - ref) / np.abs(ref)))
                    for r in (res, res_ds)]
            ok &= max(errs) <= TOL and res.n_samples == N
            lines.append(f"| {kind} | {len(res.layers)} | {errs[0]:.1e} | {errs[1]:.1e} |")

        run = tmp / "run.jsonl"
        model = build("relu")
        hist = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[
            ofk.FlatnessCallback(x, y, run, subset=32, seed=1)])
        first = run.read_text()
        epochs_first = [r["epoch"] for r in read_run(run)]
        logged = "onnxflat/layer0.kappa" in hist.history
        model.fit(x, y, epochs=5, initial_epoch=3, batch_size=16, verbose=0, callbacks=[
            ofk.FlatnessCallback(x, y, run, every=2, subset=32, seed=1)])
        rows = read_run(run)
        appended = run.read_text().startswith(first)
        last = rows[-1]
        idx = np.sort(np.random.default_rng(1).choice(N, 32, replace=False))
        direct = ofk.measure(model, x[idx], y[idx]).layers[0].kappa
        same = abs(last["layer0.kappa"] - direct) <= 1e-12 * abs(direct)
        ok &= (epochs_first == [0, 1, 2] and [r["epoch"] for r in rows] == [0, 1, 2, 4]
               and appended and logged and "metric.loss" in last and same)
        lines += ["", "## FlatnessCallback during model.fit", "",
                  f"- first fit, epochs 0-2, every=1: rows for epochs {epochs_first}; "
                  f"`onnxflat/layer0.kappa` in the History: {logged}",
                  f"- resumed fit (initial_epoch=3, epochs=5, every=2): rows for epochs "
                  f"{[r['epoch'] for r in rows]}; file appended, not rewritten: {appended}",
                  f"- last row's kappa equals onnxflat.keras.measure on the same subset "
                  f"(1e-12): {same}; seconds per measured epoch: "
                  f"{', '.join(str(r['seconds']) for r in rows)}"]
    text = (f"# onnxflat.keras check\n\nGenerated by `PYTHONPATH=. python "
            f"tools/check_keras_entry.py` (keras {keras.__version__}, tensorflow "
            f"{tf.__version__}, tf2onnx {__import__('tf2onnx').__version__}, onnxflat "
            f"{onnxflat.__version__}) in a TensorFlow venv; the test suite cannot import "
            f"TensorFlow beside torch. All checks passed: {ok}.\n\n" + "\n".join(lines) + "\n")
    (ROOT / "docs" / "keras-entry-check.md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
