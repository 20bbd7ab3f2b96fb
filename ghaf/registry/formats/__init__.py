"""Model file formats, one module per format behind one small interface.

``inspect`` runs in the server process and must never execute anything from the file: it
parses (ONNX protobuf, a skops schema, pickle opcodes) and refuses what is unsafe.
``load``/``predict``/``describe`` run only in the checker's child process
(ghaf/registry/checker.py), after ``inspect`` passed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ghaf.core.errors import InvalidInput

Arrays = dict[str, np.ndarray[Any, Any]]


@dataclass(frozen=True)
class Trust:
    """What a project's policy lets a format load beyond its built-in safe set."""

    skops_types: Sequence[str] = ()
    pickle_globals: Sequence[str] = ()


@dataclass(frozen=True)
class LoadOptions:
    """How a loaded model runs: the checker's child keeps the defaults (one thread, the CPU
    provider); the serving runtime sizes them to its cores and device
    (ghaf/serving/runtime.py). Formats without such knobs ignore them."""

    threads: int = 1
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


DEFAULT_LOAD = LoadOptions()


@dataclass
class Inspection:
    """What reading a file without running it found out."""

    details: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] | None = None  # a signature the file itself declares
    outputs: list[dict[str, Any]] | None = None


class UnsafeModel(InvalidInput):
    """The file could run code when loaded, or asks to read outside its folder."""

    code = "unsafe-model"
    title = "Unsafe model file"


class ModelFormat(ABC):
    name: ClassVar[str]
    safe: ClassVar[bool] = True
    convertible: ClassVar[bool] = False  # can be converted to ONNX

    @abstractmethod
    def sniff(self, head: bytes, filename: str) -> bool:
        """Does this file look like this format (from its first bytes and name)?"""

    @abstractmethod
    def inspect(self, path: Path, *, trust: Trust) -> Inspection:
        """Check the file without executing it; raise ``UnsafeModel``/``InvalidInput``."""

    @abstractmethod
    def load(self, path: Path, *, trust: Trust, options: LoadOptions = DEFAULT_LOAD) -> Any: ...

    @abstractmethod
    def predict(self, model: Any, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays: ...

    def predictor(self, model: Any) -> Callable[[Mapping[str, np.ndarray[Any, Any]]], Arrays]:
        """``predict`` bound to one loaded model, for calling it many times (serving).

        A format whose ``predict`` looks the same things up on every call (onnxruntime's
        input and output lists) overrides this to look them up once."""
        return partial(self.predict, model)


def tabular(inputs: Mapping[str, np.ndarray[Any, Any]]) -> Any:
    """The ``X`` a tabular model expects: the one 2-D input, or named 1-D columns as a
    DataFrame (pandas when installed, so column names reach the model)."""
    if len(inputs) == 1:
        only = next(iter(inputs.values()))
        return only.reshape(-1, 1) if only.ndim == 1 else only
    columns = {name: np.asarray(values).reshape(-1) for name, values in inputs.items()}
    try:
        import pandas as pd
    except ImportError:
        return np.column_stack(list(columns.values()))
    return pd.DataFrame(columns)


def _formats() -> list[ModelFormat]:
    from ghaf.registry.formats.lightgbm import LightGBMFormat
    from ghaf.registry.formats.onnx import OnnxFormat
    from ghaf.registry.formats.pickle import PickleFormat
    from ghaf.registry.formats.skops import SkopsFormat
    from ghaf.registry.formats.xgboost import XGBoostFormat

    # Pickle first: a file that is (or unpacks to) a pickle is one whatever its name.
    return [PickleFormat(), OnnxFormat(), SkopsFormat(), XGBoostFormat(), LightGBMFormat()]


SAFE_FORMATS = ("onnx", "skops", "xgboost", "lightgbm")


def get(name: str) -> ModelFormat:
    for found in _formats():
        if found.name == name:
            return found
    raise InvalidInput(
        f"unknown model format {name!r}; known: {', '.join(SAFE_FORMATS)}", field="format"
    )


def detect(path: Path, *, filename: str) -> ModelFormat:
    """The format of the file at ``path`` (uploaded as ``filename``), or a clear refusal."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    for candidate in _formats():
        if candidate.sniff(head, filename):
            return candidate
    raise InvalidInput(
        f"{filename!r} is not a model file ghaf can load safely. Supported: ONNX (.onnx), "
        "scikit-learn saved with skops (.skops), XGBoost JSON/UBJ (.json, .ubj) and "
        "LightGBM text (.txt). PyTorch models: export to ONNX (torch.onnx.export).",
        field="path",
    )
