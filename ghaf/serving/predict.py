"""``POST /predict``: plain JSON (or an Arrow table) in, predictions out in the same shape.

- ``{"records": [{"age": 41, "income": 5200.0}, ...]}`` -> ``{"records": [{output: value,
  ...}, ...]}``, one record per row; each key names an input of the signature;
- ``{"columns": {"age": [41, 35], "income": [...]}}`` -> ``{"columns": {output: [...]}}``;
- a bare 2-D list ``[[...], [...]]`` (a model with one 2-D input) -> a bare list of the
  first output's values, one per row;
- an Arrow IPC stream (``content-type: application/vnd.apache.arrow.stream``) -> the
  ``columns`` answer. Its columns are the signature's inputs by name (a list or
  fixed-size-list column is a 2-D input, one list per row); for a model with one 2-D
  input, a table of plain columns is its features, in the table's order.

A request whose ``Accept`` names the Arrow media type gets its answer as an Arrow IPC
stream instead of JSON: one column per output, 2-D outputs as fixed-size lists.

Values are checked and cast exactly as OIP tensors are (ghaf/serving/tensors.py), and
go through the same batcher: an Arrow column's own type is its datatype, checked against
the signature before its values are read (an int64 column fits a float64 input, not a
float32 one). ``?model=`` and ``?version=`` pick a model where a server
holds several (the first one otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from ghaf.core.errors import InvalidInput
from ghaf.serving import tensors
from ghaf.serving.calls import Answer, Call
from ghaf.serving.served import (
    ModelTable,
    ServedModel,
    all_finite,
    json_reply,
    parse_json,
    read_body,
)
from ghaf.serving.tensors import InputSpec

router = APIRouter()
Array = np.ndarray[Any, Any]
ARROW = "application/vnd.apache.arrow.stream"
"""Arrow's IPC stream media type (the one the platform's log route speaks)."""


def _datatype(spec: InputSpec) -> str:
    return spec.datatype or "BYTES"


def _from_rows(body: list[Any], signature: list[InputSpec]) -> dict[str, Array]:
    if len(signature) != 1 or len(signature[0].shape) != 2:
        names = ", ".join(s.name for s in signature)
        raise InvalidInput(
            f"a bare list of rows fits a model with one 2-D input; this one takes {names}: "
            'send {"records": [...]} or {"columns": {...}}'
        )
    spec = signature[0]
    if not body or not all(isinstance(row, list) for row in body):
        raise InvalidInput("a bare body must be a non-empty list of rows (lists of values)")
    array = tensors.values_array(spec.name, body, _datatype(spec))
    return tensors.fit({spec.name: array}, signature)


def _from_columns(columns: Any, signature: list[InputSpec]) -> dict[str, Array]:
    if not isinstance(columns, dict) or not columns:
        raise InvalidInput("'columns' must be an object of input name -> values", field="columns")
    specs = {spec.name: spec for spec in signature}
    arrays: dict[str, Array] = {}
    for name, values in columns.items():
        spec = specs.get(name)
        if not isinstance(values, list):
            raise InvalidInput(f"column {name!r} must be a list of values", field="columns")
        # An unknown name is reported by fit() with the inputs the model takes.
        datatype = _datatype(spec) if spec else "BYTES"
        arrays[name] = tensors.values_array(name, values, datatype) if spec else np.asarray([])
    return tensors.fit(arrays, signature)


def _from_records(records: Any, signature: list[InputSpec]) -> dict[str, Array]:
    if not isinstance(records, list) or not records:
        raise InvalidInput("'records' must be a non-empty list of objects", field="records")
    names = [spec.name for spec in signature]
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidInput(f"records[{index}] must be an object", field="records")
        extra = [key for key in record if key not in columns]
        if extra:
            raise InvalidInput(
                f"records[{index}] has {extra[0]!r}, which is not an input of this model; "
                f"it takes {', '.join(names)}",
                field="records",
            )
        for name in names:
            if name not in record:
                raise InvalidInput(f"records[{index}] has no {name!r}", field="records")
            columns[name].append(record[name])
    return _from_columns(columns, signature)


def _plain(array: Array) -> list[Any]:
    if array.dtype.kind == "S":
        return [v.decode("utf-8", "replace") for v in array.tolist()]
    values: list[Any] = array.tolist()
    return values


def _records(outputs: Mapping[str, Array]) -> list[dict[str, Any]]:
    columns = {name: _plain(array) for name, array in outputs.items()}
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _table(request: Request) -> ModelTable:
    table: ModelTable = request.app.state.models
    return table


@router.post("/predict")
async def predict_route(request: Request) -> Response:
    """Predictions for records, columns or bare rows, answered in the same shape."""
    call = Call.of_request(request)
    answer = await predict(call, _table(request), limit=request.app.state.max_body_bytes)
    return answer.response()


async def predict(call: Call, table: ModelTable, *, limit: int) -> Answer:
    """A ``/predict`` request answered (the route above and the serving hot path,
    ghaf/serving/fastpath.py, both call it); ``limit``: the most body bytes."""
    name = call.query_params.get("model")
    served: ServedModel = table.get(name or table.default.name, call.query_params.get("version"))
    raw = await read_body(call, limit)
    arrow_answer = ARROW in call.headers.get("accept", "")
    if _media_type(call) == ARROW:
        outputs = await served.predict(_from_arrow(raw, served.signature))
        if arrow_answer:
            return _arrow_answer(outputs)
        return json_reply(
            {"columns": {n: _plain(a) for n, a in outputs.items()}},
            finite=all_finite(outputs.values()),
        )
    body = parse_json(raw)
    if isinstance(body, list):
        outputs = await served.predict(_from_rows(body, served.signature))
        if arrow_answer:
            return _arrow_answer(outputs)
        first = next(iter(outputs))
        return json_reply(_plain(outputs[first]), finite=all_finite([outputs[first]]))
    if isinstance(body, dict) and len(body) == 1 and "records" in body:
        outputs = await served.predict(_from_records(body["records"], served.signature))
        if arrow_answer:
            return _arrow_answer(outputs)
        return json_reply({"records": _records(outputs)}, finite=all_finite(outputs.values()))
    if isinstance(body, dict) and len(body) == 1 and "columns" in body:
        outputs = await served.predict(_from_columns(body["columns"], served.signature))
        if arrow_answer:
            return _arrow_answer(outputs)
        return json_reply(
            {"columns": {n: _plain(a) for n, a in outputs.items()}},
            finite=all_finite(outputs.values()),
        )
    raise InvalidInput(
        'send {"records": [{...}, ...]}, {"columns": {...}}, a bare list of rows or an '
        f"Arrow stream ({ARROW})"
    )


def _media_type(call: Call) -> str:
    return str(call.headers.get("content-type", "")).split(";", 1)[0].strip().lower()


# --- Arrow --------------------------------------------------------------------------------
# pyarrow is imported on the first Arrow request, not at start: most servers never see one.


def _from_arrow(body: bytes, signature: list[InputSpec]) -> dict[str, Array]:
    import pyarrow as pa

    if not body:
        raise InvalidInput(f"the request has no body; send an Arrow IPC stream ({ARROW})")
    try:
        if _compressed(body):
            # A compressed buffer states its own decoded length: 2 KB of ZSTD can ask
            # for gigabytes, past any body limit. Requests are small; send them plain.
            raise InvalidInput(
                "the Arrow stream has compressed buffers; send it uncompressed (the body "
                "itself may be gzip, within the size limit)"
            )
        table = pa.ipc.open_stream(body).read_all()
        # Reading checks the framing only: offsets and dictionary indices that point
        # outside their buffers would fail (or read past them) later, in conversion.
        table.validate(full=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidInput(f"the body is not an Arrow IPC stream: {exc}") from None
    try:
        return _arrow_inputs(table, signature)
    except pa.ArrowException as exc:
        raise InvalidInput(f"the Arrow table's values cannot be read: {exc}") from None


def _arrow_inputs(table: Any, signature: list[InputSpec]) -> dict[str, Array]:
    """The model's inputs from a checked Arrow table (see the module docstring)."""
    names = table.column_names
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InvalidInput(f"the Arrow table has column {twice!r} twice", field="columns")
    if not names:
        raise InvalidInput("the Arrow table has no columns", field="columns")
    if not table.num_rows:
        raise InvalidInput(
            "the Arrow table has no rows: the batch is empty; send at least one row",
            field="columns",
        )
    only = signature[0] if len(signature) == 1 else None
    if only is not None and len(only.shape) == 2 and only.name not in names:
        # A table of features for a model of one 2-D input (a DataFrame sent as it is).
        features = [_arrow_column(n, table.column(n), only) for n in names]
        nested = [n for n, f in zip(names, features, strict=True) if f.ndim != 1]
        if nested:
            raise InvalidInput(
                f"column {nested[0]!r} holds lists; send either one column {only.name!r} of "
                "rows or one plain column per feature",
                field="columns",
            )
        # Each in the input's dtype first: stacking would promote mixed types to one
        # that may not fit it (int8 and uint8 columns to int16, for an FP16 input).
        typed = [tensors.as_dtype(n, f, only) for n, f in zip(names, features, strict=True)]
        return tensors.fit({only.name: np.column_stack(typed)}, signature)
    specs = {spec.name: spec for spec in signature}
    arrays = {}
    for name in names:
        spec = specs.get(name)
        # An unknown name is reported by fit() with the inputs the model takes.
        arrays[name] = _arrow_column(name, table.column(name), spec) if spec else np.asarray([])
    return tensors.fit(arrays, signature)


