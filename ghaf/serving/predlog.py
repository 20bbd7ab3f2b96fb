"""The prediction log: every answered request, in Parquet, in the model's project.

A request hands its record (inputs, outputs, model and version, latency, request id,
caller, time) to :meth:`PredictionLog.log`, which only appends it to a bounded
in-memory queue: when the queue is full (``queue_size`` records or ``queue_bytes`` of
tensors) the record is dropped and counted, so a request is never slowed by logging.
A writer thread drains the queue every ``flush_s`` seconds, turns what it took into
Arrow columns (one concatenation per tensor, no loop over rows) and appends them to an
in-memory Parquet file per model version. A file is closed and stored once it holds
``rotate_bytes`` or is ``rotate_s`` old (or the UTC date changed), at

    predictions/<model>/<version>/<YYYY-MM-DD>/<id>.parquet

in the model's project, through a :class:`PredictionSink`:

- :class:`StoreSink` beside the platform: the storage flow
  (:func:`ghaf.storage.flows.upload_artifact`) with a system context, so the file is
  encrypted and residency-checked like every artifact, and its write audited;
- :class:`ClientSink` for a standalone ``ghaf serve``: the SDK's ``client.artifacts``
  with the server's own token (the same flow, behind the platform's REST API).

A file the sink could not store is kept and retried (at most ``pending_files``; older
ones are given up and their rows counted as dropped). Plaintext never touches the
local disk. The schema of a file is in docs/serving.md ("Prediction log").
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from ghaf.core.errors import GhafError, InvalidInput
from ghaf.core.ids import new_id, new_request_id

if TYPE_CHECKING:
    import pyarrow as pa

    from ghaf.runtime import Runtime

__all__ = [
    "EXCHANGE",
    "ClientSink",
    "Exchange",
    "PredictionLog",
    "PredictionLogOptions",
    "PredictionSink",
    "StoreSink",
    "log_path",
]
log = logging.getLogger("ghaf.serving")
Array = np.ndarray[Any, Any]
SYSTEM_ACTOR = "system:prediction-log"
SCHEMA_VERSION = "1"
# The columns worth a dictionary page (few distinct values). Trying one on every tensor
# column (Parquet's default) takes 40% of the writer's time for float features, which
# rarely repeat, on the cores the requests need; zstd still compresses what does.
_DICTIONARY = ["request_id", "model", "caller"]


# --- what a request leaves for the log --------------------------------------------------


class Exchange:
    """What one request did, filled in as it runs (the serving app's observer reads it
    when the response is sent): the model it named, and its inputs and outputs once
    the model answered."""

    __slots__ = ("inputs", "model", "outputs")

    def __init__(self) -> None:
        self.model: Any = None  # the ServedModel the request named
        self.inputs: Mapping[str, Array] | None = None
        self.outputs: Mapping[str, Array] | None = None


EXCHANGE: ContextVar[Exchange | None] = ContextVar("ghaf_serving_exchange", default=None)
"""The current request's :class:`Exchange` (set by the app's observer, ghaf/serving/app.py)."""


# --- options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictionLogOptions:
    """How much the log buffers and how often it writes."""

    queue_size: int = 10_000
    queue_bytes: int = 256 << 20
    rotate_bytes: int = 32 << 20
    rotate_s: float = 300.0
    flush_s: float = 1.0
    pending_files: int = 4

    def __post_init__(self) -> None:
        for name in ("queue_size", "queue_bytes", "rotate_bytes", "pending_files"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1", field=name)
        for name in ("rotate_s", "flush_s"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"{name} must be positive", field=name)


class _Record(NamedTuple):
    timestamp: float  # seconds since the epoch, UTC
    request_id: str
    project: str
    model: str
    version: str
    caller: str
    latency_ms: float
    rows: int
    inputs: Mapping[str, Array]
    outputs: Mapping[str, Array]


def log_path(model: str, version: str, when: datetime, file_id: str) -> str:
    """Where a file of the log lives in its project (docs/serving.md)."""
    return f"predictions/{model}/{version}/{when:%Y-%m-%d}/{file_id}.parquet"


# --- where files go ----------------------------------------------------------------------


class PredictionSink(Protocol):
    """Stores one finished Parquet file as an artifact of ``project``."""

    def write(self, project: str, path: str, data: bytes) -> None: ...


class StoreSink:
    """Beside the platform: the storage flow itself, as ghaf's own work (a system
    context: encrypted with the project's key, refused outside its allowed regions,
    audited as ``artifact:put`` by ``system:prediction-log``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def write(self, project: str, path: str, data: bytes) -> None:
        from ghaf.storage import flows

        sha256 = hashlib.sha256(data).hexdigest()
        with self.runtime.acting_as(SYSTEM_ACTOR, request_id=new_request_id()) as ctx:
            # The writer thread has no event loop of its own; the flow needs one.
            asyncio.run(flows.upload_artifact(ctx, project, path, [data], sha256=sha256))


