"""Typed tensors of the Open Inference Protocol v2 (JSON), checked against a signature.

A request input is ``{"name", "shape", "datatype", "data"}`` with ``data`` row-major,
flat or nested. :func:`decode_inputs` turns the ``inputs`` of a request into numpy
arrays fitted to the served version's signature (the registry's ``inputs``: ``name``,
``dtype`` as numpy names it, ``shape`` with ``-1`` for open dimensions) and refuses,
naming the input and what is wrong, anything that does not fit: an unknown datatype,
values of the wrong kind, a shape the data or the signature disagrees with, a missing
or extra input, an empty batch, NaN or infinity where the signature does not allow them
(``"allow_nan": true`` on a signature entry allows them). Nothing here runs the model.

An input's name, datatype and shape are checked against the signature before its data
is read, and every JSON value's kind before an array is built: numpy would give every
string of a text array the width of the longest (4 bytes a character), so a short body
could ask for gigabytes before any refusal. BYTES tensors are object arrays of ``str``,
NUL characters kept, which onnxruntime and scikit-learn both take; text that is not
valid Unicode (a lone surrogate, which JSON can spell) is refused.

The binary tensor extension (Triton's, which tritonclient speaks) is here too: the body
is a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw tensors,
each input that has ``parameters.binary_data_size`` taking the next that many bytes, in
order. Fixed-size datatypes are little-endian and row-major (read in place with
``numpy.frombuffer``); a BYTES tensor is its elements one after another, each a 4-byte
little-endian length and that many bytes (UTF-8 text here). Every framing fault (a header
length or size past the body, a negative size, a size that does not match shape x
datatype, bytes left over) is an ``InvalidInput`` naming the input.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

from ghaf.core.errors import InvalidInput

Array = np.ndarray[Any, Any]

# OIP datatype -> numpy dtype. BYTES is text: the signature's dtype is numpy unicode,
# decoded tensors are object arrays of str (see the module docstring).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.str_),
}
# The Python types JSON values of each datatype family may arrive as: integers fit float
# tensors, but a float never silently becomes an integer, nor a boolean a number, nor
# anything but a string text.
_ACCEPTED_TYPES: dict[str, frozenset[type]] = {
    "b": frozenset({bool}),
    "i": frozenset({int}),
    "u": frozenset({int}),
    "f": frozenset({int, float}),
    "U": frozenset({str}),
}
_KIND_WORDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers", "U": "strings"}
_TYPE_WORDS = {
    str: "strings",
    bool: "booleans",
    float: "numbers",
    int: "integers",
    type(None): "null values",
    dict: "objects",
}
_WIDEST_INTEGER = {"i": np.dtype(np.int64), "u": np.dtype(np.uint64)}
_FLOAT64 = np.dtype(np.float64)
TEXT = np.dtype(object)
"""The dtype of decoded BYTES tensors."""


_NAMES = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The OIP datatype of a numpy dtype (text of any kind is BYTES)."""
    found = _NAMES.get(dtype)  # every answer asks: one lookup for native byte order
    if found is not None:
        return found
    if dtype.kind in "USO":
        return "BYTES"
    for name, candidate in DATATYPES.items():
        if candidate == dtype:
            return name
    raise InvalidInput(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def signature_datatype(dtype_name: str) -> str | None:
    """The OIP datatype of a registry signature's dtype (``float32`` -> ``FP32``,
    ``str`` -> ``BYTES``); None when the signature names none we know."""
    if dtype_name == "str":
        return "BYTES"
    try:
        return datatype_of(np.dtype(dtype_name))
    except (TypeError, InvalidInput):
        return None


@dataclass(frozen=True)
class InputSpec:
    """One entry of a version's input signature, in the form serving checks it."""

    name: str
    datatype: str | None  # None: the signature's dtype is not one OIP names
    dtype: np.dtype[Any] | None
    shape: tuple[int, ...]  # -1: any size
    allow_nan: bool = False

    @classmethod
    def from_signature(cls, spec: Mapping[str, Any]) -> InputSpec:
        datatype = signature_datatype(str(spec.get("dtype", "")))
        return cls(
            name=str(spec["name"]),
            datatype=datatype,
            dtype=DATATYPES[datatype] if datatype else None,
            shape=tuple(-1 if d is None else int(d) for d in spec.get("shape", [])),
            allow_nan=bool(spec.get("allow_nan", False)),
        )

    def metadata(self) -> dict[str, Any]:
        """The entry as OIP model metadata writes it."""
        return {"name": self.name, "datatype": self.datatype or "BYTES", "shape": list(self.shape)}


def _fail(name: str, problem: str) -> InvalidInput:
    return InvalidInput(f"input {name!r}: {problem}", field=f"inputs.{name}")


MAX_DIMENSION = 2**31 - 1
"""The largest dimension a shape may name (numpy refuses some larger ones even when
another dimension is 0 and the tensor is empty)."""
MAX_DIMS = 32
"""The most dimensions a shape (or nested data) may have (numpy's own limit is 64)."""
# numpy refuses a shape whose dimensions other than 0, times the item size (8 bytes at
# most), pass the largest intp, even for an empty tensor: "array is too big".
_MOST_ELEMENTS = int(np.iinfo(np.intp).max) // 8


def _shape(name: str, raw: Any) -> tuple[int, ...]:
    if type(raw) is list and len(raw) <= MAX_DIMS:
        # One plain loop decides the usual shape (a few small non-negative ints); anything
        # else goes through the checks below, which word the error.
        for d in raw:
            if type(d) is not int or d < 0 or d > MAX_DIMENSION:
                break
        else:
            if len(raw) < 3:  # too big needs two dimensions past 2**30 beside a 0
                return tuple(raw)
            return _not_too_big(name, tuple(raw))
    if isinstance(raw, list) and len(raw) > MAX_DIMS:
        raise _fail(name, f"shape has {len(raw):,} dimensions; at most {MAX_DIMS} are supported")
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in raw
    ):
        raise _fail(name, f"shape must be a list of integers, not {raw!r}")
    if any(d < 0 for d in raw):
        raise _fail(name, f"shape {raw} has a negative dimension")
    if any(d > MAX_DIMENSION for d in raw):
        raise _fail(name, f"shape {raw} has a dimension past {MAX_DIMENSION:,}")
    return _not_too_big(name, tuple(raw))