_RECORD_BATCH, _DICTIONARY_BATCH = "record batch", "dictionary batch"


def _compressed(body: bytes) -> bool:
    """Whether any batch of the Arrow IPC stream ``body`` has compressed buffers: the
    ``compression`` field of its ``RecordBatch`` (Arrow's Message.fbs) is set.
    pyarrow does not say so before it decompresses, so the flatbuffer is read here."""
    import pyarrow as pa

    for message in pa.ipc.MessageReader.open_stream(body):
        if message.type not in (_RECORD_BATCH, _DICTIONARY_BATCH):
            continue
        meta = memoryview(message.metadata)
        header = _table_field(meta, _root(meta), 2)  # Message.header
        if header is not None and message.type == _DICTIONARY_BATCH:
            header = _table_field(meta, header, 1)  # DictionaryBatch.data
        if header is None or _field_offset(meta, header, 3) is not None:
            return True  # RecordBatch.compression (or a batch without a header: odd)
    return False


def _root(buffer: memoryview) -> int:
    return int.from_bytes(buffer[0:4], "little")


def _field_offset(buffer: memoryview, table: int, field: int) -> int | None:
    """Where ``field`` of the flatbuffer table at ``table`` lies, or None if absent."""
    vtable = table - int.from_bytes(buffer[table : table + 4], "little", signed=True)
    vtable_size = int.from_bytes(buffer[vtable : vtable + 2], "little")
    entry = 4 + 2 * field
    if entry + 2 > vtable_size:
        return None
    offset = int.from_bytes(buffer[vtable + entry : vtable + entry + 2], "little")
    return table + offset if offset else None


