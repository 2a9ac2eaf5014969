"""Mergeable sufficient statistics of per-sample terms (float64, any number of shards)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Moments:
    """Count, mean and centred sum of squares of named per-sample terms; per-name sums of
    vector terms (per-filter contributions). Merging follows Chan et al. (1979), so any
    split of the data into batches or shards gives the same result to rounding.
    """

    names: tuple[str, ...]
    n: int = 0
    mean: np.ndarray = None
    m2: np.ndarray = None
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        k = len(self.names)
        self.mean = np.zeros(k) if self.mean is None else np.asarray(self.mean, np.float64)
        self.m2 = np.zeros(k) if self.m2 is None else np.asarray(self.m2, np.float64)

    def add(self, terms: dict[str, np.ndarray], vectors: dict[str, np.ndarray]) -> None:
        """Add a batch: ``terms[name]`` of shape ``(N,)``, ``vectors[name]`` summed over N."""
        cols = np.stack([np.asarray(terms[k], np.float64) for k in self.names], axis=1)
        nb = cols.shape[0]
        if nb == 0:
            return
        mb = cols.mean(axis=0)
        m2b = ((cols - mb) ** 2).sum(axis=0)
        self.merge(Moments(self.names, nb, mb, m2b, {k: np.asarray(v, np.float64)
                                                      for k, v in vectors.items()}))

    def merge(self, other: Moments) -> None:
        if other.names != self.names:
            raise ValueError("cannot merge statistics of different measures")
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / n)
        self.m2 = self.m2 + other.m2 + delta ** 2 * (self.n * other.n / n)
        self.n = n
        for k, v in other.vectors.items():
            self.vectors[k] = self.vectors[k] + v if k in self.vectors else v.copy()

    def value(self, name: str) -> float:
        return float(self.mean[self.names.index(name)])

    def stderr(self, name: str) -> float:
        """Standard error of the mean: sample std (ddof=1) / sqrt(n); 0 for n < 2."""
        if self.n < 2:
            return 0.0
        var = self.m2[self.names.index(name)] / (self.n - 1)
        return float(np.sqrt(max(var, 0.0) / self.n))

    def vector_mean(self, name: str) -> np.ndarray:
        return self.vectors[name] / max(self.n, 1)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays (for .npz partial files): n, names, mean, m2, vec/<name>."""
        out = {"n": np.asarray(self.n), "names": np.asarray(self.names),
               "mean": self.mean, "m2": self.m2}
        out.update({f"vec/{k}": v for k, v in self.vectors.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays) -> Moments:
        names = tuple(str(s) for s in arrays["names"])
        vecs = {k[4:]: np.asarray(arrays[k], np.float64) for k in arrays if k.startswith("vec/")}
        return cls(names, int(arrays["n"]), arrays["mean"], arrays["m2"], vecs)


def chance_floor(n: int, num_classes: int) -> float:
    """The accuracy below which a model on ``n`` samples of ``num_classes`` classes counts as
    near chance level 1/C: 3 standard errors of a guesser's accuracy, or 10% of the way from
    chance to 1, above chance, whichever is larger."""
    chance = 1.0 / num_classes
    return chance + max(3 * np.sqrt(chance * (1 - chance) / max(n, 1)), 0.1 * (1 - chance))
