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

import _compat_pickle
import bz2
import contextlib
import gzip
import importlib
import importlib.metadata
import importlib.util
import io
import lzma
import math
import pickle
import pickletools
import re
import sys
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghaf.core.errors import InvalidInput
from ghaf.registry.formats import (
    DEFAULT_LOAD,
    Arrays,
    Inspection,
    LoadOptions,
    ModelFormat,
    Trust,
    UnsafeModel,
)
from ghaf.registry.formats.skops import predict_tabular

SUFFIXES = (".pkl", ".pickle", ".joblib", ".cloudpickle", ".sav", ".dill", ".pt", ".pth")
MAX_UNPACKED = 2 * 1024**3  # decompression-bomb guard
WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"

# Exact names (as written, after Python 2 name mapping) every scanned pickle may use, each
# checked against real pickles of fitted scikit-learn models, numpy arrays and joblib
# files at protocols 0 to 5 (tests/security/test_pickle_scanner.py): numpy's array,
# scalar, buffer and random-state reconstruction under both spellings (numpy.core before
# 2.0, numpy._core since), joblib's array wrapper, scikit-learn's Cython ``newObj`` helpers
# (``cls.__new__(cls)``), plain containers, and what protocols 0 to 2 use for objects
# and bytes. No entry calls anything it is given (``collections.defaultdict`` would, on
# a missing key, and no real model needs it).
_NUMPY_CORE = (
    "multiarray._reconstruct",
    "multiarray.scalar",
    "numeric._frombuffer",
)
ALLOWED_NAMES = frozenset(
    {f"numpy.{core}.{name}" for core in ("core", "_core") for name in _NUMPY_CORE}
    | {
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.random._pickle.__randomstate_ctor",
        "numpy.random._pickle.__bit_generator_ctor",
        "numpy.random._pickle.__generator_ctor",
        "numpy.random.mtrand.RandomState",
        "numpy.random._generator.Generator",
        "numpy.random._mt19937.MT19937",
        "numpy.random._pcg64.PCG64",
        "numpy.random._pcg64.PCG64DXSM",
        "numpy.random._philox.Philox",
        "numpy.random._sfc64.SFC64",
        "numpy.random.bit_generator.SeedSequence",
        "numpy.random.bit_generator.__pyx_unpickle_SeedSequence",
        WRAPPER,
        "sklearn.neighbors._kd_tree.newObj",
        "sklearn.neighbors._ball_tree.newObj",
        "sklearn.metrics._dist_metrics.newObj",
        "collections.OrderedDict",
        "builtins.set",
        "builtins.frozenset",
        "builtins.slice",
        "builtins.complex",
        "builtins.bytes",
        "builtins.bytearray",
        "builtins.object",  # the base copyreg._reconstructor names (protocols 0 and 1)
        "copyreg._reconstructor",
        "_codecs.encode",  # how protocols 0 to 2 write bytes
    }
)
# Packages whose *classes* (never functions) may be constructed: judged by what the name
# resolves to, which must be a class defined in one of them under exactly that name (so a
# stdlib object one of their modules imports, like functools.partial, is refused).
ALLOWED_CLASS_PACKAGES = ("sklearn", "scipy.sparse")
# Never from these modules, even when their classes are the packages' own: test suites,
# test helpers (sklearn.utils._mocking's estimators call any function they are given),
# vendored third-party code and dataset downloaders.
EXCLUDED_MODULE_PARTS = frozenset(
    {
        "tests",
        "testing",
        "_testing",
        "conftest",
        "estimator_checks",
        "_mocking",
        "externals",
        "_external",
        "datasets",
        "_build_utils",
        "__check_build",
        "_show_versions",
    }
)

SAFE_ALTERNATIVES = (
    "Save the model in a safe format instead: scikit-learn with skops "
    "(skops.io.dump(model, 'model.skops')), XGBoost with model.save_model('model.json'), "
    "LightGBM with booster.save_model('model.txt'), or any of them as ONNX "
    "(skl2onnx/onnxmltools). A project owner can allow scanned pickles with the registry "
    "policy 'allow_pickle: true' (registering one then needs model:trust)."
)


