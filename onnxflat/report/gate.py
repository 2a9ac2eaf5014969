"""The quality gate: checks of a result against limits and a baseline, and their verdicts.

Works on result dicts (``Result.to_dict()`` or a JSON written by ``measure``/``gate``), so a
fresh run and a stored baseline are read the same way. A *subject* is a conv layer by name,
``classifier``, or ``total`` (the sum over the head's conv layers).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import OnnxflatError
from .text import columns

LAYER_MEASURES = ("kappa", "trace", "kappa_layerwise")
CLASSIFIER_MEASURES = ("kappa", "trace")
TOTAL = "total"
CLASSIFIER = "classifier"


class GateInputError(OnnxflatError):
    """A limit or baseline the gate cannot use (unknown layer, unreadable baseline...)."""


def values(doc: dict) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """``{(measure, subject): (value, stderr)}`` of a result dict.

    ``total`` sums the conv layers; its stderr is the layer's own with one layer and unknown
    (None) with several, since per-sample terms of different layers are correlated.
    """
    out = {}
    layers = doc["layers"]
    for m in LAYER_MEASURES:
        for layer in layers:
            out[(m, layer["conv"])] = (layer.get(m), (layer.get("stderr") or {}).get(m))
        vals = [layer.get(m) for layer in layers]
        total = None if any(v is None for v in vals) else float(sum(vals))
        se = out[(m, layers[0]["conv"])][1] if len(layers) == 1 else None
        out[(m, TOTAL)] = (total, se)
    c = doc["classifier"]
    for m in CLASSIFIER_MEASURES:
        out[(m, CLASSIFIER)] = (c.get(m), (c.get("stderr") or {}).get(m))
    return out


@dataclass
class Check:
    """One gated quantity. ``limit`` bounds ``value``; for a baseline check it is
    ``baseline * max_ratio``. ``excess`` is ``value / limit - 1`` (> 0 means over)."""

    measure: str
    subject: str
    value: float
    stderr: float | None
    limit: float
    kind: str  # "max" (an absolute limit) or "baseline" (a ratio to a baseline)
    baseline: float | None = None
    baseline_stderr: float | None = None
    max_ratio: float | None = None

    @property
    def passed(self) -> bool:
        return self.value <= self.limit

    @property
    def excess(self) -> float:
        return self.value / self.limit - 1 if self.limit else math.inf

    @property
    def ratio(self) -> float | None:
        return None if self.baseline is None else self.value / self.baseline

    @property
    def ratio_stderr(self) -> float | None:
        """Delta-method standard error of the ratio, treating the two runs as independent."""
        if self.ratio is None or self.stderr is None or self.baseline_stderr is None:
            return None
        return abs(self.ratio) * math.hypot(self.stderr / self.value,
                                            self.baseline_stderr / self.baseline)

    @property
    def name(self) -> str:
        return f"{self.measure} {self.subject}"

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "excess": self.excess,
                "ratio": self.ratio, "ratio_stderr": self.ratio_stderr}


def parse_limit(text: str) -> tuple[str, float]:
    """'900' -> ('total', 900.0); '/conv2/Conv=900' -> ('/conv2/Conv', 900.0)."""
    subject, eq, number = text.rpartition("=")
    if not eq:
        subject = TOTAL
    try:
        value = float(number)
    except ValueError:
        raise GateInputError(f"limit {text!r}: expected V or LAYER=V with a number V") from None
    if not math.isfinite(value) or value <= 0:
        raise GateInputError(f"limit {text!r}: must be a positive number")
    return subject or TOTAL, value


INCREASE_EXAMPLE = "e.g. --max-increase 10% (a percentage) or --max-increase 1.1x (a ratio)"


def parse_increase(text: str) -> float:
    """'10%' or '1.1x' -> the largest allowed ratio to the baseline, 1.1.

    A bare number is refused: '10' could mean +10 % or +1000 %. Raises GateInputError for a
    bare number, a negative increase (below 0 % or 1x) or anything else.
    """
    t = text.strip().lower()
    unit = t[-1:] if t[-1:] in ("%", "x") else ""
    try:
        number = float(t[:-1] if unit else t)
        if not math.isfinite(number):
            raise ValueError(number)
    except ValueError:
        raise GateInputError(f"--max-increase {text!r}: expected {INCREASE_EXAMPLE}") from None
    if not unit:
        raise GateInputError(f"--max-increase {text!r}: a bare number is ambiguous; give a "
                             f"percentage or a ratio, {INCREASE_EXAMPLE}")
    ratio = 1 + number / 100 if unit == "%" else number
    if ratio < 1:
        raise GateInputError(f"--max-increase {text!r}: must not be negative (at least 0% or "
                             f"1x), {INCREASE_EXAMPLE}")
    return ratio


def load_baseline(path: str | Path) -> dict:
    """A result JSON written by ``onnxflat measure --json`` or ``onnxflat gate --json``."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as exc:
        raise GateInputError(f"cannot read baseline {p}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise GateInputError(f"baseline {p.name}: not JSON") from None
    ok = (isinstance(doc, dict) and isinstance(doc.get("layers"), list) and doc["layers"]
          and isinstance(doc.get("classifier"), dict)
          and all(isinstance(x, dict) and "conv" in x for x in doc["layers"]))
    if not ok:
        raise GateInputError(f"baseline {p.name}: not a result of 'onnxflat measure --json'")
    return doc


def same_data(doc: dict, baseline: dict) -> None:
    """Refuse a baseline measured on other data (when both results name their data)."""
    new, old = doc.get("data") or {}, baseline.get("data") or {}
    if new.get("sha256") and old.get("sha256") and new["sha256"] != old["sha256"]:
        raise GateInputError(
            f"the baseline was measured on other data ({old.get('name')}, sha256 "
            f"{old['sha256'][:12]}) than this run ({new.get('name')}, sha256 "
            f"{new['sha256'][:12]}): a ratio is meaningful only on the same data and options")


def _subject(subject: str, measure: str, have: dict) -> tuple[float | None, float | None]:
    if (measure, subject) not in have:
        names = sorted({s for (m, s) in have if m == measure})
        raise GateInputError(f"no {measure} for {subject!r}; known: {', '.join(names)}")
    return have[(measure, subject)]


def evaluate(doc: dict, limits: dict[str, list[str]], baseline: dict | None = None,
             max_ratio: float | None = None, on: tuple[str, ...] = ("kappa",)) -> list[Check]:
    """Checks of result ``doc``: ``limits`` maps a measure to ``['V', 'LAYER=V', ...]``;
    with a ``baseline``, every measure in ``on`` of every conv layer is held to
    ``max_ratio`` times its baseline value."""
    have = values(doc)
    checks = []
    for measure, specs in limits.items():
        for spec in specs:
            subject, limit = parse_limit(spec)
            value, se = _subject(subject, measure, have)
            if value is None:
                raise GateInputError(f"{measure} of {subject} was not measured "
                                     "(drop --no-filter-kappa)")
            checks.append(Check(measure, subject, value, se, limit, "max"))
    if baseline is not None:
        old = values(baseline)
        same_data(doc, baseline)
        if baseline.get("n_samples") != doc.get("n_samples"):
            raise GateInputError(
                f"the baseline was measured on {baseline.get('n_samples')} samples and this run "
                f"on {doc.get('n_samples')}: a ratio is meaningful only on the same data")
        for measure in on:
            for layer in doc["layers"]:
                subject = layer["conv"]
                value, se = have[(measure, subject)]
                if (measure, subject) not in old:
                    raise GateInputError(
                        f"layer {subject} is not in the baseline (it has "
                        f"{', '.join(x['conv'] for x in baseline['layers'])})")
                base, base_se = old[(measure, subject)]
                if value is None or base is None:
                    raise GateInputError(f"{measure} of {subject} is missing in "
                                         f"{'this run' if value is None else 'the baseline'}")
                if base <= 0:
                    raise GateInputError(f"baseline {measure} of {subject} is {base}: "
                                         "no ratio possible")
                checks.append(Check(measure, subject, value, se, base * max_ratio, "baseline",
                                    base, base_se, max_ratio))
    return checks


def pm(v: float | None, se: float | None) -> str:
    """'879.658 ± 56': 6 significant digits, the standard error to 2, '-' for no value."""
    if v is None:
        return "-"
    return f"{v:.6g} ± {float(f'{se:.2g}'):g}" if se is not None else f"{v:.6g}"


def _rows(checks: list[Check]) -> list[list[str]]:
    rows = []
    for c in checks:
        if c.kind == "baseline":
            limit = f"ratio <= {c.max_ratio:.4g}"
            ratio = pm(c.ratio, c.ratio_stderr)
        else:
            limit = f"<= {c.limit:.6g}"
            ratio = "-"
        rows.append([c.name, pm(c.value, c.stderr), pm(c.baseline, c.baseline_stderr),
                     ratio, limit, f"{c.excess:+.1%}", "pass" if c.passed else "FAIL"])
    return rows


HEADER = ["check", "value ± se", "baseline ± se", "ratio ± se", "limit", "vs limit", "result"]


def table(checks: list[Check]) -> str:
    """Plain-text table of the checks, one line each."""
    return columns([HEADER] + _rows(checks))


def verdict(checks: list[Check]) -> str:
    failed = [c for c in checks if not c.passed]
    if failed:
        return f"gate FAILED: {len(failed)} of {len(checks)} checks over their limit"
    return f"gate passed: {len(checks)} checks within their limits"


def markdown(checks: list[Check], model: str, data: str, n_samples: int,
             baseline: str | None = None) -> str:
    """A Markdown summary (e.g. for ``$GITHUB_STEP_SUMMARY``)."""
    failed = any(not c.passed for c in checks)
    lines = [f"## onnxflat gate: {'❌ failed' if failed else '✅ passed'}", "",
             f"- model: `{model}`", f"- data: `{data}` ({n_samples} samples)"]
    if baseline:
        lines.append(f"- baseline: `{baseline}`")
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in _rows(checks):
        row[-1] = "✅ pass" if row[-1] == "pass" else "❌ **FAIL**"
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "± is the standard error over samples; ratios to a baseline measured on the "
              "same data are the recommended gate (absolute values depend on scale).", ""]
    return "\n".join(lines)


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def github_error(message: str, title: str = "onnxflat") -> str:
    """A GitHub Actions ``::error::`` workflow command (message escaped as the runner wants)."""
    def esc(text: str, extra: str = "") -> str:
        text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        for ch in extra:
            text = text.replace(ch, {":": "%3A", ",": "%2C"}[ch])
        return text
    return f"::error title={esc(title, ':,')}::{esc(message)}"


def annotations(checks: list[Check], model: str) -> list[str]:
    """GitHub Actions ``::error::`` workflow commands, one per failed check."""
    out = []
    for c in checks:
        if c.passed:
            continue
        if c.kind == "baseline":
            what = (f"{c.value:.6g} is {c.ratio:.3g}x the baseline {c.baseline:.6g} "
                    f"(allowed {c.max_ratio:.3g}x)")
        else:
            what = f"{c.value:.6g} exceeds the limit {c.limit:.6g} by {c.excess:.1%}"
        out.append(github_error(f"{model}: {c.name} = {what}", "onnxflat gate"))
    return out
