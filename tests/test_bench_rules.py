"""The benchmark's readings of Hutchinson's "time to 1%" on hand-made trajectories."""

from __future__ import annotations

import numpy as np

from benchmarks.hutchinson import readings


def test_readings_of_a_known_trajectory():
    # Running means: 150, 100.5 (inside), 117.3, then 100.25, 100.2, ... (inside to the end)
    values = np.array([150.0, 51.0, 151.0, 49.0, 100.0, 99.5, 100.4, 100.6])
    stamps = np.arange(1.0, 9.0)
    r = readings(values, stamps, exact=100.0, hold=2, min_probes=3)
    assert r["stays"] == 4.0  # inside from probe 4 on, up to the end
    assert r["first_hold"] == 4.0  # probe 2's entry is left after one probe
    assert r["practitioner"] is None  # the run's own standard error never falls to 1%


def test_readings_when_the_run_ends_outside_and_the_practitioner_stops():
    rng = np.random.default_rng(0)
    values = 100.0 * (1 + 0.05 * rng.standard_normal(400)) + 3.0  # biased: ends ~3% off
    stamps = np.arange(1.0, 401.0)
    r = readings(values, stamps, exact=100.0)
    assert r["stays"] is None and r["first_hold"] is None
    k = int(r["practitioner"])  # 5% spread: the standard error reaches 1% near 25-30 probes
    assert 30 <= k <= 40 and 0.01 < r["practitioner_error"] < 0.06
