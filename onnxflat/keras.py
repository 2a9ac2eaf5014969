"""Keras entry point: measure a ``keras.Model`` (NHWC) where it is trained, through tf2onnx.

``measure(model, data)`` converts the model with tf2onnx (batch axis dynamic, input in the
model's own NHWC layout) in memory and runs the same pipeline as ``onnxflat measure`` on the
converted file; :class:`FlatnessCallback` tracks it along ``model.fit`` (see
:mod:`onnxflat.track`). Needs TensorFlow/Keras and tf2onnx, imported with this module only.
"""

from __future__ import annotations

import os

import onnx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
try:
    import keras
    import tensorflow as tf
    import tf2onnx
except ImportError:
    raise ImportError("onnxflat.keras needs TensorFlow and tf2onnx: pip install tensorflow "
                      "tf2onnx") from None

from . import api, track
from .frameworks import measure_export, split, subset_arrays
from .measures import Result


def export(model, *, opset: int | None = None, path=None) -> onnx.ModelProto:
    """The tf2onnx conversion of ``model`` (one input ``x``, its shape with a free batch
    axis, so NHWC for Keras convs); ``opset``: tf2onnx's default when None; ``path``: also
    save the file there."""
    (inp,) = model.inputs
    spec = (tf.TensorSpec((None, *inp.shape[1:]), inp.dtype or tf.float32, name="x"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    if path is not None:
        onnx.save(proto, path)
    return proto


def measure(model, data, y=None, *, opset: int | None = None,
            batch_size: int = api.DEFAULT_BATCH_SIZE, kappa: bool = True, device: str = "auto",
            threads: int | None = None, per_sample: bool = False, name: str | None = None,
            save=None) -> Result:
    """Exact flatness of a Keras model's head on labelled data: inputs ``(N, H, W, C)``
    with integer labels ``y``, or, with ``y`` None, an iterable of ``(x_batch, y_batch)``
    (a ``tf.data.Dataset``). ``name`` is ``Result.model`` (default ``keras:<model name>``);
    ``save``: also write the converted file there."""
    _, batches = split(data, y)
    proto = export(model, opset=opset, path=save)
    return measure_export(proto, data, y, batches, name or f"keras:{model.name}",
                          batch_size=batch_size, kappa=kappa, device=device, threads=threads,
                          per_sample=per_sample)


class FlatnessCallback(keras.callbacks.Callback):
    """Measures the model at the end of every ``every``-th epoch (0, k, 2k, ...) on a fixed,
    seeded ``subset`` of ``x``/``y`` and appends a row to ``path`` (.jsonl / .csv: every
    measure with its standard error, the cost in seconds, and the epoch's ``logs`` such as
    ``loss`` and ``val_accuracy``, written ``metric.loss`` where a measure has that name).
    The measures are also added to ``logs`` as ``onnxflat/<name>``, so callbacks after this
    one in the list (``TensorBoard``, ``CSVLogger``) record them. ``model.fit(...,
    initial_epoch=E)`` after a restart appends to the same file. Cost per measured epoch:
    one tf2onnx conversion plus one inference pass over the subset."""

    def __init__(self, x, y, path, *, every: int = 1, subset: int | None = 1024, seed: int = 0,
                 opset: int | None = None, **measure_options):
        super().__init__()
        xs, ys = subset_arrays(x, y, subset, seed)
        self.tracker = track.Tracker(
            lambda model, xx, yy: measure(model, xx, yy, opset=opset, **measure_options),
            xs, ys, path, every=every)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        row = self.tracker(self.model, epoch, **logs)
        if row is not None:
            logs.update({f"onnxflat/{k}": v for k, v in track.result_row(
                self.tracker.last).items() if v is not None})
