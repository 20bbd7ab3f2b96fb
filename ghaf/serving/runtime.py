"""Loading a registered version's file to serve it, through the registry's formats.

The loader of each format is the registry's own (ghaf/registry/formats/): serving only
chooses how it runs (threads, execution providers) and refuses what it must:

- a file whose bytes differ from the registered SHA-256 (tampered with, or damaged);
- a format that is not data-only (pickles are never served);
- ``device="gpu"`` where no CUDA execution provider can run the model, unless
  ``allow_cpu_fallback`` (the decision is logged either way, never silent).

Thread counts default to the cores this process may run on (``os.sched_getaffinity``,
which honours ``taskset`` and container CPU sets), not the machine's.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ghaf.core.errors import IntegrityFailure, InvalidInput, Unavailable
from ghaf.registry import formats
from ghaf.registry.formats import LoadOptions, ModelFormat, Trust
from ghaf.serving.tensors import InputSpec

log = logging.getLogger("ghaf.serving")
Array = np.ndarray[Any, Any]
Device = Literal["cpu", "gpu"]
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


class DeviceUnavailable(Unavailable):
    """The device asked for cannot run the model (and falling back was not allowed)."""

    code = "device-unavailable"
    title = "Device unavailable"


def process_cores() -> int:
    """How many cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how wide a served model runs."""

    device: Device = "cpu"
    allow_cpu_fallback: bool = False
    threads: int | None = None  # None: every core of this process

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "gpu"):
            raise InvalidInput(f"device must be cpu or gpu, not {self.device!r}", field="device")
        if self.threads is not None and self.threads < 1:
            raise InvalidInput("threads must be at least 1", field="threads")

    @property
    def thread_count(self) -> int:
        return self.threads or process_cores()


@dataclass(frozen=True)
class VersionInfo:
    """What serving needs to know of a registered version (from the registry)."""

    model: str
    version: int
    format: str
    sha256: str
    inputs: Sequence[Mapping[str, Any]]
    outputs: Sequence[Mapping[str, Any]] = ()
    project: str | None = None
    filename: str = ""


@dataclass
class LoadedModel:
    """A model ready to predict, with the signature its requests are checked against."""

    info: VersionInfo
    fmt: ModelFormat
    model: Any
    device: str
    providers: tuple[str, ...]
    threads: int
    signature: list[InputSpec] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.info.model

    @property
    def version(self) -> str:
        return str(self.info.version)

    @property
    def platform(self) -> str:
        """What runs it, as OIP model metadata names it."""
        return {
            "onnx": "onnxruntime_onnx",
            "skops": "sklearn_skops",
            "xgboost": "xgboost_json",
            "lightgbm": "lightgbm_text",
        }.get(self.fmt.name, self.fmt.name)

    def predict(self, inputs: Mapping[str, Array]) -> dict[str, Array]:
        """One model call (thread-safe: the batcher runs it on worker threads)."""
        return self._predictor(inputs)

    @cached_property
    def _predictor(self) -> Callable[[Mapping[str, Array]], dict[str, Array]]:
        # Bound on first use: the format looks up what every call needs once.
        return self.fmt.predictor(self.model)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, info: VersionInfo) -> None:
    """Refuse a file whose bytes are not the ones the registry recorded."""
    found = file_sha256(path)
    if found != info.sha256:
        raise IntegrityFailure(
            f"the file of {info.model} v{info.version} has SHA-256 {found}, but the registry "
            f"recorded {info.sha256}: it was changed after registration; refusing to serve it",
            field="sha256",
        )


@functools.cache
def available_providers() -> tuple[str, ...]:
    """The execution providers onnxruntime offers in this process (read once)."""
    import onnxruntime as ort

    return tuple(ort.get_available_providers())


def _providers(fmt: ModelFormat, info: VersionInfo, options: RuntimeOptions) -> tuple[str, ...]:
    """The execution providers to ask for, with the decision logged."""
    what = f"{info.model} v{info.version}"
    if options.device == "cpu":
        log.info("serving %s on the CPU with %d thread(s)", what, options.thread_count)
        return (CPU_PROVIDER,)
    if fmt.name != "onnx":
        why = f"a {fmt.name} model runs on the CPU only (register an ONNX version)"
        _no_gpu(what, why, options)
        return (CPU_PROVIDER,)
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA_PROVIDER not in available:
        _no_gpu(
            what,
            f"onnxruntime offers no CUDA provider here (available: {', '.join(available)}; "
            "install onnxruntime-gpu and a CUDA driver)",
            options,
        )
        return (CPU_PROVIDER,)
    log.info("serving %s on the GPU (CUDA execution provider)", what)
    return (CUDA_PROVIDER, CPU_PROVIDER)


def _no_gpu(what: str, why: str, options: RuntimeOptions) -> None:
    if not options.allow_cpu_fallback:
        raise DeviceUnavailable(
            f"cannot serve {what} on the GPU: {why}; pass --allow-cpu-fallback to run it on "
            "the CPU instead",
            field="device",
        )
    log.warning("serving %s on the CPU instead of the GPU (fallback allowed): %s", what, why)


def load_model(
    path: Path,
    info: VersionInfo,
    *,
    options: RuntimeOptions | None = None,
    trust: Trust | None = None,
) -> LoadedModel:
    """Verify ``path`` against the registered hash, then load it to serve."""
    options = options or RuntimeOptions()
    verify_file(path, info)
    fmt = formats.get(info.format)
    if not fmt.safe or info.format not in formats.SAFE_FORMATS:
        raise InvalidInput(
            f"{info.model} v{info.version} is a {info.format} file; ghaf serves only "
            f"data-only formats ({', '.join(formats.SAFE_FORMATS)}); register it as ONNX or "
            "skops",
            field="format",
        )
    providers = _providers(fmt, info, options)
    threads = options.thread_count
    model = fmt.load(
        path, trust=trust or Trust(), options=LoadOptions(threads=threads, providers=providers)
    )
    device = "cpu"
    if CUDA_PROVIDER in providers:
        active = tuple(model.get_providers())
        if active[:1] == (CUDA_PROVIDER,):
            device = "gpu"
        else:
            # onnxruntime falls back to the CPU on its own when CUDA fails to start.
            _no_gpu(
                f"{info.model} v{info.version}",
                f"onnxruntime did not start the CUDA provider (active: {', '.join(active)})",
                options,
            )
    return LoadedModel(
        info=info,
        fmt=fmt,
        model=model,
        device=device,
        providers=providers,
        threads=threads,
        signature=[InputSpec.from_signature(spec) for spec in info.inputs],
    )
