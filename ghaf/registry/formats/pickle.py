"""Pickle, joblib and cloudpickle files: refused by default, because loading one runs
whatever code its author chose (``__reduce__`` can name ``os.system``).

A project whose policy says ``allow_pickle: true`` lets a principal holding ``model:trust``
register one, after :func:`scan` read it **statically**: it walks the opcodes with
:mod:`pickletools` (nothing is unpickled), tracks the stack symbolically, and checks every
GLOBAL, STACK_GLOBAL, INST, OBJ, REDUCE and NEWOBJ target against an allow-list. Joblib's
raw numpy array bytes are skipped by their declared size; nested object-array pickles are
scanned too. A file that cannot be followed (computed globals, extension codes,
persistent ids) is refused. Loading, in the checker's child process only, goes through an
unpickler whose ``find_class`` enforces the same allow-list (defence in depth).
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import importlib
import io
import lzma
import math
import pickle
import pickletools
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghaf.core.errors import InvalidInput
from ghaf.registry.formats import Arrays, Inspection, ModelFormat, Trust, UnsafeModel
from ghaf.registry.formats.skops import predict_tabular

SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle", ".sav", ".dill", ".pt", ".pth")
MAX_UNPACKED = 2 * 1024**3  # decompression-bomb guard
WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"

# Exact names every scanned pickle may use: numpy's array and dtype reconstruction,
# joblib's array wrapper, plain containers, and the helpers protocol 2 uses for bytes.
ALLOWED_NAMES = frozenset(
    {
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random.mtrand.RandomState",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        WRAPPER,
        "collections.OrderedDict",
        "collections.defaultdict",
        "builtins.set",
        "builtins.frozenset",
        "builtins.slice",
        "builtins.complex",
        "builtins.bytearray",
        "builtins.object",
        "copyreg._reconstructor",
        "_codecs.encode",
    }
)
# Packages whose *classes* (never functions) may be constructed.
ALLOWED_CLASS_PACKAGES = ("sklearn", "scipy.sparse")

SAFE_ALTERNATIVES = (
    "Save the model in a safe format instead: scikit-learn with skops "
    "(skops.io.dump(model, 'model.skops')), XGBoost with model.save_model('model.json'), "
    "LightGBM with booster.save_model('model.txt'), or any of them as ONNX "
    "(skl2onnx/onnxmltools). A project owner can allow scanned pickles with the registry "
    "policy 'allow_pickle: true' (registering one then needs model:trust)."
)


@dataclass(frozen=True)
class Global:
    target: str


@dataclass(frozen=True)
class Made:
    """The result of calling or constructing ``of`` (never evaluated), and its arguments
    as far as they are constants (joblib's array wrapper needs its dtype's)."""

    of: str
    args: Any = None


_MARK = object()
_UNKNOWN = object()


@dataclass
class Scan:
    container: str
    opcodes: int = 0
    targets: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # target -> why

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": "refused" if self.refused else "passed",
            "container": self.container,
            "opcodes": self.opcodes,
            "targets": sorted(self.targets),
            "refused": dict(sorted(self.refused.items())),
        }


class Unscannable(UnsafeModel):
    pass


# --- containers ------------------------------------------------------------------------


def _unpack(data: bytes) -> tuple[str, bytes]:
    """The pickle stream inside ``data`` and how it was wrapped (joblib compressions)."""
    openers: list[tuple[str, Any]] = [
        ("gzip", lambda raw: gzip.GzipFile(fileobj=io.BytesIO(raw))),
        ("bz2", lambda raw: bz2.BZ2File(io.BytesIO(raw))),
        ("xz", lambda raw: lzma.LZMAFile(io.BytesIO(raw), format=lzma.FORMAT_XZ)),  # noqa: SIM115
        ("lzma", lambda raw: lzma.LZMAFile(io.BytesIO(raw), format=lzma.FORMAT_ALONE)),  # noqa: SIM115
    ]
    magic = {"gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00", "lzma": b"\x5d\x00\x00"}
    for name, opener in openers:
        if data.startswith(magic[name]):
            with opener(data) as stream:
                return name, _bounded(stream.read(MAX_UNPACKED + 1))
    if data[:1] == b"\x78" and data[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda"):
        inflater = zlib.decompressobj()
        try:
            return "zlib", _bounded(inflater.decompress(data, MAX_UNPACKED + 1))
        except zlib.error as exc:
            raise Unscannable(f"corrupt zlib stream: {exc}", field="path") from None
    if data.startswith(b"\x04\x22\x4d\x18"):
        raise Unscannable("lz4-compressed pickles cannot be scanned", field="path")
    return "none", data


def _bounded(data: bytes) -> bytes:
    if len(data) > MAX_UNPACKED:
        raise Unscannable("the pickle unpacks to more than 2 GiB; refused", field="path")
    return data


def looks_like_pickle(head: bytes) -> bool:
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True
    if re.match(rb"c[\w.]+\n[\w.]+\n", head) or re.match(rb"\((dp|lp|i[\w.]+\n)", head):
        return True
    try:
        container, inner = _unpack(head)
    except (OSError, EOFError, lzma.LZMAError, UnsafeModel):
        return False
    return container != "none" and inner[:1] == b"\x80"


# --- allow-list ------------------------------------------------------------------------


def _verdict(target: str, extra: Iterable[str]) -> str | None:
    """None if ``target`` may be used, else why not."""
    if target in ALLOWED_NAMES:
        return None
    for pattern in extra:
        if target == pattern or (pattern.endswith(".*") and target.startswith(pattern[:-1])):
            return None
    module, _, name = target.rpartition(".")
    if module.split(".")[0] in ("sklearn", "scipy") and any(
        module == p or module.startswith(p + ".") for p in ALLOWED_CLASS_PACKAGES
    ):
        # Importing a module of an allowed package runs only that package's own code.
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            return "does not exist in the installed package"
        return None if isinstance(found, type) else "is a function, not a class"
    return "is not on the allow-list"


# --- the scan --------------------------------------------------------------------------


def scan(data: bytes, *, allowed: Iterable[str] = ()) -> Scan:
    """Read ``data`` (a pickle or joblib file) without executing it."""
    container, stream = _unpack(data)
    result = Scan(container=container)
    source = io.BytesIO(stream)
    extra = tuple(allowed)
    _scan_stream(source, result, extra)
    rest = source.read()
    if rest.strip(b"\x00"):
        # joblib ≥ 0.10 writes one pickle per file; anything after STOP is hidden payload
        raise Unscannable(f"{len(rest)} bytes follow the end of the pickle; refused", field="path")
    return result


def _check(result: Scan, target: str, extra: tuple[str, ...]) -> None:
    result.targets.add(target)
    why = _verdict(target, extra)
    if why is not None:
        result.refused[target] = why


def _pop_mark(stack: list[Any]) -> list[Any]:
    items: list[Any] = []
    while stack:
        item = stack.pop()
        if item is _MARK:
            return items[::-1]
        items.append(item)
    raise Unscannable("malformed pickle: MARK expected", field="path")


def _pop(stack: list[Any], n: int = 1) -> list[Any]:
    if len(stack) < n:
        raise Unscannable("malformed pickle: stack underflow", field="path")
    items = stack[-n:]
    del stack[-n:]
    return items


_CONSTANT_OPS = frozenset(
    {
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "LONG",
        "LONG1",
        "LONG4",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
        "FLOAT",
        "BINFLOAT",
    }
)
_REFUSED_OPS = {
    "PERSID": "persistent ids (what PyTorch's format uses) name objects outside the pickle",
    "BINPERSID": "persistent ids (what PyTorch's format uses) name objects outside the pickle",
    "EXT1": "extension codes name globals through the copyreg registry",
    "EXT2": "extension codes name globals through the copyreg registry",
    "EXT4": "extension codes name globals through the copyreg registry",
}


def _called(result: Scan, what: Any, extra: tuple[str, ...], op: str, args: Any) -> Made:
    if isinstance(what, Global):
        _check(result, what.target, extra)
        return Made(what.target, args)
    # Calling the result of another call (e.g. getattr(...)(...)) hides the real target.
    raise Unscannable(
        f"{op} calls something that is not a named global ({type(what).__name__}); refused",
        field="path",
    )


def _scan_stream(source: io.BytesIO, result: Scan, extra: tuple[str, ...]) -> None:
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _pos in pickletools.genops(source):
            result.opcodes += 1
            name = opcode.name
            if name in _CONSTANT_OPS:
                stack.append(arg)
            elif name in _REFUSED_OPS:
                raise Unscannable(f"{name}: {_REFUSED_OPS[name]}; refused", field="path")
            elif name in ("PROTO", "FRAME"):
                continue
            elif name == "STOP":
                return
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                stack.append(tuple(_pop(stack, int(name[-1]))))
            elif name == "TUPLE":
                stack.append(tuple(_pop_mark(stack)))
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "LIST":
                stack.append(_pop_mark(stack))
            elif name in ("EMPTY_DICT", "EMPTY_SET"):
                stack.append({} if name == "EMPTY_DICT" else set())
            elif name == "DICT":
                items = _pop_mark(stack)
                stack.append(_pairs(items))
            elif name == "FROZENSET":
                _pop_mark(stack)
                stack.append(_UNKNOWN)
            elif name == "APPEND":
                _pop(stack)
            elif name in ("APPENDS", "ADDITEMS"):
                _pop_mark(stack)
            elif name == "SETITEM":
                key, value = _pop(stack, 2)
                _set_item(stack, key, value)
            elif name == "SETITEMS":
                items = _pop_mark(stack)
                for key, value in _pairs(items).items():
                    _set_item(stack, key, value)
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                target = f"{module}.{attr}"
                _check(result, target, extra)
                if name == "INST":
                    _pop_mark(stack)
                    stack.append(Made(target))
                else:
                    stack.append(Global(target))
            elif name == "STACK_GLOBAL":
                module, attr = _pop(stack, 2)
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise Unscannable("STACK_GLOBAL with a computed name; refused", field="path")
                _check(result, f"{module}.{attr}", extra)
                stack.append(Global(f"{module}.{attr}"))
            elif name == "REDUCE" or name == "NEWOBJ":
                what, args = _pop(stack, 2)
                stack.append(_called(result, what, extra, name, args))
            elif name == "NEWOBJ_EX":
                what, args, _kwargs = _pop(stack, 3)
                stack.append(_called(result, what, extra, name, args))
            elif name == "OBJ":
                items = _pop_mark(stack)
                if not items:
                    raise Unscannable("malformed pickle: empty OBJ", field="path")
                stack.append(_called(result, items[0], extra, name, tuple(items[1:])))
            elif name == "BUILD":
                (state,) = _pop(stack)
                if stack and isinstance(stack[-1], Made) and stack[-1].of == WRAPPER:
                    _skip_array(source, state, result, extra)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[_index(arg)] = stack[-1] if stack else _UNKNOWN
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _UNKNOWN
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if _index(arg) not in memo:
                    raise Unscannable("malformed pickle: unknown memo key", field="path")
                stack.append(memo[_index(arg)])
            elif name == "POP":
                _pop(stack)
            elif name == "POP_MARK":
                _pop_mark(stack)
            elif name == "DUP":
                stack.append(stack[-1] if stack else _UNKNOWN)
            elif name in ("NEXT_BUFFER", "READONLY_BUFFER"):
                stack.append(_UNKNOWN)
            else:
                raise Unscannable(f"unexpected pickle opcode {name}; refused", field="path")
    except (ValueError, IndexError) as exc:  # pickletools: truncated or garbled stream
        raise Unscannable(f"the pickle cannot be read: {exc}", field="path") from None
    raise Unscannable("the pickle has no STOP opcode (truncated)", field="path")


def _index(arg: Any) -> int:
    if not isinstance(arg, int | str):
        raise Unscannable("malformed pickle: bad memo index", field="path")
    return int(arg)


def _pairs(items: list[Any]) -> dict[Any, Any]:
    pairs: dict[Any, Any] = {}
    for key, value in zip(items[::2], items[1::2], strict=False):
        with contextlib.suppress(TypeError):  # unhashable keys cannot matter here
            pairs[key] = value
    return pairs


def _set_item(stack: list[Any], key: Any, value: Any) -> None:
    if stack and isinstance(stack[-1], dict):
        with contextlib.suppress(TypeError):
            stack[-1][key] = value


def _skip_array(source: io.BytesIO, state: Any, result: Scan, extra: tuple[str, ...]) -> None:
    """Step over the bytes joblib wrote after a ``NumpyArrayWrapper`` (see joblib's
    ``write_array``): optional alignment padding, then the raw array; or, for an object
    array, a nested pickle, which is scanned like the outer one."""
    if not isinstance(state, dict) or not isinstance(state.get("shape"), tuple):
        raise Unscannable("a joblib array wrapper without a readable shape", field="path")
    dtype = state.get("dtype")
    code = None
    if isinstance(dtype, Made) and dtype.of == "numpy.dtype" and isinstance(dtype.args, tuple):
        code = dtype.args[0] if dtype.args and isinstance(dtype.args[0], str) else None
    try:
        described = np.dtype(code) if code is not None else None
    except TypeError:
        described = None
    if described is None or described.fields is not None:
        raise Unscannable("a joblib array wrapper with an unreadable dtype", field="path")
    if described.hasobject:
        _scan_stream(source, result, extra)
        return
    if state.get("numpy_array_alignment_bytes") is not None:
        padding = source.read(1)
        source.seek(int.from_bytes(padding, "little"), io.SEEK_CUR)
    count = math.prod(int(n) for n in state["shape"])
    source.seek(count * described.itemsize, io.SEEK_CUR)


# --- the format ------------------------------------------------------------------------


class PickleFormat(ModelFormat):
    name = "pickle"
    safe = False

    def sniff(self, head: bytes, filename: str) -> bool:
        return filename.lower().endswith(SUFFIXES) or looks_like_pickle(head)

    def inspect(self, path: Path, *, trust: Trust) -> Inspection:
        found = scan(path.read_bytes(), allowed=trust.pickle_globals)
        if found.refused:
            listed = "; ".join(f"{t} ({why})" for t, why in sorted(found.refused.items()))
            raise UnsafeModel(
                f"the pickle scan refused {len(found.refused)} target(s): {listed}. "
                "Nothing was unpickled. " + SAFE_ALTERNATIVES,
                field="path",
                scan=found.as_dict(),
            )
        return Inspection(details={"scan": found.as_dict()})

    def load(self, path: Path, *, trust: Trust) -> Any:
        return restricted_load(path.read_bytes(), allowed=tuple(trust.pickle_globals))

    def predict(self, model: Any, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        return predict_tabular(model, inputs)


def restricted_load(data: bytes, *, allowed: tuple[str, ...]) -> Any:
    """Unpickle with ``find_class`` limited to the allow-list (joblib files included)."""

    def find_class(module: str, name: str) -> Any:
        target = f"{module}.{name}"
        why = _verdict(target, allowed)
        if why is not None:
            raise pickle.UnpicklingError(f"{target} {why}")
        return getattr(importlib.import_module(module), name)

    _container, stream = _unpack(data)
    try:
        from joblib.numpy_pickle import NumpyUnpickler  # type: ignore[import-untyped]
    except ImportError:
        unpickler: Any = pickle.Unpickler(io.BytesIO(stream))  # noqa: S301 - find_class below
    else:
        unpickler = NumpyUnpickler("<model>", io.BytesIO(stream), True)
    unpickler.find_class = find_class
    try:
        return unpickler.load()
    except pickle.UnpicklingError as exc:
        raise InvalidInput(f"refused while loading the pickle: {exc}", field="path") from None
