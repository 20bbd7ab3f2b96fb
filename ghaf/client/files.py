"""Local files: read for upload in 1 MiB pieces (hashed or streamed, with progress), and
written from downloads only once their SHA-256 checks out."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ghaf.core.errors import IntegrityFailure, InvalidInput
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


def write_verified(
    pieces: Iterable[bytes],
    target: Path,
    sha256: str,
    *,
    name: str,
    progress: Progress | None = None,
    problem: str = "it was corrupted in transit",
) -> None:
    """Write ``pieces`` to ``target`` through a ``.partial`` file that is moved into
    place only if the bytes match ``sha256``; otherwise ``IntegrityFailure``."""
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as handle:
        for piece in pieces:
            handle.write(piece)
            digest.update(piece)
            if progress is not None:
                progress(len(piece))
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise IntegrityFailure(f"{name} does not match its SHA-256: {problem}")
    partial.replace(target)
