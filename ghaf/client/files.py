"""Reading local files for upload: 1 MiB pieces, hashed or streamed, with progress."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 1 << 20
Progress = Callable[[int], None]


def file_sha256(path: Path, progress: Progress | None = None) -> str:
    """SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    for piece in read_file(path, progress):
        digest.update(piece)
    return digest.hexdigest()


def read_file(path: Path, progress: Progress | None = None) -> Iterator[bytes]:
    """The file in 1 MiB pieces, reporting each piece's size to ``progress``."""
    with path.open("rb") as handle:
        while piece := handle.read(CHUNK):
            if progress is not None:
                progress(len(piece))
            yield piece
