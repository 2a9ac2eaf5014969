"""The shipped CI workflow (docs/ci/onnxflat-gate.yml) and README's gate section, run as
written in a fresh clone of the repository: build the wheel, install it with the version
pinned into a fresh virtual environment, measure, gate."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

import onnxflat

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "docs" / "ci" / "onnxflat-gate.yml"


def workflow_steps() -> tuple[dict, list[str]]:
    """The workflow's env and the ``run`` commands of its job, in order."""
    doc = yaml.safe_load(WORKFLOW.read_text())
    (job,) = doc["jobs"].values()
    return doc.get("env", {}), [s["run"] for s in job["steps"] if "run" in s]


def readme_gate_block() -> list[str]:
    """The command lines of README's "Block a sharper model in CI" code block."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Block a sharper model in CI"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def fresh_venv(path: Path) -> Path:
    """A virtual environment that sees this one's installed packages except onnxflat (a
    fresh machine after the dependencies came from the pip cache)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    deps = path / "deps"
    deps.mkdir()
    for sp in map(Path, site.getsitepackages()):
        for entry in sp.iterdir():
            if not entry.name.lower().startswith(("onnxflat", "__editable__")) and \
                    not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    purelib = subprocess.run([str(path / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(f"{deps}\n")
    return path


def test_workflow_and_readme_run_as_written_in_a_fresh_clone(tmp_path):
    if shutil.which("git") is None or subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("needs git and a git checkout")
    env_vars, steps = workflow_steps()
    assert env_vars["ONNXFLAT_VERSION"] == onnxflat.__version__  # the pin is this release
    readme = readme_gate_block()
    assert readme[:2] == [s.replace("$ONNXFLAT_VERSION", onnxflat.__version__)
                          for s in steps[:2]]  # README installs as the workflow does
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)],
                   check=True)
    venv = fresh_venv(tmp_path / "venv")
    summary = tmp_path / "summary.md"
    env = {**os.environ, **env_vars, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "VIRTUAL_ENV": str(venv), "GITHUB_ACTIONS": "true",
           "GITHUB_STEP_SUMMARY": str(summary), "PIP_NO_INDEX": "1",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for key in ("PYTHONPATH", "PYTHONHOME"):
        env.pop(key, None)

    def run(command: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        return proc

    for step in steps:
        last = run(step)
    assert "gate passed" in last.stdout
    assert "## onnxflat gate: ✅ passed" in summary.read_text()
    assert json.loads((clone / "gate.json").read_text())["gate"]["passed"] is True
    installed = run("cd / && python -c 'import onnxflat; print(onnxflat.__file__)'").stdout
    assert installed.startswith(str(venv))  # the wheel, not this checkout
    (wheel,) = (clone / "dist").glob(f"onnxflat-{onnxflat.__version__}-py3-none-any.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "onnxflat/py.typed" in names and "onnxflat/cli/gate.py" in names
    for line in readme[2:]:
        last = run(line)
    assert "gate passed" in last.stdout
    # A source of another version than the pin does not install.
    bad = subprocess.run(["bash", "-c", steps[1]], cwd=clone, capture_output=True, text=True,
                         env={**env, "ONNXFLAT_VERSION": "0.1.0"}, timeout=300)
    assert bad.returncode != 0


def test_sdist_holds_the_package_files(tmp_path):
    pytest.importorskip("build")
    proc = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation",
                           "--outdir", str(tmp_path), str(ROOT)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    v = onnxflat.__version__
    with tarfile.open(tmp_path / f"onnxflat-{v}.tar.gz") as sdist:
        files = sdist.getnames()
    for name in ("onnxflat/py.typed", "onnxflat/cli/gate.py", "README.md", "pyproject.toml"):
        assert f"onnxflat-{v}/{name}" in files