class ArtifactUploader(Protocol):
    """What the log needs of the SDK's ``client.artifacts``."""

    def upload(self, project: str, path: str, source: bytes) -> Any: ...


class ClientSink:
    """A standalone server: the platform's artifact API, with the server's token."""

    def __init__(self, artifacts: ArtifactUploader) -> None:
        self.artifacts = artifacts

    def write(self, project: str, path: str, data: bytes) -> None:
        self.artifacts.upload(project, path, data)


# --- the log -----------------------------------------------------------------------------


@dataclass
class LogStats:
    """Counts since start (``/metrics`` exports them)."""

    logged: int = 0  # records queued
    # Records lost; each count has one writer thread, so no lock is needed.
    dropped_full: int = 0  # the queue was full (the event loop counts)
    dropped_lost: int = 0  # not convertible, or their file was given up (the writer)
    rows: int = 0  # rows stored in files
    files: int = 0  # files stored
    failures: int = 0  # sink writes that failed (retried)

    @property
    def dropped(self) -> int:
        return self.dropped_full + self.dropped_lost


@dataclass
class _OpenFile:
    project: str
    model: str
    version: str
    schema: pa.Schema
    opened: float
    day: str
    buffer: Any  # pa.BufferOutputStream
    writer: Any  # pq.ParquetWriter
    rows: int = 0
    records: int = 0


@dataclass
class _Pending:
    project: str
    path: str
    data: bytes
    rows: int
    records: int
    attempts: int = 0
    next_try: float = 0.0


