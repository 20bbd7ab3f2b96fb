"""Objects as files under a root folder (``file:///path``), written to tmp/ then renamed."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from ghaf.core.errors import ObjectExists
from ghaf.storage.backends.base import (
    INCOMPLETE,
    Backend,
    Bytes,
    ObjectMissing,
    ObjectReader,
    ObjectWriter,
    check_key,
)

TMP = "tmp"
PART = ".part"


class LocalBackend(Backend):
    def __init__(self, url: str, *, region: str) -> None:
        self.url = url
        self.region = region
        self.root = Path(unquote(urlparse(url).path)).resolve()
        (self.root / TMP).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):  # defence in depth; keys are ours
            raise ValueError(f"object key {key!r} escapes the store")
        return path

    def writer(self, key: str) -> ObjectWriter:
        # The temp name encodes the key, so a leftover of a dead upload can be reported.
        return _LocalWriter(self._path(key), self.root / TMP / (key.replace("/", "~") + PART))

    def reader(self, key: str) -> ObjectReader:
        try:
            return _LocalReader(self._path(key))
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def put_immutable(self, key: str, data: bytes, *, retain_days: float) -> None:
        """Written to a temporary file, made read-only, then hard-linked into place: the
        link fails if the name exists, so an object is created exactly once, whole. (Local
        disk cannot stop its owner or root deleting it; S3 Object Lock can.)"""
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / TMP, suffix=".immutable")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                os.fchmod(handle.fileno(), 0o444)
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise ObjectExists(key) from None
            folder = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        finally:
            os.unlink(tmp)

    def keys(self, prefix: str) -> Iterator[str]:
        base = self.root / check_key(prefix) if prefix else self.root
        if base.exists():
            for dirpath, dirs, files in os.walk(base):
                if Path(dirpath) == self.root:
                    dirs[:] = [d for d in dirs if d != TMP]
                for name in files:
                    yield str(Path(dirpath, name).relative_to(self.root))
        for leftover in (self.root / TMP).glob("*" + PART):
            key = leftover.name.removesuffix(PART).replace("~", "/")
            if key.startswith(prefix):
                yield key + INCOMPLETE


class _LocalWriter(ObjectWriter):
    def __init__(self, final: Path, tmp: Path) -> None:
        self._final = final
        self._tmp = tmp
        self._file = open(tmp, "wb", buffering=0)  # noqa: SIM115 - closed in commit/abort
        self._size = 0

    def write(self, data: Bytes) -> None:
        self._file.write(data)
        self._size += len(data)

    def commit(self) -> int:
        os.fsync(self._file.fileno())
        self._file.close()
        self._final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._tmp, self._final)
        # The rename is durable only once its folder is: metadata is committed next.
        folder = os.open(self._final.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return self._size

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class _LocalReader(ObjectReader):
    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb", buffering=0)  # noqa: SIM115 - closed in close()
        self.size = os.fstat(self._file.fileno()).st_size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._file.fileno(), length, offset)

    def close(self) -> None:
        self._file.close()
