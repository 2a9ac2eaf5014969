"""Peak memory of `measure` streaming a large .npy data set (issue 6: a file larger than RAM).

Writes a synthetic CNN (3x64x64 input, conv stride 4 -> conv -> ReLU -> GAP -> linear) and
a float32 .npy of --gib GiB into a temporary folder, then measures it in a fresh process and
reports the growth of its peak resident memory (VmHWM) over a warm-up on two batches. With
--memmap it also measures the same file read through a numpy memory map, for comparison.
The folder is deleted afterwards.

    PYTHONPATH=. python tools/bench_bigdata.py --gib 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SHAPE = (3, 64, 64)
CLASSES = 10
CHUNK = 32 << 20

CHILD = r"""
import json, sys, time
import numpy as np
from onnxflat import measure
from onnxflat.data import ArrayDataset, load_npy_pair

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

model, xp, yp, batch, mode = sys.argv[1:6]
batch = int(batch)
if mode == "memmap":
    ds = ArrayDataset(np.load(xp, mmap_mode="r"), np.load(yp), "x.npy")
else:
    ds = load_npy_pair(xp, yp)
measure(model, ds.subset(np.arange(2 * batch)), batch_size=batch, kappa=True)
before = hwm()
t = time.perf_counter()
res = measure(model, ds, batch_size=batch, kappa=True)
print(json.dumps({"n": res.n_samples, "seconds": time.perf_counter() - t, "hwm_before": before,
                  "hwm_after": hwm(), "kappa": res.layers[0].kappa}))
"""


def write_model(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((scale * rng.standard_normal(shape)).astype(np.float32),
                                       name)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], kernel_shape=[4, 4],
                              strides=[4, 4]),
             helper.make_node("Relu", ["h1"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["z2"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["z2"], ["a2"]),
             helper.make_node("GlobalAveragePool", ["a2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "bigdata",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *SHAPE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", CLASSES])],
        [init("w1", 8, 3, 4, 4), init("b1", 8), init("w2", 16, 8, 3, 3), init("b2", 16),
         init("wf", CLASSES, 16), init("bf", CLASSES)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def write_data(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """x.npy ``(n, 3, 64, 64)`` float32 written chunk by chunk, y.npy ``(n,)`` int64."""
    rng = np.random.default_rng(seed)
    xp, yp = folder / "x.npy", folder / "y.npy"
    row = int(np.prod(SHAPE))
    with open(xp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (n, *SHAPE)})
        rows = max(1, CHUNK // (4 * row))
        for s in range(0, n, rows):
            f.write(rng.random((min(rows, n - s), row), dtype=np.float32).tobytes())
    np.save(yp, rng.integers(0, CLASSES, n))
    return xp, yp


def run(model: Path, xp: Path, yp: Path, batch: int, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run([sys.executable, "-c", CHILD, str(model), str(xp), str(yp),
                          str(batch), mode], capture_output=True, text=True, env=env,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(gib: float, batch: int, memmap: bool, folder: str | None = None) -> dict:
    """Write, measure (and delete) a data set of ``gib`` GiB; returns the numbers."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp = Path(tmp)
        n = int(gib * 2 ** 30) // (4 * int(np.prod(SHAPE)))
        write_model(tmp / "m.onnx")
        t = time.perf_counter()
        xp, yp = write_data(tmp, n)
        out = {"gib": xp.stat().st_size / 2 ** 30, "n": n, "batch": batch,
               "batch_mib": batch * 4 * int(np.prod(SHAPE)) / 2 ** 20,
               "write_seconds": time.perf_counter() - t}
        for mode in ["stream"] + (["memmap"] if memmap else []):
            r = run(tmp / "m.onnx", xp, yp, batch, mode)
            r["growth_mib"] = (r["hwm_after"] - r["hwm_before"]) / 2 ** 20
            out[mode] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0, help="size of x.npy in GiB")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--memmap", action="store_true", help="also measure through np.memmap")
    ap.add_argument("--dir", help="where to create the temporary folder")
    a = ap.parse_args()
    out = bench(a.gib, a.batch_size, a.memmap, a.dir)
    print(json.dumps(out, indent=1))
    for mode in ("stream", "memmap"):
        if mode in out:
            r = out[mode]
            print(f"{mode}: {out['gib']:.2f} GiB, {r['n']} samples in {r['seconds']:.1f} s "
                  f"({out['gib'] * 1024 / r['seconds']:.0f} MiB/s); peak RSS +"
                  f"{r['growth_mib']:.1f} MiB (batch {out['batch_mib']:.1f} MiB)")


if __name__ == "__main__":
    main()
