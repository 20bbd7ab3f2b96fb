"""Safe formats and the pickle scan, without a server: real malicious payloads, corrupt
files, untrusted skops types, ONNX external data outside the model's folder."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ghaf.core.errors import InvalidInput
from ghaf.registry import formats, tensors
from ghaf.registry.formats import Trust, UnsafeModel
from ghaf.registry.formats.pickle import restricted_load, scan
from tests.conftest import TrainedModel

MARKER = Path("/tmp/ghaf-pickle-test-marker")


class Evil:
    """Unpickling this runs a shell command that creates MARKER."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class EvalEvil:
    def __reduce__(self):
        return (eval, (f"open({str(MARKER)!r}, 'w')",))


@pytest.fixture(autouse=True)
def no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a payload executed"


def _joblib(obj: object, compress: object) -> bytes:
    import joblib

    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=compress)
    return buffer.getvalue()


def _hand_written_stack_global() -> bytes:
    """STACK_GLOBAL with names fetched from the memo, as evasive payloads do."""
    return (
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00"
        b"\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93\x94"
        b"\x8c\x04true\x94\x85\x94R\x94."
    )


PAYLOADS = {
    "reduce-os-system": lambda: pickle.dumps(Evil()),
    "protocol-0": lambda: pickle.dumps(Evil(), protocol=0),
    "protocol-2": lambda: pickle.dumps(Evil(), protocol=2),
    "eval": lambda: pickle.dumps(EvalEvil()),
    "nested-in-a-dict": lambda: pickle.dumps({"model": [1, 2, {"x": Evil()}]}),
    "memo-stack-global": _hand_written_stack_global,
    "joblib": lambda: _joblib({"weights": np.arange(10.0), "hook": Evil()}, 0),
    "joblib-zlib": lambda: _joblib({"hook": Evil()}, 3),
    "joblib-gzip": lambda: _joblib({"hook": Evil()}, ("gzip", 3)),
    "joblib-bz2": lambda: _joblib([Evil()], ("bz2", 3)),
    "joblib-xz": lambda: _joblib([Evil()], ("xz", 3)),
    "joblib-lzma": lambda: _joblib([Evil()], ("lzma", 3)),
    "joblib-object-array": lambda: _joblib(np.array([1, Evil()], dtype=object), 0),
}


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_malicious_pickles_are_refused_without_running(name: str, tmp_path: Path) -> None:
    data = PAYLOADS[name]()
    found = scan(data)
    assert found.refused, found.as_dict()
    assert any("system" in t or "eval" in t for t in found.refused)
    path = tmp_path / "model.joblib"
    path.write_bytes(data)
    fmt = formats.detect(path, filename="upload.bin")  # detected by content, not name
    assert fmt.name == "pickle" and not fmt.safe
    with pytest.raises(UnsafeModel, match="Nothing was unpickled"):
        fmt.inspect(path, trust=Trust())
    # Even a policy that allow-lists a wrong module cannot make the loader run it.
    with pytest.raises((InvalidInput, UnsafeModel)):
        restricted_load(data, allowed=("numpy.*",))


def test_scan_refuses_what_it_cannot_follow() -> None:
    # getattr(os, "system")("...") hides the call target behind another call.
    hidden = b"\x80\x04cbuiltins\ngetattr\n\x8c\x02os\x85R\x8c\x06system\x86R\x8c\x04true\x85R."
    result = None
    with pytest.raises(UnsafeModel):
        result = scan(hidden)
        assert not result.refused  # pragma: no cover - must not reach
    with pytest.raises(UnsafeModel, match="follow the end"):
        scan(pickle.dumps([1, 2]) + b"\x80\x04cos\nsystem\n.")
    with pytest.raises(UnsafeModel, match="persistent ids"):
        scan(b"\x80\x04\x8c\x01x\x94Q.")
    with pytest.raises(UnsafeModel):
        scan(b"\x80\x04\x8c\x01")  # truncated


def test_benign_sklearn_pickles_pass_and_load_restricted(trained) -> None:
    for data in (pickle.dumps(trained.model), _joblib(trained.model, 3)):
        found = scan(data)
        assert found.as_dict()["verdict"] == "passed", found.refused
        assert any(t.startswith("sklearn.") for t in found.targets)
        loaded = restricted_load(data, allowed=())
        assert (loaded.predict(trained.X[:5]) == trained.model.predict(trained.X[:5])).all()


def test_sklearn_functions_are_not_classes_and_are_refused() -> None:
    data = b"\x80\x04csklearn.utils.validation\ncheck_array\n\x8c\x01x\x85R."
    assert scan(data).refused == {
        "sklearn.utils.validation.check_array": "is a function, not a class"
    }


