"""Per-sample terms kept sample by sample (opt-in): which samples carry the curvature.

Every measure is a mean over samples of a per-sample term (``docs/flatness-math.md``); a
:class:`SampleSink` given to :class:`~onnxflat.measures.FlatnessAccumulator` keeps those
terms, keyed by sample index, so that their mean is the reported total. Memory: 8 bytes per
sample and column, never the activations.
"""

from __future__ import annotations

import numpy as np


def column_name(term: str) -> str:
    """The table column of an accumulator term: ``0.trace`` -> ``layer0.trace``,
    ``fc.kappa`` -> ``classifier.kappa``; ``loss`` and ``correct`` unchanged."""
    head, _, measure = term.partition(".")
    if not measure:
        return term
    return f"classifier.{measure}" if head == "fc" else f"layer{head}.{measure}"


class SampleSink:
    """Collects per-sample terms batch by batch; :meth:`table` gives them sorted by index."""

    def __init__(self):
        self._parts: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []

    def add(self, index, y, terms: dict[str, np.ndarray]) -> None:
        """``index`` ``(N,)`` sample indices, ``y`` ``(N,)`` labels, ``terms[name]`` ``(N,)``."""
        self._parts.append((np.asarray(index, np.int64), np.asarray(y, np.int64),
                            {k: np.asarray(v, np.float64) for k, v in terms.items()
                             if v is not None}))

    def table(self, rows: np.ndarray | None = None) -> np.ndarray:
        """A structured array ``(N,)``, sorted by ``index``: index, label, loss, correct
        (0/1), then ``layer<i>.trace``, ``layer<i>.kappa``, ``classifier.trace``,
        ``classifier.kappa`` (float64; the mean of each column is the reported total).
        ``rows`` maps the indices given to :meth:`add` to the data's own (a subset's rows
        in its file)."""
        if not self._parts:
            return np.zeros(0, dtype=[("index", np.int64), ("label", np.int64)])
        index = np.concatenate([p[0] for p in self._parts])
        if rows is not None:
            index = np.asarray(rows, np.int64)[index]
        if len(np.unique(index)) != len(index):
            raise ValueError("a sample index was given twice")
        order = np.argsort(index, kind="stable")
        terms = self._parts[0][2].keys()
        first = [t for t in ("loss", "correct") if t in terms]
        rest = sorted((t for t in terms if t not in first),
                      key=lambda t: (t.startswith("fc."), _layer(t)))
        dtype = [("index", np.int64), ("label", np.int64)] + [
            (column_name(t), np.float64) for t in first + rest]
        out = np.empty(len(index), dtype=dtype)
        out["index"] = index[order]
        out["label"] = np.concatenate([p[1] for p in self._parts])[order]
        for t in first + rest:
            out[column_name(t)] = np.concatenate([p[2][t] for p in self._parts])[order]
        return out


def _layer(term: str) -> int:
    head = term.partition(".")[0]
    return int(head) if head.isdigit() else -1
