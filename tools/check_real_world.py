"""Time and memory of `onnxflat inspect` and `measure` on real-world graphs (issue 14).

Each command runs in its own process; the table gives its wall time, its peak resident set
size (from ``os.wait4``) and its first output line. Graphs:

- ``zoo``: the ONNX model zoo graphs the onnx wheel ships (``light_*``: full-size graphs whose
  weights are ConstantOfShape fills); ``measure`` on 2 random 224x224 images.
- ``exports``: torchvision/timm models exported here (TorchScript, opset 17, 224x224;
  needs ``pip install -c constraints.txt timm torchvision``): torchvision efficientnet_v2_s,
  timm dpn68, seresnet18, ecaresnet26t, nf_resnet26, efficientvit_b0.

Usage: python tools/check_real_world.py [zoo] [exports] [--limit-gib 4]
(``--limit-gib`` caps each process's address space, so a runaway analysis fails fast.)
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
EXPORTS = ("tv:efficientnet_v2_s", "timm:dpn68", "timm:seresnet18", "timm:ecaresnet26t",
           "timm:nf_resnet26", "timm:efficientvit_b0")


def run(cmd: list[str], limit_gib: float) -> tuple[float, float, int, str]:
    """(wall s, peak RSS MiB, exit code, first line of output) of one process."""
    def cap():
        if limit_gib:
            n = int(limit_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (n, n))
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         preexec_fn=cap)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    lines = [ln for ln in out.splitlines() if ln.startswith(("head:", "error:", "conv "))
             or "kappa" in ln]
    return (time.perf_counter() - t, usage.ru_maxrss / 1024, p.returncode,
            (lines or out.strip().splitlines()[-1:] or [""])[0][:150])


def export(spec: str, path: Path) -> None:
    import warnings

    import torch
    lib = torch.library.Library("torchvision", "DEF")  # the CUDA-linked wheel's ops
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    kind, name = spec.split(":")
    torch.manual_seed(0)
    if kind == "tv":
        import torchvision
        model = getattr(torchvision.models, name)()
    else:
        import timm
        model = timm.create_model(name, pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, 3, 224, 224),), str(path),
                          dynamo=False, input_names=["x"], output_names=["out"],
                          dynamic_axes={"x": {0: "n"}}, opset_version=17)


def main() -> int:
    args = sys.argv[1:]
    limit = float(args[args.index("--limit-gib") + 1]) if "--limit-gib" in args else 0.0
    which = [a for a in args if a in ("zoo", "exports")] or ["zoo", "exports"]
    tmp = Path(tempfile.mkdtemp())
    data = tmp / "random.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((2, 3, 224, 224)).astype(np.float32),
             y=np.array([3, 7]))
    cli = [sys.executable, "-c", "from onnxflat.cli import main; main()"]
    models = []
    if "zoo" in which:
        models += sorted(LIGHT.glob("light_*.onnx"))
    if "exports" in which:
        for spec in EXPORTS:
            path = tmp / f"{spec.replace(':', '_')}.onnx"
            export(spec, path)
            models.append(path)
    print("| graph | inspect s | inspect peak RSS MiB | reading | measure s | measure peak "
          "RSS MiB | measure |")
    print("|---|---|---|---|---|---|---|")
    for path in models:
        t, rss, code, line = run(cli + ["inspect", str(path)], limit)
        row = [path.stem, f"{t:.2f}", f"{rss:.0f}", f"exit {code}: {line}"]
        if code == 0:
            t, rss, code, line = run(cli + ["measure", str(path), "--data", str(data),
                                            "--batch-size", "2", "--quiet"], limit)
            row += [f"{t:.2f}", f"{rss:.0f}", f"exit {code}: {line}"]
        else:
            row += ["", "", ""]
        print("| " + " | ".join(c.replace("|", "/") for c in row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
