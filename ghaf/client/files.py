"""Reading local files for upload: 1 MiB pieces, hashed or streamed, with progress."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ghaf.core.errors import InvalidInput
from ghaf.storage import packs

CHUNK = 1 << 20
Progress = Callable[[int], None]


@dataclass(frozen=True)
class LocalFile:
    """A file to version or upload, with the size and SHA-256 it had when hashed."""

    path: str  # inside the dataset, '/'-separated
    location: str | Path | None
    size: int
    sha256: str
    uri: str | None = None  # set for external references


def file_sha256(path: str | Path, progress: Progress | None = None) -> str:
    """SHA-256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    for piece in read_file(path, progress):
        digest.update(piece)
    return digest.hexdigest()


def read_file(path: str | Path, progress: Progress | None = None) -> Iterator[bytes]:
    """The file in 1 MiB pieces, reporting each piece's size to ``progress``."""
    with Path(path).open("rb") as handle:
        while piece := handle.read(CHUNK):
            if progress is not None:
                progress(len(piece))
            yield piece


def pack_body(
    files: Iterable[LocalFile],
    progress: Progress | None = None,
    contents: Mapping[str, bytes] | None = None,
) -> Iterator[bytes]:
    """Pack frames of small files (docs/storage.md), grouped into ~1 MiB pieces; the
    bytes come from ``contents`` (by SHA-256) where given, else from the file."""
    buffer = bytearray()
    for file in files:
        content = (contents or {}).get(file.sha256)
        if content is None:
            assert file.location is not None
            with open(file.location, "rb") as handle:
                content = handle.read()
        if len(content) != file.size:
            raise InvalidInput(
                f"{file.location} changed since it was hashed ({file.size} bytes then, "
                f"{len(content)} now); no version was created",
                field="path",
            )
        buffer += packs.frame_header(file.sha256, file.size)
        buffer += content
        if progress is not None:
            progress(file.size)
        if len(buffer) >= CHUNK:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)
