"""Local files: read for upload in 1 MiB pieces (hashed or streamed, with progress), and
written from downloads only once their SHA-256 checks out."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ghaf.core.errors import IntegrityFailure, InvalidInput
from ghaf.core.paths import relative_path
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


class Destination:
    """A local folder that downloads named by the server are written under.

    Every name goes through the server's own rule (:func:`ghaf.core.paths.relative_path`)
    again, since a server, a proxy or an old row may hand out anything; the target must
    then stay inside the folder, and no symbolic link inside the folder may be on the way
    (links above it, such as the folder itself, are the user's choice)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._base = self.folder.resolve()
        self._checked: set[Path] = {self._base}

    def path(self, name: str, *, what: str = "file") -> Path:
        """Where the server's ``name`` goes; ``InvalidInput`` if it would go elsewhere."""
        try:
            relative = relative_path(name, field="path")
        except InvalidInput as exc:
            raise InvalidInput(
                f"the server named a {what} {name!r}, which cannot be written under "
                f"{self.folder}: {exc.detail}; nothing was written",
                field="path",
            ) from None
        target = self._base
        for part in relative.split("/"):
            target = target / part
            if target in self._checked:
                continue
            if target.is_symlink():
                raise InvalidInput(
                    f"{target} is a symbolic link: refusing to write {name!r} through it "
                    f"(downloads never follow links inside {self.folder})",
                    field="destination",
                )
            if target != self._base / relative:
                self._checked.add(target)
        if not target.resolve().is_relative_to(self._base):  # belt and braces
            raise InvalidInput(
                f"{name!r} would be written outside {self.folder}; nothing was written",
                field="path",
            )
        return self.folder / relative


def download_target(destination: str | Path, name: str, *, what: str = "file") -> Path:
    """``destination`` itself, or, if it is a folder, the server's ``name`` inside it
    (checked as :meth:`Destination.path` does)."""
    target = Path(destination)
    return Destination(target).path(name, what=what) if target.is_dir() else target


_WRITE_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_TRUNC
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
)


def open_for_write(path: Path) -> BinaryIO:
    """``path`` opened for writing, refusing to follow a symbolic link at it."""
    try:
        fd = os.open(path, _WRITE_FLAGS, 0o666)
    except OSError as exc:
        if path.is_symlink():
            raise InvalidInput(
                f"{path} is a symbolic link: refusing to write through it", field="destination"
            ) from None
        raise exc
    return os.fdopen(fd, "wb")


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
    try:
        with open_for_write(partial) as handle:
            for piece in pieces:
                handle.write(piece)
                digest.update(piece)
                if progress is not None:
                    progress(len(piece))
    except BaseException:
        # A download cut short (or refused mid-stream) leaves nothing that looks whole.
        partial.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise IntegrityFailure(f"{name} does not match its SHA-256: {problem}")
    partial.replace(target)
