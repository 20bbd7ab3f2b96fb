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
ones are given up and their rows counted as dropped, as are those still not stored
when the log stops, after one more try each). Plaintext never touches the
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
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, Protocol

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
"""The current request's :class:`Exchange` (set by ``Observation``, ghaf/serving/metrics.py)."""


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


# A queued record is a plain tuple of these fields. Neither a NamedTuple nor the
# request's dicts: the garbage collector untracks a plain tuple of untracked values
# (strings, numbers, numpy arrays, tuples of them) at its first pass, but keeps the
# others, and a second of records surviving into the oldest generation sets off a full
# collection, which stops the event loop for tens of milliseconds.
_Record = tuple[Any, ...]
(
    _TIMESTAMP,  # float: seconds since the epoch, UTC
    _REQUEST_ID,  # str
    _PROJECT,  # str
    _MODEL,  # str
    _VERSION,  # str
    _CALLER,  # str
    _LATENCY_MS,  # float
    _ROWS,  # int
    _NBYTES,  # int: of its tensors (the queue's byte count)
    _INPUT_NAMES,  # tuple[str, ...]
    _INPUTS,  # tuple[Array, ...], in the names' order
    _OUTPUT_NAMES,
    _OUTPUTS,
) = range(13)


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

    def __init__(self, runtime: Runtime, *, actor: str = SYSTEM_ACTOR) -> None:
        self.runtime = runtime
        self.actor = actor

    def write(self, project: str, path: str, data: bytes) -> None:
        from ghaf.storage import flows

        sha256 = hashlib.sha256(data).hexdigest()
        with self.runtime.acting_as(self.actor, request_id=new_request_id()) as ctx:
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
    # Not convertible, their file given up, or lost to a fault of the writer's.
    dropped_lost: int = 0
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
        # Records the writer took from the queue, and those of them it stored or
        # counted as dropped: the rest are in its files, or were lost to a fault.
        self._taken = 0
        self._settled = 0
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
        in_arrays = tuple(inputs.values())
        out_arrays = tuple(outputs.values())
        size = 0
        for array in in_arrays:
            size += array.nbytes
        for array in out_arrays:
            size += array.nbytes
        options = self.options
        if (
            len(self._queue) >= options.queue_size
            or self._bytes_in - self._bytes_out + size > options.queue_bytes
        ):
            self.stats.dropped_full += 1
            return False
        self._bytes_in += size
        self._queue.append(
            (
                time.time(),
                request_id,
                project,
                model,
                version,
                caller,
                latency_s * 1000.0,
                _rows(in_arrays),
                size,
                tuple(inputs),
                in_arrays,
                tuple(outputs),
                out_arrays,
            )
        )
        self.stats.logged += 1
        return True

    # --- the writer ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (before serving)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ghaf-prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Drain the queue, store every open and pending file (one try each: those that
        fail are given up and counted), end the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s)
        if thread.is_alive():
            log.warning("the prediction log writer did not finish within %.0f s", timeout_s)

    def flush(self) -> None:
        """Drain the queue and store every open file now (tests); a file the sink did
        not take stays pending for the writer's next try."""
        self._turn(closing=True, last=False)

    def _run(self) -> None:
        # pyarrow is imported by the first drain, not at start: a server that logs
        # nothing yet stays small (idle RSS 146 MB, 221 MB with pyarrow and the pandas
        # it pulls in), at the price of one slow drain.
        while not self._stop.wait(self.options.flush_s):
            self._turn(closing=False, last=False)
        # No later try once the thread ends: what the sink does not take now is lost.
        self._turn(closing=True, last=True)

    def _turn(self, *, closing: bool, last: bool) -> None:
        """One turn of the writer: take the queued records into their files, close the
        files due (every one when ``closing``), store the closed ones (each once when
        ``last``, then give up those that failed). A step that fails (a fault of
        ghaf's) keeps none of the others from running, and the records it held are
        counted as dropped."""
        with self._lock:
            self._step(self._drain)
            keys = list(self._open) if closing else self._due()
            for key in keys:
                self._step(partial(self._close, key))
            self._step(partial(self._send_pending, force=closing, last=last))
            self._count_lost()

    @staticmethod
    def _step(step: Callable[[], None]) -> None:
        try:
            step()
        except Exception:  # the thread goes on, requests too
            log.exception("the prediction log writer failed")

    def _count_lost(self) -> None:
        """Count as dropped the records taken but neither settled nor in a file (after a
        turn, when no step holds any)."""
        held = sum(f.records for f in self._open.values())
        held += sum(p.records for p in self._pending)
        lost = self._taken - self._settled - held
        if lost > 0:
            log.error("prediction log: %d record(s) lost to a writer failure", lost)
            self._drop(lost)

    def _drop(self, records: int) -> None:
        self.stats.dropped_lost += records
        self._settled += records

    def _drain(self) -> None:
        """Take every queued record and append them to their files.

        The records are taken and converted ``_CHUNK`` at a time, and the GIL given up
        every ``_HOLD_S`` between chunks: the event loop shares this process, and while
        the writer holds the GIL the loop stands still (up to the 5 ms switch interval,
        or a whole C call).
        The chunks of one group are written together (one row group per drain, as if
        converted at once); the Parquet encoding itself runs without the GIL."""
        queue = self._queue
        groups: dict[tuple[Any, ...], _Group] = {}
        left = len(queue)  # what came in meanwhile waits for the next drain
        held = time.perf_counter()  # since the writer last gave up the GIL
        half = self.options.queue_size // 2
        while left:
            count = min(left, _CHUNK)
            left -= count
            chunk = [queue.popleft() for _ in range(count)]
            self._taken += count
            self._bytes_out += sum(map(itemgetter(_NBYTES), chunk))
            for key, records in _split(chunk):
                group = groups.get(key)
                if group is None:
                    groups[key] = group = _Group()
                group.add(records)
            if time.perf_counter() - held >= _HOLD_S and len(queue) < half:
                # Let the event loop have the GIL. Getting it back can take long on a
                # busy loop (it releases and retakes the GIL faster than this thread
                # wakes): a writer falling behind (the queue half full) stops
                # yielding, and the loop waits up to the switch interval rather than
                # records being dropped.
                time.sleep(0)
                held = time.perf_counter()
        for group in groups.values():
            table = group.table()
            if table is None:
                first = group.records[0]
                log.error(
                    "prediction log: %d record(s) of %s v%s could not be converted; dropped",
                    len(group.records),
                    first[_MODEL],
                    first[_VERSION],
                    exc_info=group.error,
                )
                self._drop(len(group.records))
                continue
            try:
                self._append(group.records[0], table, len(group.records))
            except Exception:  # e.g. Parquet refuses a record with no per-row outputs
                log.exception(
                    "prediction log: %d record(s) of %s v%s could not be written; dropped",
                    len(group.records),
                    group.records[0][_MODEL],
                    group.records[0][_VERSION],
                )
                self._drop(len(group.records))

    def _append(self, first: _Record, table: pa.Table, records: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        key: tuple[str, str, str] = (first[_PROJECT], first[_MODEL], first[_VERSION])
        day = f"{datetime.fromtimestamp(first[_TIMESTAMP], UTC):%Y-%m-%d}"
        current = self._open.get(key)
        # With the metadata: the shapes it names differ where the columns may not
        # ((2, 3) and (3, 2) rows are both lists of 6).
        if current is not None and (
            not current.schema.equals(table.schema, check_metadata=True) or current.day != day
        ):
            self._close(key)
            current = None
        if current is None:
            buffer = pa.BufferOutputStream()
            current = _OpenFile(
                project=first[_PROJECT],
                model=first[_MODEL],
                version=first[_VERSION],
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

    def _due(self) -> list[tuple[str, str, str]]:
        """The open files old enough, or of a past day, to be closed."""
        now = time.monotonic()
        today = f"{datetime.now(UTC):%Y-%m-%d}"
        return [
            key
            for key, current in self._open.items()
            if now - current.opened >= self.options.rotate_s or current.day != today
        ]

    def _close(self, key: tuple[str, str, str]) -> None:
        current = self._open.pop(key)
        current.writer.close()
        data = _bytes(current.buffer.getvalue())
        when = datetime.strptime(current.day, "%Y-%m-%d").replace(tzinfo=UTC)
        path = log_path(current.model, current.version, when, new_id())
        self._pending.append(_Pending(current.project, path, data, current.rows, current.records))

    def _send_pending(self, *, force: bool, last: bool) -> None:
        """Store the closed files that are due (all of them with ``force``); keep those
        that failed for a later try, at most ``pending_files`` of them, or with
        ``last`` (there is no later) try each one and give up those that fail."""
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
                final = last or _refused(exc)
                log.warning(
                    "prediction log: could not store %s in project %s (try %d%s): %s",
                    item.path,
                    item.project,
                    item.attempts,
                    "; given up" if final else "",
                    why,
                )
                # A refusal (residency, permission) would only repeat; the last try has
                # no later one.
                if final:
                    self._drop(item.records)
                    continue
                kept.append(item)
                if force:  # the rest would likely fail alike: keep them for later
                    kept.extend(self._pending)
                    self._pending.clear()
                continue
            self.stats.files += 1
            self.stats.rows += item.rows
            self._settled += item.records
        while len(kept) > self.options.pending_files:
            lost = kept.popleft()
            self._drop(lost.records)
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

# Records taken and converted at a time (~0.2 ms of Python and numpy work for 1-row
# records), and how long the writer works before it gives up the GIL: the event loop
# then waits for it at most about _HOLD_S plus a chunk, not the 5 ms switch interval.
_CHUNK = 128
_HOLD_S = 0.0005
# Pieces of a finished file copied into bytes per hold of the GIL (~0.1 ms each); the
# pieces' join runs without it.
_COPY_PIECE = 1 << 20
# Getters in C: a chunk's dtypes and shapes are read by map(), no Python frame each.
_DTYPE = attrgetter("dtype")
_SHAPE = attrgetter("shape")


class _Group:
    """The records of one drain with the same group key (one file, one schema). Each
    chunk is gathered into numpy arrays as it is taken (no GIL given up: pyarrow's
    calls release and retake it, and on a busy loop each retake is a long wait); the
    Arrow table is built once, from the whole group, as if converted at once."""

    def __init__(self) -> None:
        self.records: list[_Record] = []
        self.error: Exception | None = None  # the group could not be converted
        self._fields: dict[int, list[Any]] = {
            _ROWS: [],
            _TIMESTAMP: [],
            _LATENCY_MS: [],
            _REQUEST_ID: [],
            _CALLER: [],
        }
        self._tensors: dict[int, dict[str, list[Array]]] = {}  # names_at -> name -> parts
        self._shapes: dict[int, dict[str, list[int]]] = {}

    def add(self, records: list[_Record]) -> None:
        if not self.records:
            first = records[0]
            for names_at in (_INPUT_NAMES, _OUTPUT_NAMES):
                names = first[names_at]
                per_row = [
                    (name, array)
                    for name, array in zip(names, first[names_at + 1], strict=True)
                    if _per_row(array, first[_ROWS])
                ]
                self._tensors[names_at] = {name: [] for name, _ in per_row}
                self._shapes[names_at] = {n: [int(d) for d in a.shape[1:]] for n, a in per_row}
        self.records.extend(records)
        if self.error is not None:  # the whole group is dropped anyway
            return
        try:
            self._gather(records)
        except Exception as exc:
            self.error = exc

    def _gather(self, records: list[_Record]) -> None:
        n = len(records)
        fields = list(zip(*records, strict=True))  # one tuple per field, in C
        gathered = self._fields
        gathered[_ROWS].append(np.fromiter(fields[_ROWS], dtype=np.int64, count=n))
        gathered[_TIMESTAMP].append(np.fromiter(fields[_TIMESTAMP], dtype=np.float64, count=n))
        gathered[_LATENCY_MS].append(np.fromiter(fields[_LATENCY_MS], dtype=np.float64, count=n))
        gathered[_REQUEST_ID].extend(fields[_REQUEST_ID])
        gathered[_CALLER].extend(fields[_CALLER])
        for names_at, columns in self._tensors.items():
            if not columns:
                continue
            names = self.records[0][names_at]
            if set(fields[names_at]) == {names}:  # the same tensors everywhere: by position
                by_tensor = list(zip(*fields[names_at + 1], strict=True))  # in C
                for i, name in enumerate(names):
                    if name in columns:
                        columns[name].append(_concatenate(by_tensor[i]))
            else:  # a group shares its per-row tensors only: look each one up by name
                tensors = [
                    dict(zip(names, arrays, strict=True))
                    for names, arrays in zip(fields[names_at], fields[names_at + 1], strict=True)
                ]
                for name, parts in columns.items():
                    parts.append(_concatenate(tuple(t[name] for t in tensors)))

    def table(self) -> pa.Table | None:
        """All the group's rows, or None when they could not be converted (the error
        is in ``error``)."""
        if self.error is None:
            try:
                return self._table()
            except Exception as exc:
                self.error = exc
        return None

    def _table(self) -> pa.Table:
        import pyarrow as pa

        gathered = self._fields
        n = len(self.records)
        counts = _concatenate(gathered[_ROWS])
        total = int(counts.sum())
        single = total == n and bool((counts == 1).all())  # 1-row records: nothing repeats
        index = None if single else np.repeat(np.arange(n), counts)

        def each(which: int) -> Array:
            values = _concatenate(gathered[which])
            return values if index is None else values[index]

        def repeat(which: int) -> pa.Array:
            # Each record's value once, then repeated for its rows by Arrow's take (in
            # C): a Python string per row costs as much as the Parquet encoding.
            values = pa.array(gathered[which], type=pa.string())
            return values if index is None else values.take(index)

        def struct(names_at: int) -> pa.Array:
            columns = self._tensors[names_at]
            if not columns:
                return pa.nulls(total, pa.struct([]))
            children = [_column(_concatenate(parts)) for parts in columns.values()]
            return pa.StructArray.from_arrays(children, names=list(columns))

        stamps = (each(_TIMESTAMP) * 1e6).astype("datetime64[us]")
        if single:
            row = np.zeros(total, dtype=np.int32)
        else:  # each record's rows numbered from 0: the position less its record's start
            starts = np.cumsum(counts) - counts
            row = (np.arange(total) - np.repeat(starts, counts)).astype(np.int32)
        first = self.records[0]
        columns = {
            "timestamp": pa.array(stamps, type=pa.timestamp("us", tz="UTC")),
            "request_id": repeat(_REQUEST_ID),
            "row": pa.array(row, type=pa.int32()),
            "model": pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(total, dtype=np.int32)), pa.array([first[_MODEL]])
            ),
            "version": pa.array(np.full(total, int(first[_VERSION]), dtype=np.int64)),
            "caller": repeat(_CALLER),
            "latency_ms": pa.array(each(_LATENCY_MS)),
            "inputs": struct(_INPUT_NAMES),
            "outputs": struct(_OUTPUT_NAMES),
        }
        metadata = {
            "ghaf.prediction_log": SCHEMA_VERSION,
            "ghaf.project": first[_PROJECT],
            "ghaf.input_shapes": json.dumps(self._shapes[_INPUT_NAMES]),
            "ghaf.output_shapes": json.dumps(self._shapes[_OUTPUT_NAMES]),
        }
        return pa.table(columns).replace_schema_metadata(metadata)


