"""``onnxflat.torch.measure``: an nn.Module measured in memory equals the CLI on the file it
exports (TorchScript and dynamo exporters), from tensors or a DataLoader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import onnxflat.torch as oft
from onnxflat.cli import main
from onnxflat.errors import DataError, OnnxflatError

from .zoo import Residual, TinyCnn

MODELS = {
    "relu": lambda: TinyCnn(stride=2, pad=1),
    "residual_projection_bn": lambda: Residual(True),
    "bn_silu": lambda: TinyCnn(nn.SiLU(), bn="before"),
}
TOL = 1e-6


def numbers(doc: dict) -> np.ndarray:
    out = [doc["loss"], doc["accuracy"], doc["classifier"]["trace"], doc["classifier"]["kappa"]]
    for layer in doc["layers"]:
        out += [layer["trace"], layer["kappa"], layer["stderr"]["kappa"]]
    return np.array(out)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 3, 8, 8, generator=g), torch.randint(0, 5, (40,), generator=g)


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name", list(MODELS))
def test_equals_cli_on_the_exported_file(tmp_path, data, name, exporter):
    model = MODELS[name]().train()
    x, y = data
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    path = tmp_path / "m.onnx"
    res = oft.measure(model, loader, exporter=exporter, save=path)
    assert model.training  # the mode is restored after the export
    assert res.model == f"torch:{type(model).__name__}" and res.n_samples == 40
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["measure", str(path), "--data", str(tmp_path / "d.npz"),
                                  "--json", str(out), "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert len(doc["layers"]) == len(res.layers) >= 1
    np.testing.assert_allclose(numbers(res.to_dict()), numbers(doc), rtol=TOL, atol=0)


def test_tensors_equal_loader_and_per_sample(data):
    model = MODELS["relu"]()
    x, y = data
    a = oft.measure(model, x, y, batch_size=7, per_sample=True)
    b = oft.measure(model, [(x[:25], y[:25]), (x[25:], y[25:])])
    np.testing.assert_allclose(numbers(a.to_dict()), numbers(b.to_dict()), rtol=1e-12)
    assert len(a.per_sample) == 40


def test_bad_input():
    model = MODELS["relu"]()
    with pytest.raises(OnnxflatError, match="exporter must be"):
        oft.measure(model, torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long),
                    exporter="tf")
    with pytest.raises(DataError, match="no batches"):
        oft.measure(model, [])
    with pytest.raises(DataError, match=r"\(inputs, labels\)"):
        oft.measure(model, [torch.zeros(2, 3, 8, 8)])
