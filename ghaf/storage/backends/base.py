"""The small interface every object backend implements."""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator

from ghaf.core.errors import InvalidInput, ObjectExists

# Keys are made by the store (ids, never user paths), so they are checked, not escaped.
Bytes = bytes | bytearray | memoryview
"""What writers accept; they must consume it before returning (buffers get reused)."""

INCOMPLETE = "#incomplete-upload"
"""Suffix ``keys`` adds to the key of an upload that never completed."""
_KEY = re.compile(r"[a-z0-9][a-z0-9/_.-]{0,511}")


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key) or ".." in key or "//" in key:
        raise InvalidInput(f"invalid object key {key!r}")
    return key


class ObjectWriter(abc.ABC):
    """Receives an object's bytes in order; nothing is visible until ``commit``."""

    @abc.abstractmethod
    def write(self, data: Bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> int:
        """Make the object durable under its key; returns its size in bytes."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard everything written (idempotent)."""


class ObjectReader(abc.ABC):
    size: int

    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the object."""

    def close(self) -> None:  # noqa: B027 - optional for backends holding nothing
        """Release what the reader holds."""


class Backend(abc.ABC):
    """Where encrypted objects live. Each backend declares the region it stores in."""

    url: str
    region: str

    @abc.abstractmethod
    def writer(self, key: str) -> ObjectWriter: ...

    @abc.abstractmethod
    def reader(self, key: str) -> ObjectReader:
        """Raises ``ObjectMissing`` when there is no object under ``key``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def keys(self, prefix: str) -> Iterator[str]:
        """Every committed key under ``prefix``, and any leftover of an upload that died."""

    # --- append-only objects (the audit witness) ----------------------------------------

    def put_immutable(self, key: str, data: bytes, *, retain_days: float) -> None:
        """Create ``key`` once, never to be overwritten, and where the store can enforce
        it (S3 Object Lock) not deletable for ``retain_days``. Raises ``ObjectExists`` if
        the key is taken. This default checks, then writes: backends make it atomic."""
        try:
            self.reader(key).close()
        except ObjectMissing:
            pass
        else:
            raise ObjectExists(key)
        writer = self.writer(key)
        try:
            writer.write(data)
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def read_immutable(self, key: str) -> bytes:
        """The bytes first written under an append-only key."""
        reader = self.reader(key)
        try:
            return reader.read(0, reader.size)
        finally:
            reader.close()

    def immutable_keys(self, prefix: str) -> Iterator[str]:
        """Every append-only key created under ``prefix``, including, where the store
        keeps them, keys a later delete hid."""
        return (k for k in self.keys(prefix) if not k.endswith(INCOMPLETE))


class ObjectMissing(Exception):
    """No object under the key (the store reports it; callers decide what it means)."""
