"""Git LFS pointer files: a checkout without ``git lfs pull`` holds these small text files
in place of the model or data, which would otherwise fail as a corrupt file."""

from __future__ import annotations

import os
from pathlib import Path

MAGIC = b"version https://git-lfs.github.com/spec/"
MAX_POINTER_BYTES = 1024  # the spec's limit on a pointer file's size


def is_pointer(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Git LFS pointer file (False when it cannot be read)."""
    try:
        p = Path(path)
        if not p.is_file() or p.stat().st_size > MAX_POINTER_BYTES:
            return False
        with p.open("rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def refuse_pointer(path: str | os.PathLike, what: str, error: type[Exception]) -> None:
    """Raise ``error`` naming ``path`` as a Git LFS pointer (``what``: 'model', 'data')."""
    if is_pointer(path):
        raise error(f"{Path(path).name} is a Git LFS pointer file, not the {what}: run "
                    "'git lfs pull' (GitHub Actions: actions/checkout with 'lfs: true')")
