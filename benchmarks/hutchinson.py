"""What a user runs today: PyHessian's Hutchinson trace for the same conv kernel, same data.

PyHessian (PyPI ``pyhessian``, used as an installed peer) is given its most favourable
setting: the whole data set as its one batch, so the gradient graph is built once and every
probe is a single Hessian-vector product (a double backward) through the head; every
parameter except the last conv kernel has ``requires_grad=False``, so the HVPs are
restricted to that kernel and nothing else is differentiated. torch gets the same threads as
onnxruntime.

Time to 1%: the setup (forward and gradient graph) plus the probes until the running mean of
``v^T H v`` enters, and then stays in, the 1% band around onnxflat's exact trace for the rest
of the run (at least ``hold`` further probes); a run that does not settle within the time
budget is reported as a lower bound, ``>``. Median over seeds.

Hutchinson's cost is (number of probes) x (cost of one HVP over the data). The probes needed
follow from the spread of ``v^T H v``: with relative standard deviation ``sd``, the standard
error of the mean falls to 1% after ``(sd / 0.01)^2`` probes. That projection (setup plus
those probes at the measured cost per probe) is printed beside the measured bound, for the
runs a time budget cannot afford.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

import onnxflat

from .models import SPECS, export, folded


def hutchinson_run(model, x, y, exact, seed, budget_s, hold, threads):
    """One seed: (seconds to 1% or None, setup s, s per probe, probes, values)."""
    import torch
    from pyhessian import hessian

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    comp = hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    setup = time.perf_counter() - t0
    values, stamps, settled = [], [], None
    while time.perf_counter() - t0 < budget_s:
        values += comp.trace(maxIter=1, tol=0.0)
        stamps.append(time.perf_counter() - t0)
        inside = abs(np.mean(values) / exact - 1) < 0.01
        if inside and settled is None:
            settled = len(values) - 1
        elif not inside:
            settled = None
        if settled is not None and len(values) - 1 - settled >= hold:
            break
    per_probe = (stamps[-1] - setup) / len(values)
    hit = None if settled is None or len(values) - 1 - settled < hold else stamps[settled]
    return hit, setup, per_probe, len(values), values


def report(key, n, batch, threads, seeds, budget_s=240.0, hold=20):
    """Print PyHessian's time to 1% of the exact trace, and its ratio to onnxflat."""
    import torch

    from .bench import batches

    spec = SPECS[key]
    path = export(key)
    data = list(batches(spec, n, batch))
    times = []
    for _ in range(2):
        t = time.perf_counter()
        res = onnxflat.measure(path, batches=data, threads=threads)
        times.append(time.perf_counter() - t)
    t_flat = min(times)
    (layer,) = res.layers
    exact = layer.trace
    model = folded(key)
    for name, prm in model.named_parameters():
        prm.requires_grad_(name == spec.conv_param)
    x = torch.from_numpy(np.concatenate([b[0] for b in data]))
    y = torch.from_numpy(np.concatenate([b[1] for b in data]))
    rows = []
    for seed in range(seeds):
        hit, setup, per_probe, probes, values = hutchinson_run(model, x, y, exact, seed,
                                                               budget_s, hold, threads)
        rel_sd = float(np.std(values, ddof=1) / abs(exact)) if len(values) > 1 else float("nan")
        rows.append((hit, setup, per_probe, probes, rel_sd, float(np.mean(values))))
        shown = f"{hit:.1f}" if hit is not None else f"> {budget_s:.0f}"
        print(f"seed {seed}: time to 1% {shown} s (setup {setup:.1f} s, {per_probe:.2f} s per "
              f"probe, {probes} probes run, relative sd of v^T H v {rel_sd:.3f}, "
              f"mean {rows[-1][5]:.6g} vs exact {exact:.6g})")
    hits = [r[0] if r[0] is not None else float("inf") for r in rows]
    med = statistics.median(hits)
    shown = f"{med:.1f} s" if np.isfinite(med) else f"> {budget_s:.0f} s"
    ratio = f"{med / t_flat:.1f}x" if np.isfinite(med) else f"> {budget_s / t_flat:.0f}x"
    projected = statistics.median(r[1] + (r[4] / 0.01) ** 2 * r[2] for r in rows)
    print(f"| ({key}) {spec.name} | N {n} | onnxflat (all measures) {t_flat:.2f} s | "
          f"PyHessian to 1%, median of {seeds} seeds: measured {shown} (ratio {ratio}), "
          f"projected {projected:.0f} s (ratio {projected / t_flat:.0f}x) |")
