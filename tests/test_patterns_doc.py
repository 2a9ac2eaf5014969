"""docs/patterns.md is exactly what tools/gen_patterns_doc.py renders from the code and tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[1]


def test_patterns_doc_is_current():
    spec = importlib.util.spec_from_file_location("gen_patterns_doc",
                                                  ROOT_DIR / "tools" / "gen_patterns_doc.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    committed = (ROOT_DIR / "docs" / "patterns.md").read_text()
    assert committed == gen.render(), (
        "docs/patterns.md is stale: run `PYTHONPATH=. python tools/gen_patterns_doc.py` "
        "and commit the result")
