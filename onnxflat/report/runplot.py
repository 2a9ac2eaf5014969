"""Measures over epochs (a run file of :mod:`onnxflat.track`) beside loss and accuracy, with
standard-error bands, as one PNG."""

from __future__ import annotations

import io

from ..errors import DataError
from .html import require_matplotlib

# Columns that are bookkeeping, not curves.
SKIP = {"epoch", "seconds", "n_samples"}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def panels(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """``(title, columns)`` of each panel: loss, accuracy (each with the caller's metrics of
    that kind), one per measure (columns with a ``_se`` partner), then other metrics."""
    keys = [k for k in dict.fromkeys(k for r in rows for k in r)
            if k not in SKIP and not k.endswith("_se") and any(_number(r.get(k)) for r in rows)]
    measures = [k for k in keys if f"{k}_se" in rows[-1] or any(f"{k}_se" in r for r in rows)]
    extra = [k for k in keys if k not in measures]
    out = []
    for kind, word in (("loss", "loss"), ("accuracy", "acc")):
        group = [k for k in [kind] + extra if k == kind or word in k.lower()]
        if any(k in keys for k in group):
            out.append((kind, [k for k in group if k in keys]))
    used = {k for _, g in out for k in g}
    out += [(k, [k]) for k in measures if k not in used]
    rest = [k for k in extra if k not in used]
    if rest:
        out.append(("other metrics", rest))
    if not any(k in measures for _, g in out for k in g):
        raise DataError("the run file has no measures with standard errors (not written by "
                        "onnxflat's tracker?)")
    return out


def run_png(rows: list[dict], title: str = "") -> bytes:
    """A grid of panels (:func:`panels`), each curve against ``epoch``; a band of +-1
    standard error around each onnxflat measure."""
    plt = require_matplotlib()
    groups = panels(rows)
    ncol = 2 if len(groups) > 1 else 1
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6 * ncol, 2.8 * nrow), squeeze=False)
    for ax, (name, cols) in zip(axes.flat, groups):
        for col in cols:
            pts = [(r["epoch"], r[col], r.get(f"{col}_se")) for r in rows if _number(r.get(col))]
            ep = [p[0] for p in pts]
            val = [p[1] for p in pts]
            line, = ax.plot(ep, val, marker="o", ms=3, label=col)
            if all(_number(p[2]) for p in pts) and any(f"{col}_se" in r for r in rows):
                ax.fill_between(ep, [v - p[2] for v, p in zip(val, pts)],
                                [v + p[2] for v, p in zip(val, pts)],
                                color=line.get_color(), alpha=0.25, lw=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        if len(cols) > 1 or cols[0] != name:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
