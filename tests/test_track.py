"""Tracking flatness along training: one row per measured epoch, appended across restarts,
from a plain PyTorch loop and a Lightning callback."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import onnxflat.torch as oft
from onnxflat.errors import OnnxflatError
from onnxflat.track import RunLog, read_run

from .zoo import TinyCnn, torchvision_ops


class Writer:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(60, 3, 8, 8, generator=g), torch.randint(0, 5, (60,), generator=g)


def nudge(model, epoch):
    """Stands in for an epoch of training: the weights move."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * (epoch + 1))


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_loop_rows_and_restart_appends(tmp_path, data, suffix):
    x, y = data
    path = tmp_path / f"run{suffix}"
    dataset = torch.utils.data.TensorDataset(x, y)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True)
    writer = Writer()
    model = TinyCnn()
    tracker = oft.Tracker(loader, path, every=2, subset=25, seed=3, writer=writer)
    for epoch in range(5):
        nudge(model, epoch)
        row = tracker(model, epoch, loss=0.5 / (epoch + 1), val_accuracy=torch.tensor(0.25))
        assert (row is None) == (epoch % 2 == 1)
    rows = read_run(path)
    assert [r["epoch"] for r in rows] == [0, 2, 4]
    last = rows[-1]
    assert last["metric.loss"] == 0.1 and last["val_accuracy"] == 0.25
    # the row is the measure of the model on the fixed subset, with standard errors
    idx = np.sort(np.random.default_rng(3).choice(60, 25, replace=False))
    res = oft.measure(model, x[idx], y[idx])
    assert last["n_samples"] == 25 and last["seconds"] > 0
    for key, value in [("layer0.kappa", res.layers[0].kappa),
                       ("layer0.kappa_se", res.layers[0].stderr["kappa"]),
                       ("classifier.trace", res.classifier.trace), ("loss", res.loss)]:
        assert last[key] == pytest.approx(value, rel=1e-12), key
    assert ("onnxflat/layer0.kappa", last["layer0.kappa"], 4) in writer.scalars
    # restart from the checkpoint of epoch 2: the run file is appended to, not rewritten
    before = path.read_text()
    resumed = oft.Tracker(dataset, path, every=1, subset=25, seed=3)
    for epoch in (3, 4):
        resumed(model, epoch, loss=0.0, val_accuracy=0.5)
    assert path.read_text().startswith(before)
    lines = [ln for ln in path.read_text().splitlines() if ln]
    assert len(lines) == 3 + 2 + (suffix == ".csv")
    rows = read_run(path)  # the resumed run's row of epoch 4 replaces the first run's
    assert [r["epoch"] for r in rows] == [0, 2, 3, 4] and rows[-1]["val_accuracy"] == 0.5


def test_csv_with_other_columns_is_refused(tmp_path, data):
    path = tmp_path / "run.csv"
    RunLog(path).append({"epoch": 0, "loss": 1.0})
    tracker = oft.Tracker(*data[:1], path, y=data[1], subset=10)
    with pytest.raises(OnnxflatError, match="other columns"):
        tracker(TinyCnn(), 0)
    with pytest.raises(OnnxflatError, match=".jsonl or .csv"):
        RunLog(tmp_path / "run.txt")


def test_lightning_callback_and_resume(tmp_path, data):
    torchvision_ops()  # lightning's torchmetrics imports torchvision when it is installed
    pl = pytest.importorskip("lightning.pytorch")
    from onnxflat.lightning import FlatnessCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = TinyCnn()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            loss = torch.nn.functional.cross_entropy(self(batch[0]), batch[1])
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x, y = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=30)
    path = tmp_path / "run.jsonl"

    trainer = pl.Trainer(max_epochs=2, default_root_dir=tmp_path, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False,
                         logger=pl.loggers.CSVLogger(tmp_path, name="a"),
                         callbacks=[FlatnessCallback(loader, path, subset=20)])
    trainer.fit(Module(), loader)
    ckpt = trainer.checkpoint_callback.best_model_path
    assert [r["epoch"] for r in read_run(path)] == [0, 1]
    assert "train_loss" in read_run(path)[-1]
    logged = (tmp_path / "a" / "version_0" / "metrics.csv").read_text()
    assert "onnxflat/layer0.kappa" in logged
    resumed = pl.Trainer(max_epochs=3, default_root_dir=tmp_path, accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False, logger=False,
                         callbacks=[FlatnessCallback(loader, path, subset=20)])
    resumed.fit(Module(), loader, ckpt_path=ckpt)
    assert [json.loads(ln)["epoch"] for ln in path.read_text().splitlines()] == [0, 1, 2]