def _table_field(buffer: memoryview, table: int, field: int) -> int | None:
    """The table that ``field`` (an offset field) of ``table`` points to."""
    at = _field_offset(buffer, table, field)
    return None if at is None else at + int.from_bytes(buffer[at : at + 4], "little")


def _arrow_column(name: str, column: Any, spec: InputSpec) -> Array:
    """One Arrow column as a numpy array of its own type (checked against ``spec``
    before its values are read): plain values 1-D, lists (all of one length) 2-D; nulls
    and other types are refused, naming the column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    _no_nulls(name, column.null_count)
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        lists = column.combine_chunks()
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        if len(lengths) and lengths.min() != lengths.max():
            raise InvalidInput(
                f"column {name!r} has lists of different lengths ({lengths.min()} to "
                f"{lengths.max()}); every row needs the same number of values",
                field=f"columns.{name}",
            )
        width = int(lengths[0]) if len(lengths) else 0
        values = lists.flatten()
        if values.null_count:
            raise InvalidInput(
                f"column {name!r} has null values inside its lists", field=f"columns.{name}"
            )
        return _plain_values(name, values, spec).reshape(len(lengths), width)
    return _plain_values(name, column, spec)


def _no_nulls(name: str, count: int) -> None:
    if count:
        raise InvalidInput(
            f"column {name!r} has {count:,} null value(s); send a value for every row",
            field=f"columns.{name}",
        )


def _plain_values(name: str, values: Any, spec: InputSpec) -> Array:
    """Arrow values (an array or a chunked one, maybe dictionary-encoded) of numbers,
    booleans or strings as a numpy array of their own type; strings are objects."""
    import pyarrow as pa

    kind = values.type
    encoded = pa.types.is_dictionary(kind)
    plain = kind.value_type if encoded else kind
    if pa.types.is_string(plain) or pa.types.is_large_string(plain):
        dtype = tensors.TEXT
    elif pa.types.is_integer(plain) or pa.types.is_floating(plain) or pa.types.is_boolean(plain):
        dtype = np.dtype(plain.to_pandas_dtype())
    else:
        raise InvalidInput(
            f"column {name!r} has Arrow type {kind}; send numbers, booleans or strings (or "
            "lists of them)",
            field=f"columns.{name}",
        )
    tensors.check_dtype(name, dtype, spec)  # before a value is converted
    if encoded and dtype is tensors.TEXT:
        return _looked_up(name, values)
    if encoded:  # numbers: decoded, each is 8 bytes at most, whatever the dictionary holds
        values = values.cast(plain)
        _no_nulls(name, values.null_count)  # nulls of the dictionary count now
    array: Array = values.to_numpy(zero_copy_only=False)  # zero-copy for one numeric chunk
    return array


def _looked_up(name: str, values: Any) -> Array:
    """Dictionary-encoded strings as an object array, each looked up in its dictionary in
    numpy rather than decoded by Arrow: a string repeated in every row stays one string,
    not a copy per row (a few KB of stream could ask for gigabytes). A null in the
    dictionary is a null too, though the column's null count counts null indices only."""
    import pyarrow as pa

    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    decoded = []
    for chunk in chunks:
        indices = chunk.indices.to_numpy(zero_copy_only=False)
        dictionary = chunk.dictionary
        if dictionary.null_count:
            nulls = dictionary.is_null().to_numpy(zero_copy_only=False)
            _no_nulls(name, int(np.count_nonzero(nulls[indices])))
        decoded.append(dictionary.to_numpy(zero_copy_only=False)[indices])
    return decoded[0] if len(decoded) == 1 else np.concatenate(decoded)


def _arrow_answer(outputs: Mapping[str, Array]) -> Answer:
    """The outputs as one Arrow IPC stream: a column each, rows beyond 1-D as
    fixed-size lists (flattened row-major when an output has more dimensions)."""
    import pyarrow as pa

    columns = {}
    for name, array in outputs.items():
        values = array.reshape(1) if array.ndim == 0 else array
        if values.dtype.kind == "S":
            values = np.char.decode(values, "utf-8", "replace")
        if values.ndim == 1:
            columns[name] = pa.array(values)
        else:
            width = int(np.prod(values.shape[1:]))
            flat = pa.array(np.ascontiguousarray(values).reshape(-1))
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, width)
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return Answer(200, sink.getvalue().to_pybytes(), ARROW)