def test_torch_style_zip_is_a_pickle(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": 1}))
    assert formats.detect(path, filename="weights.pt").name == "pickle"


def test_skops_refuses_untrusted_types(tmp_path: Path, trained) -> None:
    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "model.skops"
    sio.dump(FunctionTransformer(func=os.system), path)
    fmt = formats.detect(path, filename="model.skops")
    with pytest.raises(UnsafeModel, match=r"not trusted: posix\.system") as refused:
        fmt.inspect(path, trust=Trust())
    assert refused.value.extra["untrusted_types"] == ["posix.system"]
    fmt.inspect(path, trust=Trust(skops_types=("posix.system",)))  # only a policy can vouch
    assert fmt.name == "skops"
    sio.dump(trained.model, path)
    fmt.inspect(path, trust=Trust())


def test_onnx_external_data_outside_the_folder_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    weights = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    weights.data_location = TensorProto.EXTERNAL
    del weights.float_data[:]
    for location in ("../../etc/passwd", "/etc/passwd", "..\\secrets.bin"):
        del weights.external_data[:]
        weights.external_data.add(key="location", value=location)
        graph = helper.make_graph(
            [helper.make_node("Add", ["x", "W"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
            [weights],
        )
        path = tmp_path / "model.onnx"
        path.write_bytes(helper.make_model(graph).SerializeToString())
        with pytest.raises(UnsafeModel, match="outside the model's own folder"):
            formats.detect(path, filename="model.onnx").inspect(path, trust=Trust())
    onnx.checker.check_model(helper.make_model(helper.make_graph([], "g", [], [])))


def test_xgboost_and_lightgbm_are_detected_and_described(tmp_path: Path, trained) -> None:
    import lightgbm as lgb
    import xgboost as xgb

    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(trained.X, trained.y), 3)
    path = tmp_path / "model.json"
    booster.save_model(path)
    fmt = formats.detect(path, filename="model.json")
    assert fmt.name == "xgboost"
    assert fmt.inspect(path, trust=Trust()).inputs == [
        {"name": "X", "dtype": "float32", "shape": [-1, 4]}
    ]
    light = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(trained.X, trained.y), 3)
    text = tmp_path / "model.txt"
    light.save_model(text)
    fmt = formats.detect(text, filename="model.txt")
    assert fmt.name == "lightgbm"
    assert fmt.inspect(text, trust=Trust()).inputs[0]["shape"] == [-1, 4]
    predictions = fmt.predict(fmt.load(text, trust=Trust()), {"X": trained.X[:3]})
    assert predictions["predictions"].shape == (3,)
    (tmp_path / "bad.json").write_text('{"learner": 1}')
    with pytest.raises(InvalidInput, match="not a valid XGBoost JSON model"):
        formats.get("xgboost").inspect(tmp_path / "bad.json", trust=Trust())


def test_lightgbm_predicts_with_the_serving_thread_count(
    tmp_path: Path, trained: TrainedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightgbm as lgb

    from ghaf.registry.formats import LoadOptions

    X = np.asarray(trained.X)
    light = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(X, trained.y), 3)
    text = tmp_path / "model.txt"
    light.save_model(text)
    asked: list[object] = []
    real_predict = lgb.Booster.predict

    def recording(self: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("num_threads"))
        return real_predict(self, data, *args, **kwargs)

    monkeypatch.setattr(lgb.Booster, "predict", recording)
    fmt = formats.get("lightgbm")
    served = fmt.load(text, trust=Trust(), options=LoadOptions(threads=3))
    assert fmt.predict(served, {"X": X[:3]})["predictions"].shape == (3,)
    fmt.predictor(served)({"X": X[:3]})
    # The checker's child loads with the defaults: one thread, as its OMP_NUM_THREADS=1.
    fmt.predict(fmt.load(text, trust=Trust()), {"X": X[:3]})
    assert asked == [3, 3, 1]


def test_tensors_wire_round_trip_and_errors() -> None:
    arrays = {"X": np.arange(6.0).reshape(2, 3), "flag": np.array([True, False])}
    back = tensors.from_wire(tensors.to_wire(arrays))
    assert all((back[k] == v).all() for k, v in arrays.items())
    assert tensors.from_npz(tensors.to_npz(arrays))["X"].shape == (2, 3)
    with pytest.raises(InvalidInput, match=r"sample\.X is not a valid float64 tensor"):
        tensors.from_wire({"X": {"dtype": "float64", "shape": [2, 2], "data": [1, 2, 3]}})
    with pytest.raises(InvalidInput, match="dtype complex128 cannot be part of a sample"):
        tensors.from_user({"X": np.array([1j, 2])})
    with pytest.raises(InvalidInput, match="limit is 100,000"):
        tensors.from_wire({"X": {"dtype": "int8", "shape": [200_001], "data": [0] * 200_001}})


def test_the_checker_child_has_a_time_limit_and_no_secrets(tmp_path: Path, monkeypatch) -> None:
    from ghaf.registry import sandbox

    with pytest.raises(InvalidInput, match=r"did not finish within 0\.01 s"):
        sandbox.run({"action": "check"}, folder=tmp_path, timeout_s=0.01, what="load")
    monkeypatch.setenv("GHAF_MASTER_KEY", "c2VjcmV0")
    environment = sandbox._environment(tmp_path)
    assert not any(k.startswith("GHAF_") for k in environment)
    assert environment["HOME"] == str(tmp_path)
    with pytest.raises(InvalidInput, match="load: KeyError"):
        sandbox.run({"action": "check"}, folder=tmp_path, timeout_s=60, what="load")
