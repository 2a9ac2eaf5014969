"""Light imports: the math never loads onnx or onnxruntime, and neither does the command
line's --version or --help (each checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("onnx", "onnxruntime")


def loaded_after(code: str) -> set[str]:
    """Which of ``HEAVY`` a fresh interpreter has imported after running ``code``."""
    script = textwrap.dedent(f"""
        import sys
        try:
        {textwrap.indent(textwrap.dedent(code), "    ")}
        except SystemExit:
            pass
        print("loaded:" + ",".join(m for m in {HEAVY!r} if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    return set(filter(None, out.rsplit("loaded:", 1)[1].strip().split(",")))


def test_the_math_imports_no_onnx():
    assert loaded_after("import onnxflat.measures.jets, onnxflat.measures") == set()


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["measure", "--help"]])
def test_cli_help_and_version_import_no_onnx(args):
    assert loaded_after(f"from onnxflat.cli import main; main({args!r})") == set()


def test_the_check_sees_onnx_when_it_is_imported():
    assert loaded_after("import onnxflat; onnxflat.analyze") == {"onnx"}