def _bytes(buffer: pa.Buffer) -> bytes:
    """A finished file as bytes (the sink's type). One copy of a 32 MB file would hold
    the GIL ~20 ms: copy it in pieces, yielding between them, and let ``bytes.join``
    (which releases the GIL for large joins) put them together."""
    size = buffer.size
    if size <= _COPY_PIECE:
        whole: bytes = buffer.to_pybytes()
        return whole
    parts: list[bytes] = []
    for start in range(0, size, _COPY_PIECE):
        parts.append(buffer.slice(start, min(_COPY_PIECE, size - start)).to_pybytes())
        time.sleep(0)
    return b"".join(parts)


def _rows(arrays: tuple[Array, ...]) -> int:
    """A record's rows: the first input's length (1 for a scalar)."""
    for array in arrays:
        return int(array.shape[0]) if array.ndim else 1
    return 0


def _per_row(array: Array, rows: int) -> bool:
    """Does this tensor have one entry per row (so it can be a column)?"""
    return array.ndim >= 1 and array.shape[0] == rows


def _tensor_key(names: tuple[str, ...], arrays: tuple[Array, ...], rows: int) -> tuple[Any, ...]:
    return tuple(
        (name, a.dtype.str, a.shape[1:])
        for name, a in zip(names, arrays, strict=True)
        if _per_row(a, rows)
    )