def _not_too_big(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if math.prod(d for d in shape if d) > _MOST_ELEMENTS:
        raise _fail(name, f"shape {list(shape)} is too large for any tensor, even an empty one")
    return shape


def _not_an_input(name: str, known: Iterable[str]) -> InvalidInput:
    return _fail(name, f"is not an input of this model; it takes {', '.join(sorted(known))}")


def _decode_tensor(
    raw: Any,
    position: int,
    binary: BinaryData | None,
    signature: Sequence[InputSpec],
    taken: Container[str],
) -> tuple[str, Array, bool]:
    """One OIP input (a JSON object) as a named array of its declared datatype, and
    whether the array is already known to be finite. Its name (not one of ``taken``),
    datatype and shape are checked against ``signature`` first; its values are its
    ``data`` or, with ``binary_data_size``, the next bytes of ``binary``."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{position}] must be an object", field=f"inputs[{position}]")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(
            f"inputs[{position}] needs a name (a non-empty string)", field=f"inputs[{position}]"
        )
    datatype = raw.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:  # a list is unhashable
        raise _fail(name, f"unknown datatype {datatype!r}; one of {', '.join(DATATYPES)}")
    shape = _shape(name, raw.get("shape"))
    for spec in signature:  # a loop beats building a dict for the usual one or two
        if spec.name == name:
            break
    else:
        raise _not_an_input(name, (spec.name for spec in signature))
    if name in taken:
        raise _fail(name, "is given twice")
    check_shape(spec, shape)
    check_dtype(name, DATATYPES[datatype], spec)
    params = raw.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise _fail(name, "parameters must be an object")
    if params and "shared_memory_region" in params:
        raise _fail(name, "the shared-memory extension is not supported; send data or binary data")
    if params and "binary_data_size" in params:
        if "data" in raw:
            raise _fail(name, "has both data and binary_data_size; send one of them")
        size = binary_size(name, params["binary_data_size"])
        if binary is None:
            raise _fail(
                name,
                f"has binary_data_size {size} but the request has no {BINARY_HEADER} header "
                "saying where the JSON ends",
            )
        return name, binary_array(name, binary.take(name, size), datatype, shape), False
    if "data" not in raw:
        raise _fail(name, "has no data")
    data = raw["data"]
    if not isinstance(data, list):
        data = [data]  # a single scalar value
    array, checked = _values(name, data, datatype, shape)
    return name, array, checked


def values_array(
    name: str, data: list[Any], datatype: str, shape: tuple[int, ...] | None = None
) -> Array:
    """JSON ``data`` (a list, flat or nested) as an array of ``datatype``; with ``shape``,
    laid out in it (flat data is row-major), else in the nesting's own shape."""
    return _values(name, data, datatype, shape)[0]


def _values(
    name: str, data: list[Any], datatype: str, shape: tuple[int, ...] | None
) -> tuple[Array, bool]:
    """:func:`values_array`, and whether the array is already known to be finite (so
    that :func:`fit` need not look again)."""
    target = DATATYPES[datatype]
    types, values, nested = _leaves(name, data)
    if shape is None:
        shape = nested
    expected = math.prod(shape)
    if len(values) != expected:
        raise _fail(
            name, f"shape {list(shape)} needs {expected:,} values, data holds {len(values):,}"
        )
    if len(nested) > 1 and nested != shape:
        raise _fail(name, f"nested data has shape {list(nested)}, shape says {list(shape)}")
    if expected == 0:
        return _empty(shape, datatype), False
    accepted = _ACCEPTED_TYPES[target.kind]
    if not types <= accepted:
        got = " and ".join(w for t, w in _TYPE_WORDS.items() if t in types - accepted)
        got = got or "other values"
        raise _fail(name, f"datatype {datatype} needs {_KIND_WORDS[target.kind]}, got {got}")
    if target.kind == "U":
        return _text_array(name, values).reshape(shape), True
    # The family's widest type, so that numpy need not look for one (it would make
    # [2**64 - 1, 1] floats); None: booleans, or integers for a float input.
    wide = _FLOAT64 if float in types else _WIDEST_INTEGER.get(target.kind)
    try:
        array = np.asarray(values, dtype=wide)
    except OverflowError:  # past int64 or uint64, or past float64 beside floats
        if wide is _FLOAT64:
            raise _fail(name, f"values too large for {datatype}") from None
        raise _fail(
            name, f"values from {min(values)} to {max(values)} do not fit {datatype}"
        ) from None
    if array.dtype.kind == "O":  # integers past 64 bits, for a float input
        raise _fail(name, "integers past 64 bits are not read: write them as floats (1e20)")
    return _cast(name, array.reshape(shape), target, datatype)


def _leaves(name: str, data: list[Any]) -> tuple[set[type], list[Any], tuple[int, ...]]:
    """The Python types of the values of ``data`` (lists in lists, every list of one
    level the same length), the values as one flat list, and the nesting's shape. Only
    types and lengths are looked at (in C): no array is built."""
    types = set(map(type, data))
    if list not in types:  # flat, as OIP writes it
        return types, data, (len(data),)
    values, shape = data, [len(data)]
    while list in types:
        lengths = set(map(len, values))
        if len(types) > 1 or len(lengths) > 1:
            raise _fail(name, "nested data is ragged (rows of different lengths)")
        if len(shape) == MAX_DIMS:
            raise _fail(name, f"nested data has more than {MAX_DIMS} levels")
        shape.append(lengths.pop())
        values = list(chain.from_iterable(values))
        types = set(map(type, values))
    return types, values, tuple(shape)


def _text_array(name: str, values: list[str]) -> Array:
    """Strings as a 1-D BYTES array (object dtype: each keeps its own length and its NUL
    characters); text that is not valid Unicode is refused, naming the element."""
    joined = "".join(values)
    if not joined.isascii():  # only text beyond ASCII can hold a lone surrogate
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError as exc:
            ends = np.cumsum(list(map(len, values)))
            index = int(np.searchsorted(ends, exc.start, "right"))
            raise _fail(
                name,
                f"element {index} is not valid Unicode text (a lone surrogate, "
                f"{joined[exc.start]!r}); send UTF-8 text",
            ) from None
    return np.array(values, dtype=TEXT)


def _empty(shape: tuple[int, ...], datatype: str) -> Array:
    """An empty tensor of ``datatype`` (``shape`` holds a 0)."""
    return np.empty(shape, dtype=TEXT if datatype == "BYTES" else DATATYPES[datatype])


def _cast(name: str, array: Array, target: np.dtype[Any], datatype: str) -> tuple[Array, bool]:
    """``array`` (not empty) as ``target``, and whether it is known to hold no NaN or
    infinity; values that do not fit ``target`` are refused."""
    source = array.dtype
    if source is target or source == target:
        return array, False
    if target.kind == "f":
        return _cast_float(name, array, target, datatype)
    if target.kind in "iu":
        # The ufuncs' own reduce: ``.min()``/``.max()`` go through a Python wrapper.
        low, high = _MIN(array, axis=None), _MAX(array, axis=None)
        info = np.iinfo(target)
        if low < info.min or high > info.max:
            raise _fail(name, f"values from {low} to {high} do not fit {datatype}")
    return array.astype(target), True  # nothing but floats can be NaN or infinite


def _cast_float(
    name: str, array: Array, target: np.dtype[Any], datatype: str
) -> tuple[Array, bool]:
    """:func:`_cast` to a float ``target`` (``array`` holds numbers: floats or integers)."""
    if array.dtype.kind == "f":
        if _fits(array, target):
            return array.astype(target), True
        # Only otherwise are the finite values looked at apart, so that NaN or infinity
        # is left for the signature's check, not called too large.
        if target.itemsize < 8 and not _MAX(np.abs(array), axis=None) <= _FLOAT_MAX[target]:
            finite_values = array[np.isfinite(array)]
            if finite_values.size and _MAX(np.abs(finite_values), axis=None) > _FLOAT_MAX[target]:
                raise _fail(name, f"values too large for {datatype}")
        return array.astype(target), False
    # Integers: every 64-bit one fits FP32 or FP64, so only FP16 needs a look (at the
    # least and the largest: np.abs of the most negative int64 overflows to itself).
    if target.itemsize < 4:
        limit = _FLOAT_MAX[target]
        if not -limit <= _MIN(array, axis=None) <= _MAX(array, axis=None) <= limit:
            raise _fail(name, f"values too large for {datatype}")
    return array.astype(target), target.itemsize >= 4


def _fits(array: Array, target: np.dtype[Any]) -> bool:
    """Whether every value of the float ``array`` is finite and fits ``target``, in one
    pass; False may be a false alarm (the caller then looks at the values one by one)."""
    if array.size <= _SMALL:
        # The sum of squares (one BLAS call, which raises no floating-point warning where
        # it overflows) is at most the square of the target's largest value only when
        # every value fits and none is NaN or infinite. Rounding cannot hide a value past
        # the limit: that value's square alone rounds above it, and adding squares never
        # lowers a sum. float(): numpy would compare a float32 sum in float32, where
        # FP32's largest value squared is infinite.
        return float(np.vdot(array, array)) <= _SQUARED_MAX[target]
    if target.itemsize < 8:
        # The largest magnitude fits (NaN and infinity fail this test too).
        return bool(_MAX(np.abs(array), axis=None) <= _FLOAT_MAX[target])
    return False  # FP64 takes any float: only finiteness is left, for fit() to ask


_MIN, _MAX = np.minimum.reduce, np.maximum.reduce
# The most elements given to one BLAS dot product: OpenBLAS does one this size on the
# calling thread (it hands larger ones to its own threads, which cost more than they save
# here and stall a busy server); past it a ufunc pass is little beside decoding the data.
_SMALL = 4096
_FLOAT_MAX = {DATATYPES[n]: float(np.finfo(DATATYPES[n]).max) for n in ("FP16", "FP32", "FP64")}
# The bound on a float array's sum of squares (see _fits): FP16's and FP32's largest
# value squared, exact in a float64; for FP64 the largest float64, so that only finiteness
# is asked.
_SQUARED_MAX = {
    DATATYPES["FP16"]: _FLOAT_MAX[DATATYPES["FP16"]] ** 2,
    DATATYPES["FP32"]: _FLOAT_MAX[DATATYPES["FP32"]] ** 2,
    DATATYPES["FP64"]: _FLOAT_MAX[DATATYPES["FP64"]],
}


def decode_inputs(
    raw_inputs: Any, signature: Sequence[InputSpec], binary: BinaryData | None = None
) -> dict[str, Array]:
    """The ``inputs`` of an infer request as arrays fitted to ``signature``; ``binary``
    holds the bytes after the JSON header of a binary request (every byte must be used)."""
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInput("the request needs 'inputs': a non-empty list", field="inputs")
    arrays: dict[str, Array] = {}
    checked: set[str] = set()
    for position, raw in enumerate(raw_inputs):
        name, array, finite_known = _decode_tensor(raw, position, binary, signature, arrays)
        arrays[name] = array
        if finite_known:
            checked.add(name)
    if binary is not None:
        binary.finish()
    return _fit(arrays, signature, checked, prechecked=True)


# --- the binary tensor extension --------------------------------------------------------

BINARY_HEADER = "Inference-Header-Content-Length"
"""The request and response header giving the JSON header's length in bytes."""
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix


class BinaryData:
    """The bytes after an infer request's JSON header, handed out to its inputs in turn."""

    def __init__(self, buffer: memoryview) -> None:
        self.buffer = buffer
        self.offset = 0

    def take(self, name: str, size: int) -> memoryview:
        """The next ``size`` bytes, for input ``name`` (a view: nothing is copied)."""
        left = len(self.buffer) - self.offset
        if size > left:
            raise _fail(
                name,
                f"binary_data_size {size:,} overruns the body: only {left:,} byte(s) of "
                "binary data are left for it",
            )
        start, self.offset = self.offset, self.offset + size
        return self.buffer[start : self.offset]

    def finish(self) -> None:
        """Refuse bytes no input claimed (a size that is too small, or a missing input)."""
        left = len(self.buffer) - self.offset
        if left:
            raise InvalidInput(
                f"the body has {left:,} byte(s) of binary data after the last binary input; "
                "the binary_data_size values must add up to what follows the JSON header",
                field="inputs",
            )


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, BinaryData | None]:
    """The JSON header of an infer request body and what follows it, as the
    ``Inference-Header-Content-Length`` header (when sent) divides them."""
    if header_length is None:
        return body, None
    text = header_length.strip()
    if text.startswith("-") and text[1:].isdigit():
        raise InvalidInput(
            f"{BINARY_HEADER} is negative ({text}); it must be the JSON header's length in bytes",
            field=BINARY_HEADER,
        )
    if not text.isdigit() or not text.isascii() or len(text) > 20:
        raise InvalidInput(
            f"{BINARY_HEADER} must be a whole number of bytes, not {header_length!r}",
            field=BINARY_HEADER,
        )
    length = int(text)
    if length == 0:
        raise InvalidInput(
            f"{BINARY_HEADER} is 0: the request needs a JSON header before its binary data",
            field=BINARY_HEADER,
        )
    if length > len(body):
        raise InvalidInput(
            f"{BINARY_HEADER} is {length:,} but the body holds only {len(body):,} bytes",
            field=BINARY_HEADER,
        )
    return body[:length], BinaryData(memoryview(body)[length:])