@dataclass(frozen=True)
class Global:
    module: str
    name: str

    @property
    def target(self) -> str:
        return f"{self.module}.{self.name}"


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
    names: set[tuple[str, str]] = field(default_factory=set)  # (module, name) as written
    canonical: dict[str, str] = field(default_factory=dict)  # target -> what it really is
    arrays: int = 0  # joblib arrays stepped over
    picklescan: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": "refused" if self.refused else "passed",
            "container": self.container,
            "opcodes": self.opcodes,
            "targets": sorted(self.targets),
            "canonical": {t: c for t, c in sorted(self.canonical.items()) if t != c},
            "refused": dict(sorted(self.refused.items())),
            "picklescan": self.picklescan,
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


@dataclass(frozen=True)
class Verdict:
    """What a global is and whether it may be used (``why`` is None when it may)."""

    why: str | None
    canonical: str | None = None  # module.qualname of the object, where it was resolved
    obj: Any = None
    vouched: bool = False


def _normalise(module: str, name: str) -> tuple[str, str]:
    """The Python 3 name of a Python 2 one, as pickle's own ``find_class`` maps them
    (Python 3 writes ``__builtin__``/``copy_reg`` at protocols 0 to 2)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _in_packages(module: str) -> bool:
    return any(
        module == p or module.startswith(p + ".") for p in ALLOWED_CLASS_PACKAGES
    ) and not EXCLUDED_MODULE_PARTS.intersection(module.split("."))


def _resolve(module: str, name: str) -> Any:
    """The object ``module.name`` names (``name`` may be a dotted qualname)."""
    if module.startswith("numpy.core.") and importlib.util.find_spec("numpy._core"):
        module = "numpy._core." + module[len("numpy.core.") :]  # no deprecation shim
    found: Any = importlib.import_module(module)
    for part in name.split("."):
        found = getattr(found, part)
    return found


def _identity(obj: Any) -> tuple[str, str] | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return (module, qualname) if isinstance(module, str) and isinstance(qualname, str) else None


def _vouched(target: str, extra: Iterable[str]) -> bool:
    return any(
        target == pattern or (pattern.endswith(".*") and target.startswith(pattern[:-1]))
        for pattern in extra
    )


def _verdict(module: str, name: str, extra: Iterable[str], *, loading: bool = False) -> Verdict:
    """May the global ``module.name`` be used, judged by what it really is?

    Exact names from ALLOWED_NAMES, names the policy vouches for, numpy's scalar and dtype
    classes, and classes defined in scikit-learn or scipy.sparse under exactly the name
    written. Resolving imports modules of those packages only (in the server, a vouched
    name is resolved only when its module is already loaded); ``loading`` resolves a
    vouched name too, since the unpickler is about to use it anyway.
    """
    module, name = _normalise(module, name)
    target = f"{module}.{name}"
    if target in ALLOWED_NAMES:
        return Verdict(None, target)
    if _vouched(target, extra):
        canonical = None
        if loading or module in sys.modules or _in_packages(module):
            with contextlib.suppress(Exception):
                obj = _resolve(module, name)
                found = _identity(obj)
                canonical = ".".join(found) if found else None
                return Verdict(None, canonical, obj, vouched=True)
        return Verdict(None, canonical, vouched=True)
    numpy_types = module in ("numpy", "numpy.dtypes") and "." not in name
    if not (numpy_types or _in_packages(module)):
        return Verdict("is not on the allow-list")
    try:
        obj = _resolve(module, name)
    except (ImportError, AttributeError):
        return Verdict("does not exist in the installed package")
    found = _identity(obj)
    canonical = ".".join(found) if found else None
    if not isinstance(obj, type):
        return Verdict("is a function, not a class", canonical)
    if numpy_types:
        if not issubclass(obj, np.generic | np.dtype) or found != (module, name):
            return Verdict(f"is {canonical}, not one of numpy's scalar or dtype types", canonical)
        return Verdict(None, canonical, obj)
    if found is None or not _in_packages(found[0]):
        return Verdict(
            f"is {canonical}, which {module} only imports; only classes defined in "
            "scikit-learn or scipy.sparse are accepted",
            canonical,
        )
    if found != (module, name):
        return Verdict(f"is {canonical}; only that name is accepted for it", canonical)
    return Verdict(None, canonical, obj)


# --- picklescan: a second, independent opinion -------------------------------------------


def _picklescan_pickle(pairs: Iterable[tuple[str, str]]) -> bytes:
    """A pickle that names each ``(module, name)`` once (STACK_GLOBAL, then POP), for
    picklescan's public ``scan_pickle_bytes``; it is never loaded."""
    out = bytearray(b"\x80\x04")
    for pair in sorted(set(pairs)):
        for text in pair:
            raw = text.encode("utf-8", "surrogatepass")
            out += b"X" + len(raw).to_bytes(4, "little") + raw
        out += b"\x93" + b"0"
    return bytes(out + b".")