def _group_key(record: _Record) -> tuple[Any, ...]:
    rows = record[_ROWS]
    return (
        record[_PROJECT],
        record[_MODEL],
        record[_VERSION],
        _tensor_key(record[_INPUT_NAMES], record[_INPUTS], rows),
        _tensor_key(record[_OUTPUT_NAMES], record[_OUTPUTS], rows),
    )


def _split(records: list[_Record]) -> list[tuple[tuple[Any, ...], list[_Record]]]:
    """``records`` by group key, in the order each key first appears (each group's
    records in their order)."""
    if _uniform(records):  # the common case: one model version, one tensor layout
        return [(_group_key(records[0]), records)]
    groups: dict[tuple[Any, ...], list[_Record]] = {}
    for record in records:
        groups.setdefault(_group_key(record), []).append(record)
    return list(groups.items())


def _uniform(records: list[_Record]) -> bool:
    """Have all ``records`` the first one's group key? A test in bulk, per field and
    tensor rather than per record: the same project, model and version, the same
    tensor names in the same order, each tensor of one dtype, and per row in every
    record (with one trailing shape) or in none. False may only mean "look closer"."""
    fields = list(zip(*records, strict=True))  # one tuple per field, in C
    for which in (_PROJECT, _MODEL, _VERSION, _INPUT_NAMES, _OUTPUT_NAMES):
        if len(set(fields[which])) != 1:
            return False
    rows: Array | None = None
    for which in (_INPUTS, _OUTPUTS):
        # The same names everywhere (above), so as many tensors in each record.
        for arrays in zip(*fields[which], strict=True):  # one tensor of every record
            dtypes = set(map(_DTYPE, arrays))
            # Equal dtypes may still differ in their str (the key's): rare, look closer.
            if len(dtypes) != 1 or len({d.str for d in dtypes}) != 1:
                return False
            shapes = set(map(_SHAPE, arrays))
            if len({len(shape) for shape in shapes}) != 1:
                return False
            if not next(iter(shapes)):  # 0-d everywhere: never per row
                continue
            if rows is None:
                rows = np.fromiter(fields[_ROWS], dtype=np.int64, count=len(records))
            per_row = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays)) == rows
            if per_row.all():
                if len({shape[1:] for shape in shapes}) != 1:
                    return False
            elif per_row.any():
                return False
    return True


def _concatenate(parts: Sequence[Array]) -> Array:
    return np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])


def _column(array: Array) -> pa.Array:
    """One tensor of many records (concatenated) as an Arrow column, one entry per row:
    scalars as values, wider tensors as fixed-size lists of their row-major values."""
    import pyarrow as pa

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


def _table(records: list[_Record]) -> pa.Table:
    """The rows of ``records`` (one group: the same model version and tensor types)."""
    group = _Group()
    group.add(records)
    table = group.table()
    if table is None:
        assert group.error is not None
        raise group.error
    return table
