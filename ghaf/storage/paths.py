"""Logical artifact paths: normalised and validated, never used as filesystem paths
on the server (the SDK does write them under a destination folder: see
:mod:`ghaf.core.paths`, which holds the one rule)."""

from __future__ import annotations

from ghaf.core.paths import MAX_PATH, MAX_SEGMENT, relative_path

__all__ = ["MAX_PATH", "MAX_SEGMENT", "normalise_path"]


def normalise_path(path: str, *, field: str = "path") -> str:
    """NFC-normalised ``a/b/c``; refuses anything that could mean something else
    (see :func:`ghaf.core.paths.relative_path`)."""
    return relative_path(path, field=field)
