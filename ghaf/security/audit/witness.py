"""Witnessing signed checkpoints outside the database.

A checkpoint in ``audit_checkpoints`` can be deleted by whoever can write the database;
a copy in a witness they cannot rewrite cannot. Each checkpoint becomes one append-only
object ``audit-witness/<seq, 20 digits>.json`` in the artifact store (or the store
``GHAF_AUDIT_WITNESS_URL`` names): create-exclusive read-only files on local disk, S3
Object Lock in COMPLIANCE mode where the bucket has it. Optional sinks (a webhook, syslog)
get a copy too. ``ghaf audit verify`` checks the chain against the newest witnessed
checkpoint.

Writes happen after the checkpoint's transaction commits, in a background thread, never
inside a transaction; a failed write is logged and retried at the next checkpoint, the
next periodic run or the next verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ghaf.core.errors import ObjectExists
from ghaf.security.audit.chain import canonical_json

if TYPE_CHECKING:
    from ghaf.core.database import Database
    from ghaf.core.settings import Settings
    from ghaf.security.audit.service import AuditWriter

log = logging.getLogger("ghaf.audit")

PREFIX = "audit-witness/"
FORMAT = "ghaf-audit-witness"
_NAME = re.compile(r"audit-witness/(\d{20})\.json")
_CHECKPOINT_FIELDS = ("seq", "hash", "ts", "key_version", "mac")
_MAX_PENDING = 1000  # the newest checkpoint covers every older one


class Backend(Protocol):
    """What the witness needs of an object store (``ghaf.storage.backends.base.Backend``,
    which sits above ``security`` and is handed in by the runtime)."""

    url: str

    def put_immutable(self, key: str, data: bytes, *, retain_days: float) -> None: ...
    def read_immutable(self, key: str) -> bytes: ...
    def immutable_keys(self, prefix: str) -> Iterator[str]: ...


def witness_key(seq: int) -> str:
    return f"{PREFIX}{seq:020d}.json"


def encode(checkpoint: dict[str, Any]) -> bytes:
    body = {"format": FORMAT, "version": 1, **{k: checkpoint[k] for k in _CHECKPOINT_FIELDS}}
    return canonical_json(body) + b"\n"


def decode(data: bytes, seq: int) -> dict[str, Any]:
    """The checkpoint in a witness object; raises ValueError on anything malformed."""
    record = json.loads(data)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError("not a ghaf audit witness object")
    checkpoint = {k: record[k] for k in _CHECKPOINT_FIELDS}
    if checkpoint["seq"] != seq:
        raise ValueError(f"it names row {checkpoint['seq']}")
    return checkpoint


class Target:
    """One place checkpoints are sent to, with its own retry queue."""

    name = "target"

    def __init__(self) -> None:
        self.pending: dict[int, dict[str, Any]] = {}
        self.sent = 0  # the highest seq known to be delivered

    def send(self, checkpoint: dict[str, Any]) -> None:
        raise NotImplementedError


class StoreTarget(Target):
    """Append-only objects in an object store: what verify reads back."""

    def __init__(self, backend: Backend, *, retain_days: float) -> None:
        super().__init__()
        self.backend = backend
        self.retain_days = retain_days
        self.name = f"store {backend.url}"

    def send(self, checkpoint: dict[str, Any]) -> None:
        # ObjectExists: written before (another server, or an earlier try that timed out)
        with contextlib.suppress(ObjectExists):
            key = witness_key(int(checkpoint["seq"]))
            self.backend.put_immutable(key, encode(checkpoint), retain_days=self.retain_days)


class WebhookTarget(Target):
    """POSTs each checkpoint as JSON to a URL (a SIEM collector, a log service)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        super().__init__()
        self.url = url
        self.timeout_s = timeout_s
        self.name = "webhook"

    def send(self, checkpoint: dict[str, Any]) -> None:
        import httpx

        response = httpx.post(
            self.url,
            content=encode(checkpoint),
            headers={"content-type": "application/json"},
            timeout=self.timeout_s,
        )
        response.raise_for_status()


