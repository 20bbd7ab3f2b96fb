"""What the SDK keeps on this machine, under ``$GHAF_CACHE`` (default ``~/.cache/ghaf``):
downloaded dataset versions, and the hashes of files it has already read.

The hash cache is what makes re-adding a large folder cheap: a file whose path, size,
modification and change times and inode are as they were when it was hashed is not
read again (git's index and DVC's state database do the same). It also remembers which
contents a server holds and the last manifest added to each dataset, so that a new
version sends only what changed. All of it is a hint: when the server disagrees, the
SDK forgets it and sends everything.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("ghaf.client")
# A file modified within this long of being hashed could be modified again without its
# timestamps changing on coarse-clock filesystems, so such hashes are not remembered.
SETTLED_NS = 2_000_000_000
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """A version's number, manifest hash and files as ``{path: [size, sha256, uri]}``."""

    version: int
    sha256: str
    entries: dict[str, list[Any]]


def cache_root() -> Path:
    return Path(os.environ.get("GHAF_CACHE") or Path.home() / ".cache" / "ghaf")


def _signature(info: os.stat_result) -> tuple[int, int, int, int, int]:
    return info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev


class HashCache:
    """SHA-256s of local files, valid while the files' stat signatures are unchanged.

    Never a source of truth for what is stored: the server checks every uploaded byte
    against its hash. If the cache cannot be used, files are simply hashed again.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path or cache_root() / "hashes.sqlite"
        self._known: dict[str, tuple[tuple[int, ...], str]] = {}
        self._new: list[tuple[Any, ...]] = []
        self._connection: sqlite3.Connection | None = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self._path, timeout=10)
            # A cache: commits need not wait for the disk. WAL keeps it consistent
            # through a crash; at worst the last additions are lost and files rehashed.
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._reset_if_older()
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, device INTEGER, "
                "sha256 TEXT)"
            )
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS stored (place TEXT, sha256 TEXT, "
                "PRIMARY KEY (place, sha256)) WITHOUT ROWID"
            )
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS manifests (place TEXT, dataset TEXT, "
                "version INTEGER, sha256 TEXT, entries TEXT, PRIMARY KEY (place, dataset))"
            )
        except (OSError, sqlite3.Error) as exc:
            log.warning(
                "the hash cache at %s is unusable (%s); hashing every file", self._path, exc
            )
            self._connection = None

    def _reset_if_older(self) -> None:
        """A cache written by another version of ghaf is dropped, not migrated."""
        assert self._connection is not None
        (version,) = self._connection.execute("PRAGMA user_version").fetchone()
        if version != SCHEMA_VERSION:
            with self._connection:
                for table in ("hashes", "stored", "manifests"):
                    self._connection.execute(f"DROP TABLE IF EXISTS {table}")
                self._connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def load(self, source: Path) -> None:
        """Read the entries for ``source`` (a file, or every file under a folder) in one
        query."""
        if self._connection is None or not source.exists():
            return
        prefix = str(source.resolve())
        try:
            rows = self._connection.execute(
                "SELECT path, size, mtime_ns, ctime_ns, inode, device, sha256 FROM hashes "
                "WHERE path >= ? AND path < ?",
                (prefix, prefix + "\U0010ffff"),
            ).fetchall()
        except sqlite3.Error as exc:
            log.warning("could not read the hash cache (%s); hashing every file", exc)
            return
        self._known.update({row[0]: (tuple(row[1:6]), row[6]) for row in rows})

    def get(self, location: str, info: os.stat_result) -> str | None:
        """``location`` is absolute, as the walk of a resolved folder gives it."""
        known = self._known.get(location)
        return known[1] if known is not None and known[0] == _signature(info) else None

    def put(self, location: str, info: os.stat_result, sha256: str) -> None:
        if time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) > SETTLED_NS:
            self._new.append((location, *_signature(info), sha256))

    def save(self) -> None:
        self._write("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?)", self._new)
        self._new = []

    def stored(self, place: str) -> set[str]:
        """Contents this machine has seen stored at ``place`` (a server and project).

        A hint that saves asking the server again, never a promise: the server still
        refuses a manifest naming content it lacks, and the SDK then forgets the hint.
        """
        if self._connection is None:
            return set()
        try:
            rows = self._connection.execute(
                "SELECT sha256 FROM stored WHERE place = ?", (place,)
            ).fetchall()
        except sqlite3.Error as exc:
            log.warning("could not read the hash cache (%s)", exc)
            return set()
        return {row[0] for row in rows}

    def remember_stored(self, place: str, hashes: set[str]) -> None:
        self._write("INSERT OR IGNORE INTO stored VALUES (?, ?)", [(place, sha) for sha in hashes])

    def forget_stored(self, place: str) -> None:
        self._write("DELETE FROM stored WHERE place = ?", [(place,)])

    def manifest(self, place: str, dataset: str) -> Manifest | None:
        """The last version this machine added to ``dataset`` at ``place``, if any."""
        if self._connection is None:
            return None
        try:
            row = self._connection.execute(
                "SELECT version, sha256, entries FROM manifests WHERE place = ? AND dataset = ?",
                (place, dataset),
            ).fetchone()
        except sqlite3.Error as exc:
            log.warning("could not read the hash cache (%s)", exc)
            return None
        return None if row is None else Manifest(row[0], row[1], json.loads(row[2]))

    def remember_manifest(self, place: str, dataset: str, manifest: Manifest) -> None:
        entries = json.dumps(manifest.entries, separators=(",", ":"))
        self._write(
            "INSERT OR REPLACE INTO manifests VALUES (?, ?, ?, ?, ?)",
            [(place, dataset, manifest.version, manifest.sha256, entries)],
        )

    def _write(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if self._connection is None or not rows:
            return
        try:
            with self._connection:
                self._connection.executemany(statement, rows)
        except sqlite3.Error as exc:
            log.warning("could not update the hash cache (%s)", exc)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
