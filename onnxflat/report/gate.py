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

from .. import __version__
from ..errors import OnnxflatError
from ..measures.stats import chance_floor
from .text import columns, pm

LAYER_MEASURES = ("kappa", "trace", "kappa_layerwise")
CLASSIFIER_MEASURES = ("kappa", "trace")
TOTAL = "total"
CLASSIFIER = "classifier"
ACCURACY = "accuracy"
# Accuracy points the gate lets a model lose against its baseline on the same data: enough
# to tolerate retraining noise, small enough to stop a broken export, wrong preprocessing or
# an untrained model.
DEFAULT_MAX_ACCURACY_DROP = 0.05


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
    c = doc.get("classifier") or {}
    for m in CLASSIFIER_MEASURES:
        out[(m, CLASSIFIER)] = (c.get(m), (c.get("stderr") or {}).get(m))
    return out


@dataclass
class Check:
    """One gated quantity against its ``limit``.

    ``kind``: ``max`` (an absolute upper limit), ``baseline`` (upper limit ``baseline *
    max_ratio``), ``accuracy_drop`` (accuracy at least the baseline's minus the allowed
    drop) or ``chance`` (accuracy clearly above chance level). ``excess`` > 0 means failed:
    ``value / limit - 1`` for upper limits, ``limit - value`` (accuracy) for the lower ones.
    """

    measure: str
    subject: str
    value: float
    stderr: float | None
    limit: float
    kind: str
    baseline: float | None = None
    baseline_stderr: float | None = None
    max_ratio: float | None = None

    @property
    def lower(self) -> bool:
        """Whether ``limit`` is a floor (accuracy) rather than a ceiling (flatness)."""
        return self.kind in ("accuracy_drop", "chance")

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.lower else self.value <= self.limit

    @property
    def excess(self) -> float:
        if self.lower:
            return self.limit - self.value
        return self.value / self.limit - 1 if self.limit else math.inf

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.lower:
            return None
        return self.value / self.baseline

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


DROP_EXAMPLE = "e.g. --max-accuracy-drop 5% (accuracy points), 0.05, or off"


def parse_accuracy_drop(text: str) -> float | None:
    """'5%' or '0.05' -> 0.05, the accuracy (a fraction) a model may lose against its
    baseline; 'off' -> None (no accuracy checks). Raises GateInputError otherwise."""
    t = text.strip().lower()
    if t in ("off", "none"):
        return None
    try:
        drop = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        drop = math.nan
    if not 0 <= drop <= 1:
        raise GateInputError(f"--max-accuracy-drop {text!r}: expected a drop of accuracy between "
                             f"0 and 1 (0% and 100%), {DROP_EXAMPLE}")
    return drop


def load_baseline(path: str | Path) -> dict:
    """A result JSON written by ``onnxflat measure --json`` or ``onnxflat gate --json`` of a
    compatible onnxflat version (:func:`check_version`)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as exc:
        raise GateInputError(f"cannot read baseline {p}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError):
        raise GateInputError(f"baseline {p.name}: not JSON") from None
    ok = (isinstance(doc, dict) and isinstance(doc.get("layers"), list) and doc["layers"]
          and all(isinstance(x, dict) and "conv" in x for x in doc["layers"]))
    if not ok:
        raise GateInputError(f"baseline {p.name}: not a result of 'onnxflat measure --json'")
    check_version(doc, p.name)
    return doc


def compatible(version: str | None) -> bool:
    """Whether results of onnxflat ``version`` compare with this one's: the same major and
    minor version (a change of either may change what is measured or how it is written)."""
    return bool(version) and str(version).split(".")[:2] == __version__.split(".")[:2]


def check_version(doc: dict, name: str) -> None:
    """Refuse a result written by an onnxflat whose results do not compare with this one's."""
    version = doc.get("onnxflat")
    if not compatible(version):
        written = f"onnxflat {version}" if version else "an onnxflat older than 0.2"
        raise GateInputError(
            f"baseline {name} was written by {written}, this is onnxflat {__version__}: "
            f"measure the accepted model again with this version (onnxflat measure MODEL "
            f"--data DATA --json {name}) and commit it")


def shape_text(shape) -> str:
    return "x".join(str(d) for d in shape)