class SyslogTarget(Target):
    """One RFC 5424 message per checkpoint: ``host:port`` (UDP) or a unix socket path."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address
        self.name = f"syslog {address}"

    def send(self, checkpoint: dict[str, Any]) -> None:
        body = encode(checkpoint).decode().strip()
        # facility local0 (16), severity notice (5)
        host = socket.gethostname()
        data = f"<133>1 {checkpoint['ts']} {host} ghaf - audit-checkpoint - {body}".encode()
        if self.address.startswith("/"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(data, self.address)
            return
        host, _, port = self.address.rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(data, (host or "127.0.0.1", int(port)))


@dataclass
class WitnessView:
    """What the witness holds: every witnessed seq, and the newest checkpoint, or why
    it could not be read."""

    location: str
    seqs: list[int] = field(default_factory=list)
    latest: dict[str, Any] | None = None
    problem: str | None = None
    unsent: str | None = None


class AuditWitness:
    def __init__(self, store: StoreTarget, sinks: Sequence[Target] = ()) -> None:
        self.store = store
        self.targets: list[Target] = [store, *sinks]
        self._state = threading.Lock()
        self._io = threading.Lock()
        self._draining = False
        self.last_error: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, backend: Backend) -> AuditWitness:
        """``backend``: the store ``GHAF_AUDIT_WITNESS_URL`` names, or the artifact store."""
        sinks: list[Target] = []
        if settings.audit_webhook_url:
            sinks.append(WebhookTarget(settings.audit_webhook_url))
        if settings.audit_syslog_address:
            sinks.append(SyslogTarget(settings.audit_syslog_address))
        return cls(StoreTarget(backend, retain_days=settings.audit_witness_retention_days), sinks)

    @property
    def location(self) -> str:
        return f"{self.store.backend.url}/{PREFIX}"

    @property
    def witnessed_seq(self) -> int:
        """The newest seq this process knows the store holds (0 when unknown)."""
        return self.store.sent

    def record(self, checkpoints: Iterable[dict[str, Any]]) -> None:
        """Queue committed checkpoints and write them in a background thread."""
        with self._state:
            for checkpoint in checkpoints:
                seq = int(checkpoint["seq"])
                for target in self.targets:
                    if seq > target.sent:
                        target.pending[seq] = checkpoint
                        while len(target.pending) > _MAX_PENDING:
                            del target.pending[min(target.pending)]
            if self._draining or not any(t.pending for t in self.targets):
                return
            self._draining = True
        threading.Thread(target=self._drain, name="ghaf-audit-witness", daemon=True).start()

    def _drain(self) -> None:
        try:
            self.flush()
        finally:
            with self._state:
                self._draining = False

    def flush(self) -> bool:
        """Write everything pending now, oldest first; False if some write failed (it
        stays queued)."""
        ok = True
        with self._io:
            for target in self.targets:
                while True:
                    with self._state:
                        if not target.pending:
                            break
                        seq = min(target.pending)
                        checkpoint = target.pending[seq]
                    try:
                        target.send(checkpoint)
                    except Exception as exc:  # never fail the caller; retried next time
                        ok = False
                        self.last_error = f"{target.name}: {type(exc).__name__}: {exc}"
                        log.warning(
                            "audit checkpoint at row %s not written to the witness (%s); "
                            "will retry",
                            seq,
                            self.last_error,
                        )
                        break
                    with self._state:
                        target.pending.pop(seq, None)
                        target.sent = max(target.sent, seq)
            if ok:
                self.last_error = None
        return ok

    def view(self) -> WitnessView:
        """Flush, then read back what the store holds."""
        view = WitnessView(self.location)
        if not self.flush():
            view.unsent = self.last_error
        backend = self.store.backend
        try:
            seqs = []
            for key in backend.immutable_keys(PREFIX):
                match = _NAME.fullmatch(key)
                if match:
                    seqs.append(int(match.group(1)))
            view.seqs = sorted(set(seqs))
        except Exception as exc:
            view.problem = f"the witness at {self.location} cannot be listed: {exc}"
            return view
        if not view.seqs:
            return view
        newest = view.seqs[-1]
        try:
            view.latest = decode(backend.read_immutable(witness_key(newest)), newest)
        except Exception as exc:
            view.problem = (
                f"the witness object for row {newest} at {self.location} is unreadable or "
                f"forged: {exc}"
            )
        else:
            with self._state:
                self.store.sent = max(self.store.sent, newest)
        return view


def witness_tip(database: Database, writer: AuditWriter) -> int:
    """Sign and witness the chain's tip unless this process already witnessed it; then
    write whatever is queued. Returns the tip's seq (0 for an empty chain)."""
    from ghaf.security.audit.models import AuditHead

    with database.transaction(write=False) as session:
        head = session.get(AuditHead, 1)
        tip = int(head.seq) if head is not None else 0
    witness = writer.witness
    if tip and (witness is None or witness.witnessed_seq < tip):
        with database.transaction() as session:
            tip = writer.checkpoint(session) or tip
    if witness is not None:
        witness.flush()  # after the commit, outside any transaction
    return tip


async def witness_periodically(database: Database, writer: AuditWriter, interval_s: float) -> None:
    """At start-up, then every ``interval_s``: bounds the unwitnessed tail in time."""
    while True:
        try:
            await asyncio.to_thread(witness_tip, database, writer)
        except Exception:  # never take the server down
            log.exception("periodic audit checkpoint failed; retrying in %.0fs", interval_s)
        await asyncio.sleep(interval_s)
