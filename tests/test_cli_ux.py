"""CLI conduct around the measurement: Ctrl-C, GitHub Actions annotations, Git LFS pointers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from onnxflat.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "digits_cnn.onnx")
TRAIN = str(ROOT / "models" / "digits_train.npz")
POINTER = ("version https://git-lfs.github.com/spec/v1\n"
           "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
           "size 12345\n")


def test_ctrl_c_exits_130_with_one_line():
    # The measurement is replaced by a sleep (the real one is too quick to interrupt
    # reliably); everything around it is the real command line.
    script = textwrap.dedent(f"""
        import sys, time
        import onnxflat.cli.measure as m
        def slow(*args, **kwargs):
            print("running", flush=True)
            time.sleep(60)
        m.run_measure = slow
        from onnxflat.cli import main
        main(["measure", {MODEL!r}, "--data", {TRAIN!r}])
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_ACTIONS": "true"}
    # A job started in the background by a non-interactive shell (CI runners, `cmd &`)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler:
    # the child gets the default disposition a terminal's foreground process has.
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline() == "running\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert err.strip() == "interrupted (Ctrl-C)" and "Traceback" not in err
    assert "::error" not in out  # an interruption is not a failure of the input


@pytest.mark.parametrize("args, message", [
    (["measure", "nope.onnx", "--data", TRAIN], "model file not found"),
    (["gate", MODEL, "--data", TRAIN, "--max-kappa", "9", "--max-increase", "10"],
     "bare number"),
    (["measure", MODEL, "--data", TRAIN, "--batch-size", "0"], "Invalid value"),  # click's
    (["measure", MODEL, "--no-such-option"], "No such option"),
])
def test_every_exit_2_is_a_github_error_annotation(args, message):
    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 2 and message in plain.output and "::error" not in plain.output
    r = CliRunner().invoke(main, args, env={"GITHUB_ACTIONS": "true"})
    assert r.exit_code == 2, r.output
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("::error")]
    assert line.startswith("::error title=onnxflat::") and message in line


def test_github_error_escapes_what_the_runner_reads():
    from onnxflat.report.gate import github_error
    assert github_error("50% of a\nb", "t: x, y") == "::error title=t%3A x%2C y::50%25 of a%0Ab"


@pytest.mark.parametrize("what", ["model", "npz", "npy", "labels"])
def test_git_lfs_pointers_are_named(tmp_path, what):
    pointer = tmp_path / {"model": "m.onnx", "npz": "d.npz", "npy": "x.npy",
                          "labels": "y.npy"}[what]
    pointer.write_text(POINTER)
    x, y = tmp_path / "x0.npy", tmp_path / "y0.npy"
    np.save(x, np.zeros((2, 1, 8, 8), np.float32))
    np.save(y, np.zeros(2, np.int64))
    model, data = MODEL, ["--data", TRAIN]
    if what == "model":
        model = str(pointer)
    elif what == "npz":
        data = ["--data", str(pointer)]
    elif what == "npy":
        data = ["--data", str(pointer), "--labels", str(y)]
    else:
        data = ["--data", str(x), "--labels", str(pointer)]
    r = CliRunner().invoke(main, ["measure", model, *data])
    assert r.exit_code == 2, r.output
    assert f"{pointer.name} is a Git LFS pointer file, not the " in r.output
    assert "git lfs pull" in r.output
