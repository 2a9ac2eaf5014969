"""PyTorch entry point: measure an ``nn.Module`` where it is trained.

``measure(model, data)`` exports the module to ONNX in memory (TorchScript or dynamo
exporter, batch axis dynamic) and runs the same pipeline as ``onnxflat measure`` on that
export, so it returns the same :class:`~onnxflat.measures.Result` as the CLI on the exported
file. Cost: one export plus one inference pass over the data. torch is imported on use only;
it is never a dependency of the core.
"""

from __future__ import annotations

import io
import itertools
import logging
import warnings

import numpy as np
import onnx

from . import api
from .errors import OnnxflatError
from .frameworks import measure_export, split, subset_arrays
from .measures import Result

EXPORTERS = ("torchscript", "dynamo")


def _torch():
    try:
        import torch
    except ImportError:
        raise OnnxflatError("onnxflat.torch needs PyTorch (pip install torch)") from None
    return torch


def export(model, example, *, exporter: str = "torchscript", opset: int | None = None,
           path=None) -> onnx.ModelProto:
    """The ONNX model of ``model`` in eval mode (its training mode is restored afterwards),
    traced on ``example`` ``(B, ...)`` (a tensor on the model's device), input ``x`` with a
    dynamic batch axis. ``exporter``: 'torchscript' or 'dynamo'; ``opset``: the exporter's
    default when None; ``path``: also save the file there."""
    torch = _torch()
    if exporter not in EXPORTERS:
        raise OnnxflatError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if not torch.is_tensor(example):
        example = torch.as_tensor(np.asarray(example))
    if example.shape[0] == 1:  # torch.export specialises a dimension of size 1
        example = example.repeat(2, *([1] * (example.ndim - 1)))
    params = next(itertools.chain(model.parameters(), model.buffers()), None)
    if params is not None:
        example = example.to(params.device)
    training = model.training
    model.eval()
    quiet = logging.getLogger("torch.onnx")  # the dynamo exporter's notes on absent libraries
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                prog = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                         input_names=["x"], opset_version=opset,
                                         dynamic_shapes=({0: torch.export.Dim("batch")},))
                proto = prog.model_proto
            else:
                buf = io.BytesIO()
                torch.onnx.export(model, (example,), buf, dynamo=False, input_names=["x"],
                                  output_names=["logits"], opset_version=opset,
                                  dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
                proto = onnx.load_from_string(buf.getvalue())
    finally:
        model.train(training)
        quiet.setLevel(level)
    if path is not None:
        onnx.save(proto, path)
    return proto


def measure(model, data, y=None, *, exporter: str = "torchscript", opset: int | None = None,
            batch_size: int = api.DEFAULT_BATCH_SIZE, kappa: bool = True,
            device: str = "auto", threads: int | None = None,
            per_sample: bool = False, name: str | None = None, save=None) -> Result:
    """Exact flatness of an ``nn.Module``'s head on labelled data.

    ``data``: inputs ``(N, ...)`` (tensor or array) with labels ``y`` ``(N,)``, or, with
    ``y`` None, an iterable of ``(x_batch, y_batch)`` such as a ``DataLoader`` (batches as
    it gives them; ``batch_size`` applies to arrays). The module is exported with
    :func:`export` (``exporter``, ``opset``) and measured like the CLI measures a file;
    ``name`` is ``Result.model`` (default ``torch:<class name>``); ``save``: also write the
    exported file there."""
    example, batches = split(data, y)
    proto = export(model, example, exporter=exporter, opset=opset, path=save)
    return measure_export(proto, data, y, batches, name or f"torch:{type(model).__name__}",
                          batch_size=batch_size, kappa=kappa, device=device, threads=threads,
                          per_sample=per_sample)


def measurer(exporter: str = "torchscript", **kwargs):
    """``measure(model, x, y) -> Result`` with these options (for a Tracker)."""
    return lambda model, x, y: measure(model, x, y, exporter=exporter, **kwargs)


def Tracker(data, path, y=None, *, every: int = 1, subset: int | None = 1024, seed: int = 0,
            writer=None, exporter: str = "torchscript", **measure_options):
    """A :class:`onnxflat.track.Tracker` for a plain PyTorch loop: call it after each epoch,
    ``tracker(model, epoch, train_loss=..., val_accuracy=...)``; every ``every`` epochs it
    exports the model and measures it on a fixed, seeded ``subset`` of ``data`` (see
    :func:`~onnxflat.frameworks.subset_arrays`), appending a row to ``path`` (.jsonl or .csv).

    >>> tracker = onnxflat.torch.Tracker(train_set, "run.jsonl", every=5)  # doctest: +SKIP
    """
    from . import track

    x, y = subset_arrays(data, y, subset, seed)
    return track.Tracker(measurer(exporter, **measure_options), x, y, path, every=every,
                         writer=writer)
