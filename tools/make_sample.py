"""Train the shipped sample: a small CNN on scikit-learn's digits, exported to ONNX.

Writes models/digits_cnn.onnx, models/digits_train.npz and models/digits_test.npz, and
models/digits_cnn_sharp.onnx: the same architecture trained on the first 300 training
samples for 200 epochs without weight decay: a deliberately sharper model (kappa ~3.5x,
test accuracy 0.938 vs 0.968) that the CI gate in docs/ci/ must reject.
Deterministic (fixed seeds, single thread). Needs the test extra (torch, scikit-learn):

    python tools/make_sample.py [--out models] [--epochs 60] [--weight-decay 5e-4]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits


class DigitsCNN(nn.Module):
    """conv(1->16) -> ReLU -> conv(16->32, stride 2) -> BN -> ReLU -> GAP -> linear(32->10)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = F.relu(self.bn(self.conv2(h)))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def digits_split(seed: int = 0, n_test: int = 497):
    """(x_train, y_train, x_test, y_test): x float32 (N, 1, 8, 8) in [0, 1], y int64."""
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float,
          weight_decay: float, batch_size: int = 64, seed: int = 0,
          stop_loss: float | None = None) -> nn.Module:
    """SGD with momentum 0.9. With ``stop_loss``, ``epochs`` is a cap: training stops after the
    first epoch whose training loss (eval mode, whole set) is at most ``stop_loss``."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(yt), generator=g).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        if stop_loss is not None:
            with torch.no_grad():
                if F.cross_entropy(model.eval()(xt), yt).item() <= stop_loss:
                    break
    return model.eval()


def export(model: nn.Module, path: Path, sample: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(sample[:2]),), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--sharp-samples", type=int, default=300)
    ap.add_argument("--sharp-epochs", type=int, default=200)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    xtr, ytr, xte, yte = digits_split()
    model = train(DigitsCNN(), xtr, ytr, epochs=args.epochs, lr=0.05,
                  weight_decay=args.weight_decay)
    args.out.mkdir(parents=True, exist_ok=True)
    export(model, args.out / "digits_cnn.onnx", xtr)
    np.savez_compressed(args.out / "digits_train.npz", x=xtr, y=ytr)
    np.savez_compressed(args.out / "digits_test.npz", x=xte, y=yte)
    report("digits_cnn", model, xtr, ytr, xte, yte)
    n = args.sharp_samples
    torch.manual_seed(0)
    sharp = train(DigitsCNN(), xtr[:n], ytr[:n], epochs=args.sharp_epochs, lr=0.05,
                  weight_decay=0.0)
    export(sharp, args.out / "digits_cnn_sharp.onnx", xtr)
    report("digits_cnn_sharp", sharp, xtr, ytr, xte, yte)


def report(label: str, model: nn.Module, xtr, ytr, xte, yte) -> None:
    with torch.no_grad():
        for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            out = model(torch.from_numpy(x))
            print(f"{label} {name}: loss {F.cross_entropy(out, torch.from_numpy(y)):.4f} "
                  f"accuracy {(out.argmax(1).numpy() == y).mean():.4f}")


if __name__ == "__main__":
    main()
