"""A data source as a small picklable description, opened where it is used.

Cluster workers and batch-scheduler jobs receive a :class:`DataSpec` (paths and
options, never arrays) and open the data themselves, so the data must sit on storage
every worker can read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ..fingerprint import file_sha256, json_sha256
from .arrays import ArrayDataset, load_npz


@dataclass(frozen=True)
class DataSpec:
    """A .npz file with inputs ``x_key`` and integer labels ``y_key``."""

    path: str
    x_key: str = "x"
    y_key: str = "y"

    @property
    def name(self) -> str:
        return Path(self.path).name

    def open(self) -> ArrayDataset:
        return load_npz(self.path, self.x_key, self.y_key)

    def describe(self) -> dict:
        return asdict(self)

    def fingerprint(self) -> str:
        """sha256 over the file contents and the options that select the samples (not the
        path, so a copy of the data on another machine matches)."""
        opts = {k: v for k, v in self.describe().items() if k != "path"}
        return json_sha256({"files": [file_sha256(self.path)], "options": opts})
