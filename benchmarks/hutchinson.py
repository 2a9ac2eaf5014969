"""What a user runs today: PyHessian's Hutchinson trace for the same conv kernel, same data.

PyHessian (PyPI ``pyhessian``, used as an installed peer) is given its most favourable
setting: the whole data set as its one batch, so the gradient graph is built once and every
probe is a single Hessian-vector product (a double backward) through the head; every
parameter except the last conv kernel has ``requires_grad=False``, so the HVPs are
restricted to that kernel and nothing else is differentiated. torch gets the same threads as
onnxruntime.

Each seed runs probes for the whole time budget and three readings of "time to 1%" are
taken from the recorded trajectory (setup, the forward and gradient graph, included):

- **stays**: from when on the running mean of ``v^T H v`` stays within 1% of onnxflat's
  exact trace until the end of the run; a run that ends outside the band reports ``>``
  the budget. The headline figure.
- **practitioner**: the first time the run's own standard error is at most 1% of its mean
  (at least 30 probes): the stopping rule of someone who does not know the exact value
  (its actual error at that moment is printed beside it).
- **first hold**: the first time the mean enters the band and stays for 20 more probes (the
  lenient rule of the previous version; a lucky crossing counts).

Hutchinson's cost is (number of probes) x (cost of one HVP over the data). The probes needed
follow from the spread of ``v^T H v``: with relative standard deviation ``sd``, the standard
error of the mean falls to 1% after ``(sd / 0.01)^2`` probes. That projection (setup plus
those probes at the measured cost per probe) is printed beside the measurements.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

import onnxflat

from .models import SPECS, export, folded


def hutchinson_run(model, x, y, seed, budget_s, threads):
    """One seed: (setup s, probe values, seconds since start after each probe)."""
    import torch
    from pyhessian import hessian

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    comp = hessian(model, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    setup = time.perf_counter() - t0
    values, stamps = [], []
    while time.perf_counter() - t0 < budget_s:
        values += comp.trace(maxIter=1, tol=0.0)
        stamps.append(time.perf_counter() - t0)
    return setup, np.asarray(values), np.asarray(stamps)


def readings(values, stamps, exact, hold=20, min_probes=30) -> dict:
    """Seconds to 1% by the three rules of the module docstring (None: not within the
    run) and the practitioner's actual relative error when it stops."""
    k = np.arange(1, len(values) + 1)
    mean = np.cumsum(values) / k
    inside = np.abs(mean / exact - 1) < 0.01
    out = {"stays": None, "practitioner": None, "practitioner_error": None, "first_hold": None}
    if inside[-1]:
        outside = np.flatnonzero(~inside)
        out["stays"] = float(stamps[outside[-1] + 1 if len(outside) else 0])
    for i in np.flatnonzero(inside):
        if i + hold < len(inside) and inside[i:i + hold + 1].all():
            out["first_hold"] = float(stamps[i])
            break
    var = (np.cumsum(values ** 2) - k * mean ** 2) / np.maximum(k - 1, 1)
    se = np.sqrt(np.maximum(var, 0) / k) / np.abs(mean)
    ok = np.flatnonzero((se <= 0.01) & (k >= min_probes))
    if len(ok):
        out["practitioner"] = float(stamps[ok[0]])
        out["practitioner_error"] = float(abs(mean[ok[0]] / exact - 1))
    return out


def report(key, n, batch, threads, seeds, budget_s=1000.0):
    """Print PyHessian's time to 1% of the exact trace by each rule, and its ratio to
    onnxflat (all measures, same process, same threads)."""
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
    rules = ("stays", "practitioner", "first_hold")
    rows = []
    for seed in range(seeds):
        setup, values, stamps = hutchinson_run(model, x, y, seed, budget_s, threads)
        r = readings(values, stamps, exact)
        per_probe = (stamps[-1] - setup) / len(values)
        rel_sd = float(np.std(values, ddof=1) / abs(exact))
        rows.append((r, setup, per_probe, rel_sd))
        shown = ", ".join(f"{rule} {_s(r[rule], budget_s)}" for rule in rules)
        err = r["practitioner_error"]
        print(f"seed {seed}: time to 1%: {shown} (practitioner's actual error "
              f"{'-' if err is None else f'{100 * err:.2f}%'}); setup {setup:.1f} s, "
              f"{per_probe:.2f} s per probe, {len(values)} probes, relative sd of v^T H v "
              f"{rel_sd:.3f}, final mean {np.mean(values):.6g} vs exact {exact:.6g}",
              flush=True)
    projected = statistics.median(setup + (sd / 0.01) ** 2 * pp for _, setup, pp, sd in rows)
    cells = []
    for rule in rules:
        med = statistics.median(r[rule] if r[rule] is not None else float("inf")
                                for r, *_ in rows)
        ratio = f"{med / t_flat:.0f}x" if np.isfinite(med) else f"> {budget_s / t_flat:.0f}x"
        cells.append(f"{rule} {_s(med if np.isfinite(med) else None, budget_s)} ({ratio})")
    print(f"| ({key}) {spec.name} | N {n} | onnxflat (all measures) {t_flat:.2f} s | "
          f"PyHessian to 1%, median of {seeds} seeds: {'; '.join(cells)} | projected "
          f"{projected:.0f} s ({projected / t_flat:.0f}x) |")


def _s(seconds, budget_s) -> str:
    return f"{seconds:.0f} s" if seconds is not None else f"> {budget_s:.0f} s"