@dataclass
class PredictionLog:
    """The bounded queue and its writer thread (start it before serving, stop it after:
    stopping drains the queue and stores every open file)."""

    sink: PredictionSink
    options: PredictionLogOptions = field(default_factory=PredictionLogOptions)
    stats: LogStats = field(default_factory=LogStats)

    def __post_init__(self) -> None:
        self._queue: deque[_Record] = deque()
        # Each counter is written by one thread only (the event loop adds, the writer
        # takes), so their difference is the queued bytes without a lock.
        self._bytes_in = 0
        self._bytes_out = 0
        self._open: dict[tuple[str, str, str], _OpenFile] = {}
        self._pending: deque[_Pending] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one drain at a time (the thread, or flush())

    @property
    def depth(self) -> int:
        """Records waiting for the writer."""
        return len(self._queue)

    # --- the request side: never blocks ----------------------------------------------

    def log(
        self,
        *,
        project: str,
        model: str,
        version: str,
        request_id: str,
        caller: str,
        latency_s: float,
        inputs: Mapping[str, Array],
        outputs: Mapping[str, Array],
    ) -> bool:
        """Queue one answered request; False (and counted) when the queue is full."""
        size = 0
        for array in inputs.values():
            size += array.nbytes
        for array in outputs.values():
            size += array.nbytes
        options = self.options
        if (
            len(self._queue) >= options.queue_size
            or self._bytes_in - self._bytes_out + size > options.queue_bytes
        ):
            self.stats.dropped_full += 1
            return False
        rows = _rows(inputs)
        self._bytes_in += size
        self._queue.append(
            _Record(
                time.time(),
                request_id,
                project,
                model,
                version,
                caller,
                latency_s * 1000.0,
                rows,
                inputs,
                outputs,
            )
        )
        self.stats.logged += 1
        return True

    # --- the writer ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ghaf-prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Drain the queue, store every open file (one try each), end the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("the prediction log writer did not finish within %.0f s", timeout_s)

    def flush(self) -> None:
        """Drain the queue and store every open file now (tests; the writer's stop)."""
        with self._lock:
            self._drain()
            for key in list(self._open):
                self._close(key)
            self._send_pending(force=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.options.flush_s):
                with self._lock:
                    self._drain()
                    self._rotate_due()
                    self._send_pending(force=False)
        except Exception:  # never let the thread die silently; requests go on
            log.exception("the prediction log writer failed; records are dropped from now")
            return
        self.flush()

    def _drain(self) -> None:
        """Take every queued record and append them to their files."""
        taken: list[_Record] = []
        size = 0
        for _ in range(len(self._queue)):
            record = self._queue.popleft()
            taken.append(record)
            size += sum(a.nbytes for a in record.inputs.values())
            size += sum(a.nbytes for a in record.outputs.values())
        self._bytes_out += size
        if not taken:
            return
        groups: dict[tuple[Any, ...], list[_Record]] = {}
        for record in taken:
            groups.setdefault(_group_key(record), []).append(record)
        for records in groups.values():
            try:
                table = _table(records)
            except Exception:
                log.exception(
                    "prediction log: %d record(s) of %s v%s could not be converted; dropped",
                    len(records),
                    records[0].model,
                    records[0].version,
                )
                self.stats.dropped_lost += len(records)
                continue
            self._append(records[0], table, len(records))

    def _append(self, first: _Record, table: pa.Table, records: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        key = (first.project, first.model, first.version)
        day = f"{datetime.fromtimestamp(first.timestamp, UTC):%Y-%m-%d}"
        current = self._open.get(key)
        if current is not None and (current.schema != table.schema or current.day != day):
            self._close(key)
            current = None
        if current is None:
            buffer = pa.BufferOutputStream()
            current = _OpenFile(
                project=first.project,
                model=first.model,
                version=first.version,
                schema=table.schema,
                opened=time.monotonic(),
                day=day,
                buffer=buffer,
                writer=pq.ParquetWriter(
                    buffer, table.schema, compression="zstd", use_dictionary=_DICTIONARY
                ),
            )
            self._open[key] = current
        current.writer.write_table(table)
        current.rows += table.num_rows
        current.records += records
        if current.buffer.tell() >= self.options.rotate_bytes:
            self._close(key)

    def _rotate_due(self) -> None:
        now = time.monotonic()
        today = f"{datetime.now(UTC):%Y-%m-%d}"
        for key, current in list(self._open.items()):
            if now - current.opened >= self.options.rotate_s or current.day != today:
                self._close(key)

    def _close(self, key: tuple[str, str, str]) -> None:
        current = self._open.pop(key)
        current.writer.close()
        data = current.buffer.getvalue().to_pybytes()
        when = datetime.strptime(current.day, "%Y-%m-%d").replace(tzinfo=UTC)
        path = log_path(current.model, current.version, when, new_id())
        self._pending.append(_Pending(current.project, path, data, current.rows, current.records))

    def _send_pending(self, *, force: bool) -> None:
        """Store the closed files that are due (all of them with ``force``); keep those
        that failed for a later try, at most ``pending_files`` of them."""
        now = time.monotonic()
        kept: deque[_Pending] = deque()
        while self._pending:
            item = self._pending.popleft()
            if not force and item.next_try > now:
                kept.append(item)
                continue
            try:
                self.sink.write(item.project, item.path, item.data)
            except Exception as exc:
                self.stats.failures += 1
                item.attempts += 1
                item.next_try = now + min(60.0, 2.0**item.attempts)
                # GhafError details name what went wrong and never carry a token.
                why = exc.detail if isinstance(exc, GhafError) else type(exc).__name__
                final = _refused(exc)
                log.warning(
                    "prediction log: could not store %s in project %s (try %d%s): %s",
                    item.path,
                    item.project,
                    item.attempts,
                    "; given up" if final else "",
                    why,
                )
                if final:  # a refusal (residency, permission) would only repeat
                    self.stats.dropped_lost += item.records
                    continue
                kept.append(item)
                if force:  # the rest would likely fail alike: keep them for later
                    kept.extend(self._pending)
                    self._pending.clear()
                continue
            self.stats.files += 1
            self.stats.rows += item.rows
        while len(kept) > self.options.pending_files:
            lost = kept.popleft()
            self.stats.dropped_lost += lost.records
            log.warning(
                "prediction log: gave up storing %s (%d rows) in project %s",
                lost.path,
                lost.rows,
                lost.project,
            )
        self._pending = kept


def _refused(error: Exception) -> bool:
    """Did the platform refuse the file for good (a 4xx other than a timeout or a
    rate limit), rather than fail to take it now?"""
    return (
        isinstance(error, GhafError)
        and 400 <= error.status < 500
        and error.status
        not in (
            408,
            429,
        )
    )


# --- records -> Arrow --------------------------------------------------------------------


def _rows(inputs: Mapping[str, Array]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


def _per_row(array: Array, rows: int) -> bool:
    """Does this tensor have one entry per row (so it can be a column)?"""
    return array.ndim >= 1 and array.shape[0] == rows


def _tensor_key(tensors: Mapping[str, Array], rows: int) -> tuple[Any, ...]:
    return tuple(
        (name, a.dtype.str, a.shape[1:]) for name, a in tensors.items() if _per_row(a, rows)
    )


def _group_key(record: _Record) -> tuple[Any, ...]:
    return (
        record.project,
        record.model,
        record.version,
        _tensor_key(record.inputs, record.rows),
        _tensor_key(record.outputs, record.rows),
    )


def _column(parts: list[Array]) -> pa.Array:
    """One tensor of many records as an Arrow column (one entry per row): scalars as
    values, wider tensors as fixed-size lists of their row-major values."""
    import pyarrow as pa

    array = np.concatenate(parts) if len(parts) > 1 else parts[0]
    flat = array.reshape(-1)
    if array.dtype.kind in "OSU":  # BYTES tensors: bytes stay binary, text stays text
        text = array.dtype.kind == "U" or (
            array.dtype.kind == "O" and all(isinstance(v, str) for v in flat.tolist())
        )
        values = pa.array(flat.tolist(), type=pa.string() if text else pa.binary())
    else:
        values = pa.array(flat)
    if array.ndim <= 1:
        return values
    return pa.FixedSizeListArray.from_arrays(values, int(np.prod(array.shape[1:])))


def _struct(records: list[_Record], which: str) -> tuple[pa.Array, dict[str, list[int]]]:
    import pyarrow as pa

    first: Mapping[str, Array] = getattr(records[0], which)
    names = [n for n, a in first.items() if _per_row(a, records[0].rows)]
    shapes = {n: [int(d) for d in first[n].shape[1:]] for n in names}
    if not names:
        rows = sum(r.rows for r in records)
        return pa.nulls(rows, pa.struct([])), shapes
    children = [_column([getattr(r, which)[n] for r in records]) for n in names]
    return pa.StructArray.from_arrays(children, names=names), shapes


def _table(records: list[_Record]) -> pa.Table:
    """The rows of ``records`` (one group: the same model version and tensor types)."""
    import pyarrow as pa

    counts = np.fromiter((r.rows for r in records), dtype=np.int64, count=len(records))

    def repeat(values: list[Any], kind: pa.DataType) -> pa.Array:
        # Each record's value once, then repeated for its rows by Arrow's take (in C): a
        # Python string per row costs the writer as much as the Parquet encoding.
        return pa.array(values, type=kind).take(np.repeat(np.arange(len(values)), counts))

    stamps = np.repeat(
        np.asarray([r.timestamp for r in records], dtype=np.float64) * 1e6, counts
    ).astype("datetime64[us]")
    row = np.concatenate([np.arange(n, dtype=np.int32) for n in counts.tolist()])
    inputs, input_shapes = _struct(records, "inputs")
    outputs, output_shapes = _struct(records, "outputs")
    total = int(counts.sum())
    first = records[0]
    columns = {
        "timestamp": pa.array(stamps, type=pa.timestamp("us", tz="UTC")),
        "request_id": repeat([r.request_id for r in records], pa.string()),
        "row": pa.array(row, type=pa.int32()),
        "model": pa.DictionaryArray.from_arrays(
            pa.array(np.zeros(total, dtype=np.int32)), pa.array([first.model])
        ),
        "version": pa.array(np.full(total, int(first.version), dtype=np.int64)),
        "caller": repeat([r.caller for r in records], pa.string()),
        "latency_ms": pa.array(np.repeat([r.latency_ms for r in records], counts)),
        "inputs": inputs,
        "outputs": outputs,
    }
    metadata = {
        "ghaf.prediction_log": SCHEMA_VERSION,
        "ghaf.project": first.project,
        "ghaf.input_shapes": json.dumps(input_shapes),
        "ghaf.output_shapes": json.dumps(output_shapes),
    }
    return pa.table(columns).replace_schema_metadata(metadata)