def match_layers(shapes: list[list[int]], baseline: dict) -> list[int]:
    """For each conv layer of a head (kernel shapes in head order), the index of its layer in
    ``baseline``: the k-th layer of a kernel shape is matched to the baseline's k-th layer of
    that shape, so two exports of one network match whatever their node names. Raises
    GateInputError naming both structures when the heads differ."""
    old = [tuple(x.get("kernel_shape") or ()) for x in baseline["layers"]]
    new = [tuple(s) for s in shapes]
    if sorted(new) != sorted(old) or not all(old):
        def show(ss):
            return f"{len(ss)} conv layer{'s' * (len(ss) != 1)} " \
                   f"[{', '.join(shape_text(s) or '?' for s in ss)}]"
        raise GateInputError(
            f"the heads differ: this model has {show(new)}, the baseline {show(old)} (kernel "
            "shapes in head order): a ratio compares the same network only; measure a new "
            "baseline for a changed architecture")
    seen: dict[tuple, int] = {}
    out = []
    for s in new:
        k = seen[s] = seen.get(s, -1) + 1
        out.append([i for i, o in enumerate(old) if o == s][k])
    return out


DATA_PARTS = {"samples": "the samples (x)", "labels": "the labels (y)",
              "selection": "the selection of samples (--limit/--seed)",
              "preprocessing": "the preprocessing options"}


def same_data(fingerprint: dict, baseline: dict) -> None:
    """Refuse a baseline measured on other data (when both results name their data), naming
    the parts that differ (``DataSpec.fingerprint_parts``)."""
    new, old = fingerprint, baseline.get("data") or {}
    if not (new.get("sha256") and old.get("sha256")) or new["sha256"] == old["sha256"]:
        return
    a, b = new.get("parts") or {}, old.get("parts") or {}
    differ = [text for k, text in DATA_PARTS.items() if k in a and k in b and a[k] != b[k]]

    def where(d: dict) -> str:
        src = d.get("source") or {}
        sel = f"--limit {src['limit']} --seed {src.get('seed')}" if src.get("limit") else \
            "all samples"
        return f"{d.get('name')}, {sel}"
    raise GateInputError(
        f"the baseline was measured on other data: {' and '.join(differ) or 'the data'} "
        f"differ{'s' * (len(differ) == 1)} (baseline: {where(old)}; this run: {where(new)}); "
        "a ratio is meaningful only on the same data: give the baseline's data, --limit/--seed "
        "and preprocessing options (its data.source), or measure a new baseline")


def _subject(subject: str, measure: str, have: dict) -> tuple[float | None, float | None]:
    if (measure, subject) not in have:
        names = sorted({s for (m, s) in have if m == measure})
        raise GateInputError(f"no {measure} for {subject!r}; known: {', '.join(names)}")
    return have[(measure, subject)]


def evaluate(doc: dict, limits: dict[str, list[str]], baseline: dict | None = None,
             max_ratio: float | None = None, on: tuple[str, ...] = ("kappa",), *,
             per_layer: bool = False,
             max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP,
             num_classes: int | None = None) -> list[Check]:
    """Checks of result ``doc``, fit first: with ``max_accuracy_drop`` (None: off), accuracy
    above chance level (given ``num_classes``) and at most that far below the baseline's;
    then ``limits``, mapping a measure to ``['V', 'LAYER=V', ...]``; then, with a
    ``baseline``, every measure in ``on`` of the total over the head's conv layers (and,
    ``per_layer``, of each layer, matched by :func:`match_layers`) held to ``max_ratio``
    times its baseline value."""
    have = values(doc)
    checks = []
    acc, acc_se = doc["accuracy"], (doc.get("stderr") or {}).get("accuracy")
    if max_accuracy_drop is not None and num_classes:
        checks.append(Check(ACCURACY, "above chance", acc, acc_se,
                            chance_floor(doc["n_samples"], num_classes), "chance"))
    if max_accuracy_drop is not None and baseline is not None:
        base, base_se = baseline["accuracy"], (baseline.get("stderr") or {}).get("accuracy")
        checks.append(Check(ACCURACY, "vs baseline", acc, acc_se, base - max_accuracy_drop,
                            "accuracy_drop", base, base_se))
    for measure, specs in limits.items():
        for spec in specs:
            subject, limit = parse_limit(spec)
            value, se = _subject(subject, measure, have)
            if value is None:
                raise GateInputError(f"{measure} of {subject} was not measured "
                                     "(drop --no-filter-kappa)")
            checks.append(Check(measure, subject, value, se, limit, "max"))
    if baseline is not None:
        if baseline.get("n_samples") != doc.get("n_samples"):
            raise GateInputError(
                f"the baseline was measured on {baseline.get('n_samples')} samples and this run "
                f"on {doc.get('n_samples')}: a ratio is meaningful only on the same data")
        old = values(baseline)
        match = match_layers([x.get("kernel_shape") or [] for x in doc["layers"]], baseline)
        pairs = [(TOTAL, TOTAL)]
        if per_layer and len(doc["layers"]) > 1:
            pairs += [(x["conv"], baseline["layers"][j]["conv"])
                      for x, j in zip(doc["layers"], match)]
        for measure in on:
            for subject, old_subject in pairs:
                value, se = have[(measure, subject)]
                base, base_se = old[(measure, old_subject)]
                if value is None or base is None:
                    raise GateInputError(f"{measure} of {subject} is missing in "
                                         f"{'this run' if value is None else 'the baseline'}")
                if base <= 0:
                    raise GateInputError(f"baseline {measure} of {subject} is {base}: "
                                         "no ratio possible")
                checks.append(Check(measure, subject, value, se, base * max_ratio, "baseline",
                                    base, base_se, max_ratio))
    return checks


