"""Benchmark of issue 7: onnxflat against its two floors and against Hutchinson (PyHessian).

Usage (from the repository root)::

    python -m benchmarks.bench                 # all three models, default N, 3 repeats
    python -m benchmarks.bench a --n 256       # one model, smaller N
    python -m benchmarks.bench a --hutchinson  # also PyHessian's time to 1% (model a)
    python -m benchmarks.bench a --process     # whole processes: measure vs plain onnxruntime

Everything of one model is measured in ONE process with the same threads (onnxruntime intra-op,
NumPy's BLAS and torch all get ``--threads``), batch size and session options, interleaved
(F1, F2, onnxflat all, onnxflat without filter-wise kappa, repeated), and the minimum of the
repeats is reported, so ratios stay meaningful on a loaded machine:

- F1: plain onnxruntime inference over the data (session creation and release included);
- F2: F1 plus the irreducible dense products of the filter-wise kappa for all N samples,
  batched, float32 NumPy BLAS: per sample one ``C_out x C_out`` by ``C_out x C`` product and
  the ``C_out x P`` by ``P x C_out`` product of ``R`` (GEMMs into pre-allocated outputs);
- onnxflat end to end through ``onnxflat.measure`` (load, analysis, session, math);
  the timed runs share one list of pre-generated batches;
- peak RSS of onnxflat at N and 4N, each in a fresh subprocess, with the data generated batch
  by batch so that only onnxflat's own memory counts.

``--process`` times whole processes instead (start-up, imports, loading and exit included),
interleaved, on one .npz of N samples (default 256): ``onnxflat measure`` (all measures)
against a plain onnxruntime process (session, the same batches, exit), and ``onnxflat
--version`` and ``onnxflat inspect`` of the model.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from threadpoolctl import threadpool_limits

import onnxflat
from onnxflat.graph import analyze_model, load_model
from onnxflat.runtime import session_options

from .models import SPECS, export


def batches(spec, n: int, batch: int, seed: int = 0):
    """The benchmark data, generated batch by batch (deterministic, same for every run)."""
    for s in range(0, n, batch):
        x, y = spec.data(min(batch, n - s), seed=seed * 1_000_003 + s)
        yield x, y


def plain_inference(path, data, threads) -> None:
    sess = ort.InferenceSession(str(path), session_options(threads),
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for x, _ in data:
        sess.run(None, {name: x})


def f1(path, data, threads) -> float:
    """Seconds of plain inference, from session creation to its release (freeing
    onnxruntime's arena takes ~0.1 s on (b) and (c); onnxflat's timing includes it too)."""
    t = time.perf_counter()
    plain_inference(path, data, threads)
    return time.perf_counter() - t


def dense_products(head, positions, n) -> float:
    """Seconds of the kappa's dense products for n samples: float32 GEMMs on pre-made
    operands into pre-allocated outputs, in chunks of at most 4M-element products (no page
    faults, cache-friendly): the most favourable batching for the floor."""
    c_out = head.layers[0].conv.out_channels
    c = head.num_classes
    chunk = max(1, min(n, (1 << 22) // (c_out * max(c_out, c))))
    rng = np.random.default_rng(0)
    w = rng.standard_normal((c_out, c), dtype=np.float32)
    m = rng.standard_normal((chunk, c_out, c_out), dtype=np.float32)
    d = rng.standard_normal((chunk, c_out, positions), dtype=np.float32)
    out_w = np.empty((chunk, c_out, c), np.float32)
    out_r = np.empty((chunk, c_out, c_out), np.float32)
    t = time.perf_counter()
    for s in range(0, n, chunk):
        k = min(chunk, n - s)
        np.matmul(m[:k], w, out=out_w[:k])
        np.matmul(d[:k], d[:k].transpose(0, 2, 1), out=out_r[:k])
    return time.perf_counter() - t


def head_products(head, n) -> float:
    """Seconds of the head's per-sample Jacobian products for n samples (0 for an affine
    head): forward values, adjoints and the factors of Ahat (``measures.afterpool``) in
    float32 as the float32 pipeline forms them, fed random pooled features, one sample at a
    time as the accumulator's strips take them."""
    from onnxflat.measures import afterpool
    if head.after.affine:
        return 0.0
    rng = np.random.default_rng(0)
    g = rng.standard_normal((n, head.num_features))
    t = time.perf_counter()
    fwd = afterpool.forward(head.after, g, np)
    f = fwd.logits
    p = np.exp(f - f.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = p.copy()
    delta[np.arange(n), rng.integers(0, p.shape[1], n)] -= 1.0
    betas = afterpool.backward(head.after, fwd, delta, np)
    for s in range(n):
        afterpool.factors(head.after, fwd, betas, p, slice(s, s + 1), np, np.float32)
    return time.perf_counter() - t


def run_onnxflat(path, data, threads, kappa) -> tuple[float, object]:
    t = time.perf_counter()
    res = onnxflat.measure(path, batches=data, kappa=kappa, threads=threads)
    return time.perf_counter() - t, res


def vm_hwm_mib() -> float:
    """This process's peak RSS in MiB (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(key, n, batch, threads) -> float:
    """Peak RSS (MiB) of a fresh process running onnxflat (all measures) on n samples."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench", key, "--n", str(n),
                          "--batch", str(batch), "--threads", str(threads), "--rss-child"],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_model(key, n, batch, threads, repeats, rss: bool) -> dict:
    spec = SPECS[key]
    path = export(key)
    head = analyze_model(load_model(path), str(path))
    data = list(batches(spec, n, batch))  # generated once, outside the timings
    times = {"F1": [], "dense": [], "head J": [], "all": [], "nokappa": []}
    for _ in range(repeats):
        times["F1"].append(f1(path, data, threads))
        times["dense"].append(dense_products(head, spec.positions, n))
        times["head J"].append(head_products(head, n))
        times["all"].append(run_onnxflat(path, data, threads, True)[0])
        times["nokappa"].append(run_onnxflat(path, data, threads, False)[0])
    best = {k: min(v) for k, v in times.items()}
    best["F2"] = best["F1"] + best["dense"]
    row = {"model": f"({key}) {spec.name}", "N": n, **best,
           "nokappa/F1": best["nokappa"] / best["F1"], "all/F2": best["all"] / best["F2"],
           "all/F1": best["all"] / best["F1"]}
    if best["head J"]:  # a non-affine head: its Jacobian products are a floor of their own
        row["all/(F1+J)"] = best["all"] / (best["F1"] + best["head J"])
    if rss:
        r1, r4 = peak_rss(key, n, batch, threads), peak_rss(key, 4 * n, batch, threads)
        row.update({"RSS N": r1, "RSS 4N": r4, "4N/N": r4 / r1})
    return row


