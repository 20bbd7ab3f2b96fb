"""Named tensors: the sample a version is checked with and the signatures it declares.

On the wire a tensor is ``{"dtype": "float64", "shape": [5, 4], "data": [...]}`` (flat,
row-major, as the Open Inference Protocol writes it); at rest a sample is an ``.npz``
archive, read back with ``allow_pickle=False`` so it can never carry code.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ghaf.core.errors import InvalidInput

# Kinds a sample or signature may use: numbers, booleans and text. Object arrays are
# refused because they can only be stored by pickling.
_KINDS = {"b": "bool", "i": "int", "u": "uint", "f": "float", "U": "str"}
MAX_SAMPLE_VALUES = 100_000


def dtype_name(dtype: np.dtype[Any]) -> str:
    """``float32``, ``int64``, ``bool`` or ``str``: the names signatures use."""
    if dtype.kind == "U":
        return "str"
    if dtype.kind not in _KINDS:
        raise InvalidInput(
            f"dtype {dtype} cannot be part of a sample or signature; use numbers, "
            "booleans or strings",
            field="sample",
        )
    return dtype.name


def as_array(name: str, value: Any) -> np.ndarray[Any, Any]:
    array = np.asarray(value)
    if array.dtype.kind == "O":
        try:
            array = array.astype(str)
        except (TypeError, ValueError):
            raise InvalidInput(
                f"sample input {name!r} holds Python objects; give numbers or strings",
                field=f"sample.{name}",
            ) from None
    dtype_name(array.dtype)
    return array


def spec_of(name: str, array: np.ndarray[Any, Any]) -> dict[str, Any]:
    """The signature entry of ``array``: batch dimension open (-1), the rest fixed."""
    shape = [-1, *array.shape[1:]] if array.ndim else []
    return {"name": name, "dtype": dtype_name(array.dtype), "shape": shape}


def infer(arrays: Mapping[str, np.ndarray[Any, Any]]) -> list[dict[str, Any]]:
    return [spec_of(name, array) for name, array in arrays.items()]


def _compatible(declared: str, actual: str) -> bool:
    if declared == actual:
        return True
    # A sample of int64 fits a float input, not the other way round.
    numeric = ("bool", "int", "uint", "float")
    rank = {kind: i for i, kind in enumerate(numeric)}
    d, a = declared.rstrip("0123456789"), actual.rstrip("0123456789")
    return d in rank and a in rank and rank[a] <= rank[d]


def mismatches(
    declared: list[dict[str, Any]], arrays: Mapping[str, np.ndarray[Any, Any]]
) -> list[str]:
    """Every way ``arrays`` does not fit ``declared``, one readable line each."""
    problems = []
    names = [spec["name"] for spec in declared]
    for spec in declared:
        name = spec["name"]
        if name not in arrays:
            problems.append(f"input {name!r} is declared but missing from the sample")
            continue
        array = arrays[name]
        actual = dtype_name(array.dtype)
        if not _compatible(spec["dtype"], actual):
            problems.append(f"input {name!r}: declared dtype {spec['dtype']}, sample has {actual}")
        shape = list(spec["shape"])
        if len(shape) != array.ndim or any(
            want not in (-1, None) and want != got
            for want, got in zip(shape, array.shape, strict=False)
        ):
            problems.append(
                f"input {name!r}: declared shape {shape}, sample has {list(array.shape)}"
            )
    problems += [
        f"sample input {extra!r} is not in the declared signature"
        for extra in arrays
        if extra not in names
    ]
    return problems


# --- wire and storage -------------------------------------------------------------------


def to_wire(arrays: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, Any]:
    return {
        name: {
            "dtype": dtype_name(array.dtype),
            "shape": list(array.shape),
            "data": [_jsonable(v) for v in array.ravel().tolist()],
        }
        for name, array in arrays.items()
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def from_wire(tensors: Mapping[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Decode a JSON sample, naming the tensor that is malformed."""
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    total = 0
    for name, tensor in tensors.items():
        field = f"sample.{name}"
        if not isinstance(tensor, Mapping) or not {"dtype", "shape", "data"} <= set(tensor):
            raise InvalidInput(f"{field} needs dtype, shape and data", field=field)
        dtype_text = str(tensor["dtype"])
        try:
            dtype = np.dtype(str) if dtype_text == "str" else np.dtype(dtype_text)
            dtype_name(dtype)
            shape = [int(n) for n in tensor["shape"]]
            data = [float(v) if v in ("nan", "inf", "-inf") else v for v in tensor["data"]]
            array = np.asarray(data, dtype=dtype).reshape(shape)
        except InvalidInput:
            raise
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"{field} is not a valid {dtype_text} tensor: {exc}", field=field
            ) from None
        total += array.size
        arrays[str(name)] = array
    if not arrays:
        raise InvalidInput("the sample holds no inputs", field="sample")
    if total > MAX_SAMPLE_VALUES:
        raise InvalidInput(
            f"the sample holds {total:,} values; the limit is {MAX_SAMPLE_VALUES:,} "
            "(a few rows are enough)",
            field="sample",
        )
    return arrays


