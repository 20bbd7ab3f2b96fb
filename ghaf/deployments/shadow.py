"""Shadow traffic: a copy of each live request goes to every shadow variant, after the
caller has its answer and without ever holding it up.

The gateway offers each copy to a bounded queue (by count and by bytes); a full queue
drops the copy and counts it (``ghaf_deployment_shadow_dropped_total``), so a slow or
broken shadow costs the live traffic nothing but the offer. A few workers on the
server's event loop take copies off the queue, send each to a replica of its shadow
(started on demand like any replica, its start never on a caller's path), and record
the answer's latency and outcome with the variant's traffic. What the shadow answered
is kept beside what the live variant answered in the shadow log: Parquet files in the
deployment's project, stored through the storage flow (encrypted, residency-checked,
audited), at

    deployments/<deployment>/shadow/<variant>/<YYYY-MM-DD>/<id>.parquet

with one row per copy: ``at`` (UTC), ``request_id``, ``revision``, ``variant`` (the
shadow), ``primary`` (the live variant), ``status``, ``latency_ms``,
``primary_latency_ms``, ``request``, ``answer`` and ``primary_answer`` (the bodies as
they were sent; null past :data:`KEPT_BODY_BYTES`, with ``truncated`` true).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from ghaf.core.errors import GhafError
from ghaf.core.ids import new_id
from ghaf.deployments.fleet import Fleet
from ghaf.deployments.hosts.base import ReplicaSpec
from ghaf.deployments.traffic import ERROR, OK, REFUSED, Traffic, Where

log = logging.getLogger("ghaf.deployments")

KEPT_BODY_BYTES = 256 << 10  # larger bodies are counted, not kept, in the shadow log
ROWS_PER_FILE = 5_000
FILE_BYTES = 16 << 20
FILE_AGE_S = 60.0


@dataclass(frozen=True)
class Copy:
    """One live request and its answer, for one shadow variant."""

    where: Where
    revision: int
    spec: ReplicaSpec
    path: str
    body: bytes
    headers: dict[str, str]
    request_id: str
    primary: str
    primary_answer: bytes
    primary_s: float

    @property
    def size(self) -> int:
        return len(self.body) + len(self.primary_answer)


Write = Callable[[str, str, bytes], None]
"""Store ``data`` at ``path`` in ``project`` (runs on a worker thread)."""


@dataclass
class _File:
    rows: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0
    opened: float = field(default_factory=time.monotonic)


class ShadowLog:
    """What shadows answered beside what the live variant answered, in Parquet files
    per (project, deployment, variant, day), each stored once it is large or old."""

    def __init__(
        self, write: Write, *, rotate_s: float = FILE_AGE_S, most_files: int = 512
    ) -> None:
        self._write = write
        self.rotate_s = rotate_s
        self._files: dict[tuple[str, str, str, str], _File] = {}
        self._most_files = most_files
        self.stored_files = 0
        self.dropped_rows = 0

    def add(self, copy: Copy, *, status: int, seconds: float, answer: bytes) -> None:
        now = datetime.now(UTC)
        key = (copy.where.project, copy.where.deployment, copy.where.variant, f"{now:%Y-%m-%d}")
        found = self._files.get(key)
        if found is None:
            if len(self._files) >= self._most_files:
                self.dropped_rows += 1  # many deployments at once: bounded memory
                return
            found = self._files[key] = _File()
        truncated = max(len(copy.body), len(answer), len(copy.primary_answer)) > KEPT_BODY_BYTES

        def kept(data: bytes) -> bytes | None:
            return None if len(data) > KEPT_BODY_BYTES else data

        request, shadow_answer, primary_answer = (
            kept(copy.body),
            kept(answer),
            kept(copy.primary_answer),
        )
        found.rows.append(
            {
                "at": now,
                "request_id": copy.request_id,
                "revision": copy.revision,
                "variant": copy.where.variant,
                "primary": copy.primary,
                "status": status,
                "latency_ms": seconds * 1000,
                "primary_latency_ms": copy.primary_s * 1000,
                "request": request,
                "answer": shadow_answer,
                "primary_answer": primary_answer,
                "truncated": truncated,
            }
        )
        found.bytes += sum(len(part or b"") for part in (request, shadow_answer, primary_answer))

    def due(self, *, everything: bool = False) -> list[tuple[tuple[str, str, str, str], _File]]:
        """The files to store now (all of them when ``everything``), taken out."""
        now = time.monotonic()
        taken = []
        for key, found in list(self._files.items()):
            if (
                everything
                or len(found.rows) >= ROWS_PER_FILE
                or found.bytes >= FILE_BYTES
                or now - found.opened >= self.rotate_s
            ):
                taken.append((key, self._files.pop(key)))
        return taken

    async def store(self, *, everything: bool = False) -> None:
        for (project, deployment, variant, day), found in self.due(everything=everything):
            path = f"deployments/{deployment}/shadow/{variant}/{day}/{new_id()}.parquet"
            try:
                data = await run_in_threadpool(_parquet, found.rows)
                await run_in_threadpool(self._write, project, path, data)
                self.stored_files += 1
            except Exception:  # a project removed meanwhile, storage refusing
                self.dropped_rows += len(found.rows)
                log.exception("could not store the shadow log of %s/%s", deployment, variant)


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("at", pa.timestamp("us", tz="UTC")),
            ("request_id", pa.string()),
            ("revision", pa.int64()),
            ("variant", pa.string()),
            ("primary", pa.string()),
            ("status", pa.int32()),
            ("latency_ms", pa.float64()),
            ("primary_latency_ms", pa.float64()),
            ("request", pa.binary()),
            ("answer", pa.binary()),
            ("primary_answer", pa.binary()),
            ("truncated", pa.bool_()),
        ],
        metadata={"ghaf.shadow_log": "1"},
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


class Mirror:
    """The bounded queue of copies and the workers that send them to shadows."""

    def __init__(
        self,
        fleet: Fleet,
        traffic: Traffic,
        shadow_log: ShadowLog | None,
        *,
        most: int = 1000,
        most_bytes: int = 64 << 20,
        workers: int = 4,
        current: Callable[[str], int] | None = None,
    ) -> None:
        self._fleet = fleet
        # The newest revision the gateway saw of a deployment: a copy made under an older
        # one is not sent (its shadow may be gone; sending would start it again).
        self._current = current or (lambda _deployment: 0)
        self._traffic = traffic
        self._log = shadow_log
        self._queue: asyncio.Queue[Copy] = asyncio.Queue(maxsize=most)
        self._most_bytes = most_bytes
        self._queued_bytes = 0
        self._workers = workers
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self.sent = 0
        self.stale = 0  # copies made under a revision older than the newest, not sent

    def offer(self, copy: Copy) -> bool:
        """Queue ``copy`` unless the queue is full (then it is dropped and counted)."""
        if self._queued_bytes + copy.size > self._most_bytes or self._queue.full():
            self._traffic.dropped(copy.where)
            return False
        self._queue.put_nowait(copy)
        self._queued_bytes += copy.size
        return True

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]
        if self._log is not None:
            self._tasks.append(asyncio.create_task(self._store_log()))

    @property
    def idle(self) -> bool:
        """Whether every copy offered so far has been sent (or failed)."""
        return self._queue.empty() and self._busy == 0

    async def _work(self) -> None:
        while True:
            copy = await self._queue.get()
            self._queued_bytes -= copy.size
            self._busy += 1
            try:
                await self._send(copy)
            except Exception:  # never lose a worker to one copy
                log.exception("a shadow copy to %s failed", copy.where.variant)
            finally:
                self._busy -= 1

    async def _send(self, copy: Copy) -> None:
        if copy.revision < self._current(copy.where.deployment_id):
            self.stale += 1
            return
        started = time.perf_counter()
        status, answer = 503, b""
        try:
            replica = await self._fleet.replica(copy.spec)
            started = time.perf_counter()  # its cold start is not its latency
            forwarded = await self._fleet.forward(replica, copy.path, copy.body, copy.headers)
            status, answer = forwarded.status, forwarded.body
        except GhafError as error:
            status = error.status
        seconds = time.perf_counter() - started
        outcome = OK if status < 400 else REFUSED if status < 500 else ERROR
        self._traffic.record(copy.where, copy.revision, seconds, outcome)
        self.sent += 1
        if self._log is not None:
            self._log.add(copy, status=status, seconds=seconds, answer=answer)

    async def _store_log(self) -> None:
        assert self._log is not None
        while True:
            await asyncio.sleep(min(1.0, self._log.rotate_s / 2))
            await self._log.store()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._log is not None:
            await self._log.store(everything=True)
