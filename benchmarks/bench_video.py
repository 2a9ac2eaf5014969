"""Benchmark of issue 17: a 3-D CNN on video clips, onnxflat against plain onnxruntime.

Usage (from the repository root)::

    python -m benchmarks.bench_video                 # R3D-18, 16x112x112 clips, N = 64
    python -m benchmarks.bench_video --n 16 --kappa  # fewer clips; also the filter-wise kappa

The model is an R3D-18 (the 3-D ResNet-18 of Tran et al. 2018, as torchvision's ``r3d_18``:
stem Conv3d 3->64 3x7x7 stride 1x2x2, four stages of two basic blocks with 3x3x3 convs,
64-128-256-512 channels, stride 2 from the second stage on, global average pooling, 400
classes). Its head's last conv is 512->512 3x3x3 on a 2x7x7 map (P = 98, d = 13824).
Weights are random (seeded) with BatchNorm folded by the exporter; data are standard-normal
clips with uniform random labels (speed does not depend on the values).

In ONE process with the same threads (onnxruntime intra-op and NumPy's BLAS get
``--threads``), batch size and session options, interleaved: F1 = plain onnxruntime
inference over the clips (session creation and release included), onnxflat without the
filter-wise kappa (``kappa=False``: trace, layer-wise kappa, classifier measures, loss), and
with ``--kappa`` onnxflat with all measures. The minimum of ``--repeats`` runs is reported.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import time
import warnings

import numpy as np
from threadpoolctl import threadpool_limits

from .bench import f1, run_onnxflat
from .models import CACHE
from .nets import Basic, _bn

CLIP = (3, 16, 112, 112)
CLASSES = 400


def r3d_18():
    """The seeded R3D-18 torch model (eval mode, BatchNorm with random statistics)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class R3D18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv3d(3, 64, (3, 7, 7), (1, 2, 2), (1, 3, 3),
                                                bias=False), _bn(64, dim=3), nn.ReLU())
            blocks, cin = [], 64
            for i, w in enumerate([64, 128, 256, 512]):
                for k in range(2):
                    blocks.append(Basic(cin, w, 2 if (k == 0 and i > 0) else 1, dim=3))
                    cin = w
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, CLASSES)

        def forward(self, x):
            return self.fc(F.adaptive_avg_pool3d(self.blocks(self.stem(x)), 1).flatten(1))

    torch.manual_seed(0)
    model = R3D18().eval()
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


def export():
    """The ONNX file of the R3D-18 (TorchScript exporter, BN folded; cached)."""
    import onnx
    import torch

    path = CACHE / "r3d_18.onnx"
    if not path.exists():
        CACHE.mkdir(exist_ok=True)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(r3d_18(), (torch.zeros(2, *CLIP),), buf, dynamo=False,
                              input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "n"}})
        onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
        path.write_bytes(buf.getvalue())
    return path


def clips(n: int, batch: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for s in range(0, n, batch):
        k = min(batch, n - s)
        out.append((rng.standard_normal((k, *CLIP), dtype=np.float32),
                    rng.integers(0, CLASSES, k).astype(np.int64)))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="clips (default 64)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--kappa", action="store_true", help="also time all measures")
    args = ap.parse_args(argv)
    logging.getLogger("onnxflat").setLevel(logging.ERROR)  # random labels: no chance warning
    path = export()
    data = clips(args.n, args.batch)  # generated once, outside the timings
    times: dict[str, list[float]] = {"F1": [], "nokappa": []} | (
        {"all": []} if args.kappa else {})
    with threadpool_limits(args.threads):
        for _ in range(args.repeats):
            times["F1"].append(f1(path, data, args.threads))
            times["nokappa"].append(run_onnxflat(path, data, args.threads, False)[0])
            if args.kappa:
                times["all"].append(run_onnxflat(path, data, args.threads, True)[0])
    best = {k: min(v) for k, v in times.items()}
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, R3D-18 on "
          f"{'x'.join(map(str, CLIP))} clips, N {args.n}, batch {args.batch}, "
          f"{args.threads} threads, min of {args.repeats} interleaved runs, seconds")
    cols = list(best) + [f"{k}/F1" for k in best if k != "F1"]
    vals = list(best.values()) + [best[k] / best["F1"] for k in best if k != "F1"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    print("| " + " | ".join(f"{v:.2f}" for v in vals) + " |")


if __name__ == "__main__":
    main()
