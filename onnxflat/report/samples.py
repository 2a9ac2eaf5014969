"""Writing the per-sample table (``Result.per_sample``): CSV, NPY, NPZ or Parquet."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import OnnxflatError

FORMATS = (".csv", ".npy", ".npz", ".parquet")


def check_path(path: str | Path) -> Path:
    """``path`` if its suffix names a format this module writes (Parquet: with pyarrow)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in FORMATS:
        raise OnnxflatError(f"per-sample file {p.name}: give a name ending in "
                            f"{', '.join(FORMATS)}")
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise OnnxflatError("writing Parquet needs pyarrow (pip install pyarrow); or "
                                "use .csv, .npy or .npz") from None
    return p


def write(table: np.ndarray, path: str | Path) -> None:
    """Write the structured array ``table`` (one row per sample) by ``path``'s suffix:
    ``.csv`` (header row, floats with 17 significant digits, so they read back exactly),
    ``.npy`` (the structured array), ``.npz`` (one array per column), ``.parquet``."""
    p = check_path(path)
    names = table.dtype.names
    try:
        if p.suffix.lower() == ".csv":
            with open(p, "w", newline="", encoding="utf-8") as fh:
                out = csv.writer(fh)
                out.writerow(names)
                ints = [table.dtype[n].kind in "iu" for n in names]
                for row in table.tolist():
                    out.writerow([str(v) if i else repr(float(v)) for v, i in zip(row, ints)])
        elif p.suffix.lower() == ".npy":
            np.save(p, table, allow_pickle=False)
        elif p.suffix.lower() == ".npz":
            np.savez(p, **{n: table[n] for n in names})
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq
            pq.write_table(pa.table({n: table[n] for n in names}), p)
    except OSError as exc:
        raise OnnxflatError(f"cannot write {p}: {exc.strerror or exc}") from None
