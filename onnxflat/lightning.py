"""PyTorch Lightning callback: flatness of the module along training (see :mod:`.track`).

Needs ``lightning`` (or the older ``pytorch_lightning``); imported with this module only.
"""

from __future__ import annotations

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError:
        raise ImportError("onnxflat.lightning needs PyTorch Lightning: pip install "
                          "lightning") from None

from . import torch as oft


class FlatnessCallback(Callback):
    """Measures the LightningModule at the end of every ``every``-th training epoch on a
    fixed, seeded ``subset`` of ``data`` (tensors with ``y``, a Dataset or a DataLoader),
    appends a row to ``path`` (.jsonl / .csv: every measure with its standard error, the
    cost in seconds, and the trainer's scalar ``callback_metrics`` such as the training loss)
    and sends the measures to the trainer's loggers (TensorBoard, CSV, W&B...) as
    ``onnxflat/<name>``. A run resumed from a checkpoint appends to the same file.
    Cost per measured epoch: one ONNX export plus one inference pass over the subset."""

    def __init__(self, data, path, y=None, *, every: int = 1, subset: int | None = 1024,
                 seed: int = 0, exporter: str = "torchscript", **measure_options):
        super().__init__()
        self.tracker = oft.Tracker(data, path, y, every=every, subset=subset, seed=seed,
                                   exporter=exporter, **measure_options)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if getattr(trainer, "sanity_checking", False) or not self.tracker.due(epoch):
            return
        metrics = {k: v for k, v in trainer.callback_metrics.items()
                   if getattr(v, "numel", lambda: 1)() == 1}
        row = self.tracker(pl_module, epoch, **metrics)
        logged = {f"onnxflat/{k}": v for k, v in row.items()
                  if isinstance(v, float) and k not in metrics and k != "seconds"}
        for logger in trainer.loggers:
            logger.log_metrics(logged, step=trainer.global_step)
