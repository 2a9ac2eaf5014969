"""Side-by-side comparison of several models on one data set, ranked by each measure.

Rank 1 is the flattest (smallest value). Conv-layer measures are totals over each model's
head conv layers, so models of different depth or naming still compare. A model whose
accuracy is near chance is shown but not ranked: it does not fit the data, so its (often
very low) flatness says nothing.
"""

from __future__ import annotations

import csv
import io

from .gate import CLASSIFIER, TOTAL, values
from .text import columns, pm

# (column, (measure, subject) in gate.values)
MEASURES = {
    "kappa": ("kappa", TOTAL),
    "trace": ("trace", TOTAL),
    "kappa_layerwise": ("kappa_layerwise", TOTAL),
    "classifier_kappa": ("kappa", CLASSIFIER),
    "classifier_trace": ("trace", CLASSIFIER),
}


def comparison(docs: list[dict], data: str, near_chance: list[bool] | None = None) -> dict:
    """JSON-ready comparison of result dicts (``docs`` in the user's order); models flagged
    in ``near_chance`` are not ranked."""
    rows = []
    for doc, low in zip(docs, near_chance or [False] * len(docs)):
        have = values(doc)
        rows.append({
            "model": doc["model"], "loss": doc["loss"], "accuracy": doc["accuracy"],
            "near_chance": bool(low),
            "stderr": {k: doc["stderr"].get(k) for k in ("loss", "accuracy")},
            "measures": {name: dict(zip(("value", "stderr"), have[key]), rank=None)
                         for name, key in MEASURES.items()},
            "result": doc,
        })
    for name in MEASURES:
        ranked = sorted((r for r in rows if r["measures"][name]["value"] is not None
                         and not r["near_chance"]),
                        key=lambda r: r["measures"][name]["value"])
        for rank, r in enumerate(ranked, 1):
            r["measures"][name]["rank"] = rank
    return {"data": data, "n_samples": docs[0]["n_samples"], "measures": list(MEASURES),
            "models": rows}


def _cell(m: dict) -> str:
    return "-" if m["value"] is None else f"{pm(m['value'], m['stderr'])} ({m['rank']})"


def table(comp: dict, sort: str = "kappa") -> str:
    """Plain-text table, rows sorted by ``sort``'s rank (unranked last)."""
    header = ["model", "loss", "accuracy"] + [f"{m} (rank)" for m in comp["measures"]]
    order = sorted(comp["models"], key=lambda r: (r["measures"][sort]["rank"] is None,
                                                  r["measures"][sort]["rank"] or 0))
    rows = [header] + [[r["model"] + (" (near chance: not ranked)" if r["near_chance"] else ""),
                        f"{r['loss']:.4g}", f"{r['accuracy']:.4g}"]
                       + [_cell(r["measures"][m]) for m in comp["measures"]] for r in order]
    return columns(rows)


def legend(comp: dict) -> str:
    """How to read the table."""
    lines = ["Rank 1 = flattest (lowest value); lower is flatter for every measure. kappa is "
             "the one to look at (unchanged by rescaling weights). A ratio of two models' "
             "kappa of 1.5 means 50% sharper; differences within about two standard errors "
             "(±) are noise."]
    low = [r["model"] for r in comp["models"] if r["near_chance"]]
    if low:
        lines.append(f"Not ranked, accuracy near chance (they do not fit the data): "
                     f"{', '.join(low)}.")
    return "\n".join(lines)


def to_csv(comp: dict) -> str:
    """One row per model: loss, accuracy and each measure with its stderr and rank."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["model", "loss", "loss_stderr", "accuracy", "accuracy_stderr", "near_chance"]
    for m in comp["measures"]:
        head += [m, f"{m}_stderr", f"{m}_rank"]
    w.writerow(head)
    for r in comp["models"]:
        row = [r["model"], r["loss"], r["stderr"]["loss"], r["accuracy"],
               r["stderr"]["accuracy"], r["near_chance"]]
        for m in comp["measures"]:
            cell = r["measures"][m]
            row += ["" if v is None else v for v in (cell["value"], cell["stderr"], cell["rank"])]
        w.writerow([repr(v) if isinstance(v, float) else v for v in row])
    return buf.getvalue()