def _rows(checks: list[Check]) -> list[list[str]]:
    rows = []
    for c in checks:
        change, ratio = "-", "-"
        if c.kind == "baseline":
            limit = f"ratio <= {c.max_ratio:.4g} (+{100 * (c.max_ratio - 1):.4g}%)"
            ratio = pm(c.ratio, c.ratio_stderr)
            change = f"{c.ratio - 1:+.1%}"
        elif c.kind == "accuracy_drop":
            limit = f">= {c.limit:.4g} (drop <= {100 * (c.baseline - c.limit):.3g} pts)"
            change = f"{100 * (c.value - c.baseline):+.1f} pts"
        elif c.kind == "chance":
            limit = f">= {c.limit:.3g} (near chance below)"
        else:
            limit = f"<= {c.limit:.6g}"
        result = "pass" if c.passed else "FAIL"
        if c.kind == "max" and not c.passed:
            result += f" ({c.excess:+.1%} over the limit)"
        rows.append([c.name, pm(c.value, c.stderr), pm(c.baseline, c.baseline_stderr),
                     ratio, change, limit, result])
    return rows


HEADER = ["check", "value ± se", "baseline ± se", "ratio ± se", "vs baseline", "limit",
          "result"]


def table(checks: list[Check]) -> str:
    """Plain-text table of the checks, one line each."""
    return columns([HEADER] + _rows(checks))


def fit_lines(doc: dict, baseline: dict | None = None) -> list[str]:
    """Loss and accuracy (± standard error) of the run and, if given, of the baseline."""
    se = doc.get("stderr") or {}
    bse = (baseline or {}).get("stderr") or {}
    out = []
    for m in ("loss", ACCURACY):
        line = f"{m}: {pm(doc[m], se.get(m))}"
        if baseline is not None:
            line += f" (baseline {pm(baseline[m], bse.get(m))})"
        out.append(line)
    return out


def verdict(checks: list[Check]) -> str:
    failed = [c for c in checks if not c.passed]
    if failed:
        return (f"gate FAILED: {len(failed)} of {len(checks)} checks failed "
                f"({', '.join(c.name for c in failed)})")
    return f"gate passed: {len(checks)} checks within their limits"


def markdown(checks: list[Check], model: str, data: str, n_samples: int,
             baseline: str | None = None, fit: list[str] = ()) -> str:
    """A Markdown summary (e.g. for ``$GITHUB_STEP_SUMMARY``)."""
    failed = any(not c.passed for c in checks)
    lines = [f"## onnxflat gate: {'❌ failed' if failed else '✅ passed'}", "",
             f"- model: `{model}`", f"- data: `{data}` ({n_samples} samples)"]
    if baseline:
        lines.append(f"- baseline: `{baseline}`")
    lines += [f"- {line}" for line in fit]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in _rows(checks):
        row[-1] = "✅ pass" if row[-1] == "pass" else "❌ **" + row[-1] + "**"
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "± is the standard error over samples. Lower kappa and trace are flatter; the "
              "ratio to a baseline measured on the same data is the recommended gate (absolute "
              "values depend on scale). Accuracy is checked first: the flatness of a model "
              "that does not fit the data says little.", ""]
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
                    f"({c.ratio - 1:+.1%}; allowed {c.max_ratio:.3g}x)")
        elif c.kind == "accuracy_drop":
            what = (f"{c.value:.4g}, {100 * (c.baseline - c.value):.3g} points below the "
                    f"baseline's {c.baseline:.4g} (allowed {100 * (c.baseline - c.limit):.3g})")
        elif c.kind == "chance":
            what = (f"{c.value:.4g} is near chance (below {c.limit:.3g}): check the model and "
                    "the data's preprocessing")
        else:
            what = f"{c.value:.6g} exceeds the limit {c.limit:.6g} by {c.excess:.1%}"
        out.append(github_error(f"{model}: {c.name} = {what}", "onnxflat gate"))
    return out