def to_npz(arrays: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **dict(arrays))  # type: ignore[arg-type]  # object arrays are refused earlier: no pickles
    return buffer.getvalue()


MAX_NPZ_BYTES = 64 * 1024 * 1024  # uncompressed: bounds what a small archive can expand to
_NPZ_REFUSED = (
    "the sample must be an .npz archive of plain numeric (or boolean or string) arrays, "
    "as numpy.savez writes them"
)


def from_npz(data: bytes) -> dict[str, np.ndarray[Any, Any]]:
    """The arrays of an ``.npz`` sample; ``InvalidInput`` (field ``sample``) for anything
    else: pickled object arrays (never unpickled), corrupt or truncated bytes, an archive
    that expands past 64 MiB, or arrays of kinds a sample cannot hold."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            expanded = sum(member.file_size for member in archive.infolist())
        if expanded > MAX_NPZ_BYTES:
            raise InvalidInput(
                f"the sample archive expands to {expanded:,} bytes; the limit is "
                f"{MAX_NPZ_BYTES:,} (a few rows are enough)",
                field="sample",
            )
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except InvalidInput:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise InvalidInput(
                f"{_NPZ_REFUSED}: it holds a pickled object array, which ghaf never loads",
                field="sample",
            ) from None
        raise InvalidInput(f"{_NPZ_REFUSED}: {exc}", field="sample") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"{_NPZ_REFUSED}: it is corrupt ({exc})", field="sample") from None
    if not arrays:
        raise InvalidInput("the sample holds no inputs", field="sample")
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise InvalidInput(f"{_NPZ_REFUSED}: {name!r} is not an array", field="sample")
        if array.dtype.kind not in _KINDS:
            raise InvalidInput(
                f"{_NPZ_REFUSED}: input {name!r} has dtype {array.dtype}", field="sample"
            )
    if sum(array.size for array in arrays.values()) > MAX_SAMPLE_VALUES:
        raise InvalidInput(
            f"the sample holds more than {MAX_SAMPLE_VALUES:,} values (a few rows are enough)",
            field="sample",
        )
    return arrays


def from_user(sample: Any) -> dict[str, np.ndarray[Any, Any]]:
    """A sample as users hold it: an array (one input, ``X``), a mapping of named
    arrays, or a pandas/polars DataFrame (one input per column)."""
    if hasattr(sample, "columns") and hasattr(sample, "to_numpy"):
        return {str(c): as_array(str(c), np.asarray(sample[c])) for c in sample.columns}
    if isinstance(sample, Mapping):
        return {str(k): as_array(str(k), v) for k, v in sample.items()}
    return {"X": as_array("X", sample)}