def picklescan_dangerous(
    pairs: Iterable[tuple[str, str]], stream: bytes | None = None
) -> tuple[set[str], dict[str, Any]]:
    """The globals picklescan rates dangerous among ``pairs`` (and, when given, in its
    own parse of ``stream``), and its verdict for the scan's details."""
    from picklescan import scanner

    results = [scanner.scan_pickle_bytes(io.BytesIO(_picklescan_pickle(pairs)), "targets")]
    if stream is not None:
        results.append(scanner.scan_pickle_bytes(io.BytesIO(stream), "model"))
    dangerous = {
        f"{g.module}.{g.name}"
        for result in results
        for g in result.globals
        if g.safety == scanner.SafetyLevel.Dangerous
    }
    details = {
        "version": importlib.metadata.version("picklescan"),
        "verdict": "dangerous" if dangerous else "clean",
        "dangerous": sorted(dangerous),
        "own_parse": stream is not None,
        "parse_error": any(r.scan_err for r in results),
    }
    return dangerous, details


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
    _second_opinion(result, stream, extra)
    return result


def _second_opinion(result: Scan, stream: bytes, extra: tuple[str, ...]) -> None:
    """picklescan on every name as written and as resolved, and on its own parse of the
    stream when that is one pickle (joblib's raw array bytes would read as garbage
    opcodes). What it rates dangerous is refused even when the policy vouches for it:
    the owner who writes the policy may be the attacker."""
    pairs = set(result.names)
    for canonical in result.canonical.values():
        module, _, name = canonical.rpartition(".")
        pairs.add((module, name))
    dangerous, result.picklescan = picklescan_dangerous(
        pairs, stream if result.arrays == 0 else None
    )
    by_name = {f"{m}.{n}": f"{m}.{n}" for m, n in result.names} | {
        c: t for t, c in result.canonical.items()
    }
    for found in sorted(dangerous):
        target = by_name.get(found, found)
        also = "" if target == found else f" (it is {found})"
        vouched = (
            " even though the policy's pickle_allow lists it" if _vouched(target, extra) else ""
        )
        result.targets.add(target)
        why = f"picklescan rates it dangerous{also}{vouched}"
        earlier = result.refused.get(target)
        result.refused[target] = f"{earlier}; {why}" if earlier else why


def _check(result: Scan, module: str, name: str, extra: tuple[str, ...]) -> None:
    target = f"{module}.{name}"
    result.targets.add(target)
    result.names.add((module, name))
    verdict = _verdict(module, name, extra)
    if verdict.canonical is not None:
        result.canonical[target] = verdict.canonical
    if verdict.why is not None:
        result.refused[target] = verdict.why


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
        _check(result, what.module, what.name, extra)
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
                _check(result, module, attr, extra)
                if name == "INST":
                    _pop_mark(stack)
                    stack.append(Made(f"{module}.{attr}"))
                else:
                    stack.append(Global(module, attr))
            elif name == "STACK_GLOBAL":
                module, attr = _pop(stack, 2)
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise Unscannable("STACK_GLOBAL with a computed name; refused", field="path")
                _check(result, module, attr, extra)
                stack.append(Global(module, attr))
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
    result.arrays += 1
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

    def load(self, path: Path, *, trust: Trust, options: LoadOptions = DEFAULT_LOAD) -> Any:
        return restricted_load(path.read_bytes(), allowed=tuple(trust.pickle_globals))

    def predict(self, model: Any, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        return predict_tabular(model, inputs)


def restricted_load(data: bytes, *, allowed: tuple[str, ...]) -> Any:
    """Unpickle with ``find_class`` limited to the allow-list (joblib files included)."""

    def find_class(module: str, name: str) -> Any:
        verdict = _verdict(module, name, allowed, loading=True)
        if verdict.why is not None:
            raise pickle.UnpicklingError(f"{module}.{name} {verdict.why}")
        if verdict.obj is not None:
            return verdict.obj
        try:
            return _resolve(*_normalise(module, name))
        except (ImportError, AttributeError) as exc:
            raise pickle.UnpicklingError(f"{module}.{name} cannot be found: {exc}") from None

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
