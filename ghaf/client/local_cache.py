"""What the SDK keeps on this machine, under ``$GHAF_CACHE`` (default ``~/.cache/ghaf``):
downloaded dataset versions, and the hashes of files it has already read.

The hash cache is what makes re-adding a large folder cheap: a file whose path, size,
modification and change times and inode are as they were when it was hashed is not
read again (git's index and DVC's state database do the same).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger("ghaf.client")
# A file modified within this long of being hashed could be modified again without its
# timestamps changing on coarse-clock filesystems, so such hashes are not remembered.
SETTLED_NS = 2_000_000_000


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
        self._new: list[tuple[str, int, int, int, int, int, str]] = []
        self._connection: sqlite3.Connection | None = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._connection = sqlite3.connect(self._path, timeout=10)
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, size INTEGER, "
                "mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, device INTEGER, "
                "sha256 TEXT)"
            )
        except (OSError, sqlite3.Error) as exc:
            log.warning(
                "the hash cache at %s is unusable (%s); hashing every file", self._path, exc
            )
            self._connection = None

    def load(self, folder: Path) -> None:
        """Read the entries under ``folder`` in one query."""
        if self._connection is None:
            return
        prefix = str(folder.resolve())
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
        if self._connection is None or not self._new:
            return
        try:
            with self._connection:
                self._connection.executemany(
                    "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?)", self._new
                )
            self._new.clear()
        except sqlite3.Error as exc:
            log.warning("could not update the hash cache (%s)", exc)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