def binary_size(name: str, raw: Any) -> int:
    """A ``binary_data_size`` parameter checked: a whole, non-negative number of bytes."""
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise _fail(name, f"binary_data_size must be a whole number of bytes, not {raw!r}")
    if raw < 0:
        raise _fail(name, f"binary_data_size {raw} is negative")
    return raw


def binary_array(name: str, chunk: memoryview, datatype: str, shape: tuple[int, ...]) -> Array:
    """The raw bytes of one binary input as an array of ``datatype`` in ``shape``."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_array(name, chunk, count, shape)
    dtype = DATATYPES[datatype].newbyteorder("<")
    needed = count * dtype.itemsize
    if len(chunk) != needed:
        raise _fail(
            name,
            f"binary_data_size is {len(chunk):,} bytes, but shape {list(shape)} of {datatype} "
            f"needs {needed:,} ({count:,} x {dtype.itemsize})",
        )
    if count == 0:
        return _empty(shape, datatype)
    array = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and array.view(np.uint8).max() > 1:
        raise _fail(name, "BOOL binary data must be bytes 0 or 1")
    if not array.flags.aligned:
        # The JSON header's length decides where a tensor starts; a misaligned one is
        # copied once (a memcpy) rather than handed to kernels that may assume alignment.
        array = array.copy()
    return array


def _bytes_array(name: str, chunk: memoryview, count: int, shape: tuple[int, ...]) -> Array:
    # This loop runs once per element (the format is sequential): it does the least it
    # can, and the framing fault, if any, is worded after it. Slices of bytes decode
    # faster than slices of a memoryview: one copy of the chunk pays for itself.
    raw = bytes(chunk)
    values: list[str] = []
    append, unpack, end = values.append, _LENGTH.unpack_from, len(raw)
    offset = start = length = 0
    missing = False
    try:
        for _ in range(count):
            (length,) = unpack(raw, offset)
            start = offset + 4
            offset = start + length
            if offset > end:
                break
            append(raw[start:offset].decode())
    except struct.error:  # fewer than 4 bytes left for a length
        missing = True
    except UnicodeDecodeError:
        raise _fail(name, f"BYTES element {len(values)} is not UTF-8 text") from None
    index = len(values)
    if missing:
        raise _fail(
            name,
            f"BYTES element {index} of {count:,} is missing: its binary data ends after "
            f"{offset:,} byte(s)",
        )
    if index < count:
        raise _fail(
            name,
            f"BYTES element {index} claims {length:,} byte(s) but only {end - start:,} "
            "are left in its binary data",
        )
    if offset != end:
        raise _fail(
            name,
            f"binary_data_size is {end:,} bytes, but its {count:,} BYTES element(s) take "
            f"{offset:,}",
        )
    return np.array(values, dtype=TEXT).reshape(shape)


def fit(arrays: Mapping[str, Array], signature: Sequence[InputSpec]) -> dict[str, Array]:
    """``arrays`` checked against ``signature`` and cast to its dtypes, in its order.

    Safe widening casts are allowed (FP32 data for an FP64 input, INT32 for INT64);
    anything that could lose information is refused.
    """
    return _fit(arrays, signature, ())


def _fit(
    arrays: Mapping[str, Array],
    signature: Sequence[InputSpec],
    checked: Container[str],
    *,
    prechecked: bool = False,
) -> dict[str, Array]:
    """:func:`fit`, not looking again for NaN or infinity in the arrays ``checked``
    names (decoding found them finite; a widening cast keeps them so), nor, when
    ``prechecked``, at shapes and dtypes (decoding checked them before the data)."""
    known = {spec.name for spec in signature}
    for name in arrays:
        if name not in known:
            raise _not_an_input(name, known)
    fitted: dict[str, Array] = {}
    batch: tuple[str, int] | None = None
    for spec in signature:
        array = arrays.get(spec.name)
        if array is None:
            raise _fail(spec.name, "is missing; the model needs it")
        array = _fit_one(spec, array, spec.name in checked, prechecked)
        if array.ndim:
            if batch is None:
                batch = (spec.name, array.shape[0])
            elif array.shape[0] != batch[1]:
                raise _fail(
                    spec.name,
                    f"has {array.shape[0]} rows but {batch[0]!r} has {batch[1]}; every "
                    "input of one request needs the same number of rows",
                )
        fitted[spec.name] = array
    return fitted


def _fit_one(spec: InputSpec, array: Array, checked: bool, prechecked: bool) -> Array:
    if not prechecked:
        check_shape(spec, array.shape)
        check_dtype(spec.name, array.dtype, spec)
    array = _as_checked_dtype(array, spec)
    if not checked and not spec.allow_nan and not finite(array):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise _fail(
            spec.name,
            f"holds {bad} NaN or infinite value(s); the model's signature does not allow them",
        )
    return array


def check_shape(spec: InputSpec, shape: tuple[int, ...]) -> None:
    """Refuse ``shape`` unless the signature entry ``spec`` takes it, with a row or more."""
    if len(spec.shape) != len(shape):
        raise _fail(spec.name, f"has shape {list(shape)}, the model takes shape {list(spec.shape)}")
    for want, got in zip(spec.shape, shape, strict=False):  # one length: checked above
        if want != got and want != -1:
            raise _fail(
                spec.name, f"has shape {list(shape)}, the model takes shape {list(spec.shape)}"
            )
    if shape and shape[0] == 0:
        raise _fail(spec.name, "the batch is empty (0 rows); send at least one row")


def check_dtype(name: str, dtype: np.dtype[Any], spec: InputSpec) -> None:
    """Refuse values of ``dtype`` for the signature entry ``spec`` unless they widen to
    its dtype safely; ``name``: what the error names (an input, or a column of one)."""
    target = spec.dtype
    if target is None or dtype is target or dtype == target:
        return
    text = dtype.kind in "UO", target.kind == "U"  # object arrays of str are text too
    if text == (True, True):
        return
    # numpy casts True to 1 "safely"; a boolean is no number here, as in JSON data.
    same_family = not any(text) and (dtype.kind == "b") == (target.kind == "b")
    if not same_family or not np.can_cast(dtype, target, casting="safe"):
        raise _fail(name, f"datatype {datatype_of(dtype)} does not fit the model's {spec.datatype}")


def as_dtype(name: str, array: Array, spec: InputSpec) -> Array:
    """``array`` in the dtype of the signature entry ``spec`` (see :func:`check_dtype`)."""
    check_dtype(name, array.dtype, spec)
    return _as_checked_dtype(array, spec)


def _as_checked_dtype(array: Array, spec: InputSpec) -> Array:
    target = spec.dtype
    if target is None or array.dtype == target or target.kind == "U":
        return array  # text stays as it came: each string its own length
    return array.astype(target)


def finite(array: Array) -> bool:
    """Whether ``array`` holds no NaN or infinity (anything but floats cannot)."""
    kind = array.dtype.kind
    if kind not in "fc":
        return True
    # The sum of squares (one BLAS call, which raises no floating-point warning) is
    # finite only when every value is; it overflows for merely large values too, and
    # only then is each value looked at.
    if kind == "f" and array.size <= _SMALL and math.isfinite(np.vdot(array, array)):
        return True
    # The ufunc's own reduce: ``.all()`` goes through a Python wrapper that costs as
    # much again on the small tensors of a hot request.
    return bool(np.logical_and.reduce(np.isfinite(array), axis=None))


# --- outputs ---------------------------------------------------------------------------


def encode_binary(name: str, array: Array) -> tuple[dict[str, Any], bytes | Array]:
    """One OIP output in the binary extension: its descriptor (``binary_data_size``, no
    ``data``) and its bytes (the array itself where it is already little-endian and
    contiguous: bytes.join reads it without a copy)."""
    raw: bytes | Array
    if array.dtype.kind in "USO":
        parts: list[bytes] = []
        for value in array.ravel().tolist():
            encoded = value if isinstance(value, bytes) else str(value).encode("utf-8")
            parts += (_LENGTH.pack(len(encoded)), encoded)
        raw = b"".join(parts)
        size = len(raw)
    else:
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        size = raw.nbytes
    descriptor = {
        "name": name,
        "datatype": datatype_of(array.dtype),
        "shape": list(array.shape),
        "parameters": {"binary_data_size": size},
    }
    return descriptor, raw


def encode_tensor(name: str, array: Array) -> dict[str, Any]:
    """One OIP output: flat row-major data with its shape and datatype."""
    if array.dtype.kind == "S":
        data: list[Any] = [v.decode("utf-8", "replace") for v in array.ravel().tolist()]
    elif array.dtype.kind == "O":
        data = [v if isinstance(v, str) else str(v) for v in array.ravel().tolist()]
    else:
        data = array.tolist() if array.ndim == 1 else array.ravel().tolist()
    return {
        "name": name,
        "datatype": datatype_of(array.dtype),
        "shape": list(array.shape),
        "data": data,
    }