# The plain onnxruntime process: session, the batches, exit (numpy and onnxruntime only).
PLAIN = """
import sys
import numpy as np
import onnxruntime as ort
path, data, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
so = ort.SessionOptions()
so.log_severity_level = 4
so.intra_op_num_threads = threads
sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
with np.load(data) as z:
    x = z["x"]
for s in range(0, len(x), batch):
    sess.run(None, {name: x[s:s + batch]})
"""


def bench_process(key, n, batch, threads, repeats) -> dict:
    """Seconds (min of interleaved repeats) of whole processes on one .npz of n samples."""
    spec, path = SPECS[key], str(export(key))
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "data.npz")
        x, y = spec.data(n)
        np.savez(data, x=x, y=y)
        onnxflat_cli = [sys.executable, "-m", "onnxflat"]
        commands = {
            "plain ort": [sys.executable, "-c", PLAIN, path, data, str(batch), str(threads)],
            "measure": onnxflat_cli + ["measure", path, "--data", data, "-b", str(batch),
                                       "--threads", str(threads), "-q"],
            "inspect": onnxflat_cli + ["inspect", path],
            "--version": onnxflat_cli + ["--version"],
        }
        times = {k: [] for k in commands}
        for _ in range(repeats):
            for k, cmd in commands.items():
                t = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                times[k].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    return {"model": f"({key}) {spec.name}", "N": n, **best,
            "measure/plain": best["measure"] / best["plain ort"]}


def print_table(rows) -> None:
    cols = ["model", "N", "F1", "F2", "head J", "nokappa", "all", "nokappa/F1", "all/F2",
            "all/F1", "all/(F1+J)", "RSS N", "RSS 4N", "4N/N"]
    cols = [c for c in cols if any(c in r for r in rows)]
    fmt = {c: ("{:>8.2f}" if c not in ("model", "N") else "{}") for c in cols}
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---" for _ in cols) + "|")
    for r in rows:
        print("| " + " | ".join(fmt[c].format(r[c]).strip() if c in r else "" for c in cols)
              + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help=f"any of {', '.join(SPECS)} (default: all)")
    ap.add_argument("--n", type=int, help="samples (default: the issue's N of each model)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--hutchinson", action="store_true", help="PyHessian time to 1%% (model a)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=1000.0,
                    help="seconds of Hutchinson probes per seed (each seed runs all of it)")
    ap.add_argument("--process", action="store_true",
                    help="whole processes: measure vs plain onnxruntime, inspect, --version")
    ap.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.models = args.models or list(SPECS)
    if set(args.models) - set(SPECS):
        ap.error(f"models: choose from {', '.join(SPECS)}")
    # The labels are random by design (speed does not depend on them): no chance-level warning.
    logging.getLogger("onnxflat").setLevel(logging.ERROR)
    with threadpool_limits(args.threads):
        if args.rss_child:
            key = args.models[0]
            spec = SPECS[key]
            run_onnxflat(spec.path, batches(spec, args.n, args.batch), args.threads, True)
            print(vm_hwm_mib())
            return
        print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, "
              f"batch {args.batch}, min of {args.repeats} interleaved repeats, seconds")
        if args.process:
            rows = [bench_process(key, args.n or 256, args.batch, args.threads, args.repeats)
                    for key in args.models]
            cols = list(rows[0])
            print("| " + " | ".join(cols) + " |")
            print("|" + "|".join("---" for _ in cols) + "|")
            for r in rows:
                print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])
                                        for c in cols) + " |")
            return
        rows = []
        for key in args.models:
            n = args.n or SPECS[key].n
            rows.append(bench_model(key, n, args.batch, args.threads, args.repeats,
                                    not args.no_rss))
            print_table(rows[-1:])
        print()
        print_table(rows)
        if args.hutchinson:
            from .hutchinson import report
            report("a", args.n or SPECS["a"].n, args.batch, args.threads, args.seeds,
                   budget_s=args.budget)


if __name__ == "__main__":
    main()
