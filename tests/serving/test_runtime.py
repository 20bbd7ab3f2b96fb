"""Loading versions to serve: the registry's loaders, hash checks, devices, threads."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from ghaf.core.errors import IntegrityFailure, InvalidInput
from ghaf.serving.runtime import (
    DeviceUnavailable,
    RuntimeOptions,
    VersionInfo,
    load_model,
    process_cores,
)
from tests.conftest import TrainedModel
from tests.serving.conftest import forest_onnx


def info_for(path: Path, fmt: str, inputs: list[dict[str, Any]]) -> VersionInfo:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return VersionInfo(model="m", version=1, format=fmt, sha256=digest, inputs=inputs)


@pytest.fixture(scope="module")
def forest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, np.ndarray[Any, Any]]:
    return forest_onnx(tmp_path_factory.mktemp("forest"))


def test_onnx_runs_on_the_process_cores_by_default(
    forest: tuple[Path, Any, np.ndarray[Any, Any]],
) -> None:
    path, model, X = forest
    loaded = load_model(path, info_for(path, "onnx", []))
    assert loaded.threads == len(os.sched_getaffinity(0)) == process_cores()
    assert loaded.device == "cpu" and loaded.providers == ("CPUExecutionProvider",)
    assert loaded.model.get_session_options().intra_op_num_threads == loaded.threads
    outputs = loaded.predict({"X": X[:7]})
    np.testing.assert_array_equal(outputs["label"], model.predict(X[:7]))
    one = load_model(path, info_for(path, "onnx", []), options=RuntimeOptions(threads=1))
    assert one.model.get_session_options().intra_op_num_threads == 1


def test_skops_is_served_natively(trained: TrainedModel) -> None:
    spec = [{"name": "X", "dtype": "float64", "shape": [-1, 4]}]
    loaded = load_model(trained.path, info_for(trained.path, "skops", spec))
    X, model = np.asarray(trained.X)[:5], cast(Any, trained.model)
    outputs = loaded.predict({"X": X})
    np.testing.assert_array_equal(outputs["predictions"], model.predict(X))
    assert loaded.platform == "sklearn_skops" and loaded.signature[0].datatype == "FP64"


def test_a_file_that_differs_from_its_registered_hash_is_refused(
    forest: tuple[Path, Any, np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    path, _, _ = forest
    info = info_for(path, "onnx", [])
    tampered = tmp_path / "forest.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(IntegrityFailure, match=r"changed after registration; refusing to serve"):
        load_model(tampered, info)


def test_pickles_are_never_served(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(InvalidInput, match=r"ghaf serves only data-only formats"):
        load_model(path, info_for(path, "pickle", []))


def test_gpu_without_cuda_is_an_error_unless_fallback_is_allowed(
    forest: tuple[Path, Any, np.ndarray[Any, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a CUDA provider (the GPU check covers it)")
    path, _, X = forest
    info = info_for(path, "onnx", [])
    with pytest.raises(DeviceUnavailable, match=r"no CUDA provider.*--allow-cpu-fallback"):
        load_model(path, info, options=RuntimeOptions(device="gpu"))
    with caplog.at_level(logging.INFO, logger="ghaf.serving"):
        loaded = load_model(
            path, info, options=RuntimeOptions(device="gpu", allow_cpu_fallback=True)
        )
    assert loaded.device == "cpu"
    assert "on the CPU instead of the GPU (fallback allowed)" in caplog.text
    assert loaded.predict({"X": X[:2]})["label"].shape == (2,)


def test_gpu_for_a_model_that_is_not_onnx_is_refused(trained: TrainedModel) -> None:
    info = info_for(trained.path, "skops", [])
    with pytest.raises(DeviceUnavailable, match=r"skops model runs on the CPU only"):
        load_model(trained.path, info, options=RuntimeOptions(device="gpu"))


def test_runtime_options_are_checked() -> None:
    with pytest.raises(InvalidInput, match="device must be cpu or gpu"):
        RuntimeOptions(device="tpu")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="threads"):
        RuntimeOptions(threads=0)
