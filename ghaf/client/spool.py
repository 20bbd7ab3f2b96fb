"""Where a run's log waits while the server is unreachable: one file per run under
``$GHAF_CACHE/spool``, appended and fsynced record by record, sent by ``ghaf runs sync``
(or by the run itself once the server answers again).

A record is a 4-byte big-endian length, a 1-byte kind and the payload:
``C`` the run's creation (JSON), ``B`` a log batch (the Arrow IPC bytes the SDK sends),
``F`` a file to upload as an artifact (JSON: local path, artifact path, SHA-256, size),
``I`` a dataset input (JSON). Replaying is idempotent: runs are created by their id,
batches carry sequence numbers, artifacts and inputs are keyed by path and version.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghaf.client.local_cache import cache_root, log
from ghaf.core.errors import IntegrityFailure

CREATE, BATCH, FILE, INPUT = b"C", b"B", b"F", b"I"
_HEADER = struct.Struct(">IB")


def spool_dir() -> Path:
    return cache_root() / "spool"


@dataclass(frozen=True)
class Record:
    kind: bytes
    payload: bytes

    def json(self) -> Any:
        return json.loads(self.payload)


@contextmanager
def _locked(path: Path, mode: str) -> Iterator[Any]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | (os.O_APPEND if "a" in mode else 0), 0o600)
    with os.fdopen(fd, mode) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Spool:
    """The spool file of one run."""

    def __init__(self, run_id: str, *, root: Path | None = None) -> None:
        self.path = (root or spool_dir()) / f"{run_id}.spool"

    def append(self, kind: bytes, payload: bytes | dict[str, Any]) -> None:
        """Add a record durably (fsync) before returning."""
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        with _locked(self.path, "ab") as handle:
            handle.write(_HEADER.pack(len(data), kind[0]) + data)
            handle.flush()
            os.fsync(handle.fileno())

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def records(self) -> list[Record]:
        return read_records(self.path)

    @contextmanager
    def draining(self) -> Iterator[list[Record]]:
        """The records, locked against appends; deleted if the block succeeds."""
        with _locked(self.path, "rb") as handle:
            records = _parse(handle.read(), self.path)
            yield records
            self.path.unlink(missing_ok=True)


def read_records(path: Path) -> list[Record]:
    return _parse(path.read_bytes(), path)


def _parse(data: bytes, path: Path) -> list[Record]:
    """Every whole record. A cut-off last record is one whose append never returned
    (the process died writing it), so it was never acknowledged and is dropped."""
    records = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        size, kind = _HEADER.unpack_from(data, offset)
        if offset + _HEADER.size + size > len(data):
            break
        offset += _HEADER.size
        if bytes([kind]) not in (CREATE, BATCH, FILE, INPUT):
            raise IntegrityFailure(f"spool file {path} holds an unknown record kind {kind}")
        records.append(Record(bytes([kind]), data[offset : offset + size]))
        offset += size
    if offset != len(data):
        log.warning("spool file %s ends with a partly written record; it is ignored", path)
    return records


def pending() -> list[Path]:
    """Spool files waiting to be sent, oldest first."""
    root = spool_dir()
    if not root.is_dir():
        return []
    return sorted(root.glob("*.spool"), key=lambda p: p.stat().st_mtime)
