"""A run's log batch and its two wire forms: Arrow IPC (the SDK's) and JSON (for curl).

The SDK sends metric points as one Arrow IPC stream (zstd-compressed from 4,096 points):
columns ``key`` (dictionary-encoded), ``value`` (float64), ``step`` and ``timestamp``
(int64, milliseconds since the epoch). Everything else in the batch (params, tags, the
batch number, an end status) rides in the schema's ``ghaf`` metadata as JSON. The same
bytes are what the SDK spools to disk when the server is unreachable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
from pydantic import ValidationError

from ghaf.core.errors import InvalidInput, MalformedBody
from ghaf.tracking.schemas import LogRequest

MEDIA_TYPE = "application/vnd.apache.arrow.stream"
MAX_POINTS = 1_000_000
COMPRESS_FROM = 4096  # points
SCHEMA = pa.schema(
    [
        ("key", pa.dictionary(pa.int32(), pa.string())),
        ("value", pa.float64()),
        ("step", pa.int64()),
        ("timestamp", pa.int64()),
    ]
)
_METADATA_KEY = b"ghaf"


@dataclass
class LogBatch:
    """Points as an Arrow table (SCHEMA) plus the batch's other entries."""

    metrics: pa.Table = field(default_factory=SCHEMA.empty_table)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    seq: int | None = None
    status: str | None = None
    end_time: datetime | None = None

    @property
    def points(self) -> int:
        return int(self.metrics.num_rows)

    @property
    def empty(self) -> bool:
        return not (self.points or self.params or self.tags or self.status)


def metrics_table(
    keys: list[str], values: list[float], steps: list[int], timestamps: list[int]
) -> pa.Table:
    """Four equally long columns as a SCHEMA table."""
    codes: dict[str, int] = {}
    indices = [codes.setdefault(key, len(codes)) for key in keys]
    return coded_metrics_table(indices, list(codes), values, steps, timestamps)


def coded_metrics_table(
    codes: list[int],
    names: list[str],
    values: list[float],
    steps: list[int],
    timestamps: list[int],
) -> pa.Table:
    """A SCHEMA table whose keys are ``names[code]`` (names may include unused keys)."""
    try:
        columns = [
            pa.DictionaryArray.from_arrays(
                pa.array(codes, pa.int32()), pa.array(names, pa.string())
            ),
            pa.array(values, pa.float64()),
            pa.array(steps, pa.int64()),
            pa.array(timestamps, pa.int64()),
        ]
        return pa.Table.from_arrays(columns, schema=SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"metrics: {exc}", field="metrics") from None


def _rest(batch: LogBatch) -> dict[str, Any]:
    rest: dict[str, Any] = {"params": batch.params, "tags": batch.tags, "seq": batch.seq}
    if batch.status is not None:
        rest["status"] = batch.status
    if batch.end_time is not None:
        rest["end_time"] = batch.end_time.isoformat()
    return rest


def encode(batch: LogBatch) -> bytes:
    """The Arrow IPC form: one compressed record batch, the rest in schema metadata."""
    table = batch.metrics.replace_schema_metadata({_METADATA_KEY: json.dumps(_rest(batch))})
    sink = pa.BufferOutputStream()
    # Small batches (a heartbeat, a run's final params) cost more to compress than to send.
    compression = "zstd" if table.num_rows >= COMPRESS_FROM else None
    options = ipc.IpcWriteOptions(compression=compression)
    with ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    return bytes(sink.getvalue().to_pybytes())


def decode(body: bytes) -> LogBatch:
    """Parse the Arrow IPC form; anything malformed is an ``InvalidInput``."""
    try:
        table = ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise MalformedBody(f"log batch is not an Arrow IPC stream: {exc}", field="body") from None
    metadata = (table.schema.metadata or {}).get(_METADATA_KEY, b"{}")
    try:
        rest = json.loads(metadata)
    except ValueError:
        raise InvalidInput("log batch metadata 'ghaf' is not JSON") from None
    if not isinstance(rest, dict):
        raise InvalidInput("log batch metadata 'ghaf' must be a JSON object")
    try:
        request = LogRequest.model_validate(rest)
    except ValidationError as exc:
        raise InvalidInput(f"log batch metadata: {_first_error(exc)}") from None
    batch = from_request(request)
    batch.metrics = _conform(table.replace_schema_metadata(None))
    return batch


def _conform(table: pa.Table) -> pa.Table:
    if table.schema.equals(SCHEMA):  # what the SDK sends: only nulls need checking
        for name in ("key", "step", "timestamp"):
            if table[name].null_count:
                raise InvalidInput(
                    f"metrics.{name} must not contain nulls", field=f"metrics.{name}"
                )
        return table
    names = set(table.column_names)
    if names != set(SCHEMA.names):
        raise InvalidInput(
            f"metrics columns must be {', '.join(SCHEMA.names)}; got {', '.join(sorted(names))}",
            field="metrics",
        )
    try:
        columns = {
            "key": table["key"].cast(pa.string()).combine_chunks().dictionary_encode(),
            "value": table["value"].cast(pa.float64()),
            "step": table["step"].cast(pa.int64()),
            "timestamp": table["timestamp"].cast(pa.int64()),
        }
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidInput(f"metrics: {exc}", field="metrics") from None
    for name in ("key", "step", "timestamp"):
        if columns[name].null_count:
            raise InvalidInput(f"metrics.{name} must not contain nulls", field=f"metrics.{name}")
    return pa.table(columns, schema=SCHEMA)


def from_request(request: LogRequest) -> LogBatch:
    """The JSON form, checked by Pydantic, as a batch."""
    params = {}
    for key, value in request.params.items():
        if value is None or isinstance(value, dict | list):
            raise InvalidInput(
                f"param {key!r} must be a string, number or boolean", field=f"params.{key}"
            )
        params[key] = str(value)
    batch = LogBatch(
        params=params,
        tags=dict(request.tags),
        seq=request.seq,
        status=request.status,
        end_time=request.end_time,
    )
    if request.metrics is not None:
        columns = request.metrics
        lengths = {len(columns.key), len(columns.value), len(columns.step), len(columns.timestamp)}
        if len(lengths) != 1:
            raise InvalidInput(
                "metrics.key, value, step and timestamp must have the same length",
                field="metrics",
            )
        batch.metrics = metrics_table(columns.key, columns.value, columns.step, columns.timestamp)
    return batch


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
