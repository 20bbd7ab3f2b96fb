"""Hostile input data for ``ghaf serve``: bodies well inside the size limit that would
make decoding allocate far more than they weigh, or end in a 500 instead of a 400
naming the input, or reach the model as something else than was sent.

Memory is measured with tracemalloc (numpy reports its arrays to it) around the
decoding functions themselves; answers, through the serving app in-process (its
lifespan run: the batcher serves), with an ONNX forest (``X``: FP32 [-1, 20]) and an
ONNX pipeline of a number and a text input (``age``: FP32 [-1, 1], ``city``: BYTES
[-1, 1])."""

from __future__ import annotations

import json
import struct
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from ghaf.core.errors import InvalidInput
from ghaf.serving.app import create_serving_app
from ghaf.serving.predict import ARROW, _from_arrow
from ghaf.serving.runtime import LoadedModel
from ghaf.serving.tensors import MAX_DIMENSION, BinaryData, InputSpec, decode_inputs, values_array
from tests.serving.conftest import AllowAll
from tests.serving.test_protocol import arrow_body
from tests.serving.test_tensors import mixed_onnx

Array = np.ndarray[Any, Any]
HEADER = "inference-header-content-length"
CITY = InputSpec.from_signature({"name": "city", "dtype": "str", "shape": [-1]})
VALUES = InputSpec.from_signature({"name": "X", "dtype": "float32", "shape": [-1]})
# One long string and many empty ones: numpy gives each the width of the longest, at 4
# bytes a character (80 MB here, from 80 KB of JSON).
LONG_AND_EMPTY = ["a" * 1000] + [""] * 20_000
MOST_BYTES = 4 << 20  # what decoding any request here may allocate at its peak


def _peak(decode: Callable[[], Any]) -> int:
    """The most bytes allocated at once while ``decode`` ran (refusing is fine)."""
    tracemalloc.start()
    try:
        decode()
    except InvalidInput:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _one_long_word(rows: int) -> Any:
    """A dictionary column: ``rows`` indices (one byte each) of one 1,000-character word."""
    import pyarrow as pa

    indices = pa.array(np.zeros(rows, dtype=np.int8))
    return pa.DictionaryArray.from_arrays(indices, pa.array(["w" * 1000]))


# --- memory -----------------------------------------------------------------------------


def test_strings_for_a_number_input_are_refused_before_an_array_is_built() -> None:
    tensor = {"name": "X", "shape": [len(LONG_AND_EMPTY)], "datatype": "FP32"}
    tensor["data"] = LONG_AND_EMPTY
    with pytest.raises(InvalidInput, match="'X': datatype FP32 needs numbers, got strings"):
        decode_inputs([tensor], [VALUES])
    assert _peak(lambda: decode_inputs([tensor], [VALUES])) < MOST_BYTES
    assert _peak(lambda: values_array("X", LONG_AND_EMPTY, "FP32")) < MOST_BYTES  # /predict


def test_text_costs_what_its_strings_do_not_the_longest_times_the_count() -> None:
    tensor = {"name": "city", "shape": [len(LONG_AND_EMPTY)], "datatype": "BYTES"}
    tensor["data"] = LONG_AND_EMPTY
    assert decode_inputs([tensor], [CITY])["city"].tolist() == LONG_AND_EMPTY
    assert _peak(lambda: decode_inputs([tensor], [CITY])) < MOST_BYTES
    assert _peak(lambda: values_array("city", LONG_AND_EMPTY, "BYTES")) < MOST_BYTES


def test_binary_text_costs_what_its_strings_do() -> None:
    raw = b"".join(struct.pack("<I", len(v)) + v.encode() for v in LONG_AND_EMPTY)
    tensor = {"name": "city", "shape": [len(LONG_AND_EMPTY)], "datatype": "BYTES"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    got = decode_inputs([tensor], [CITY], BinaryData(memoryview(raw)))["city"]
    assert got.tolist() == LONG_AND_EMPTY
    assert _peak(lambda: decode_inputs([tensor], [CITY], BinaryData(memoryview(raw)))) < (
        MOST_BYTES
    )


def test_an_arrow_dictionary_of_one_long_word_is_not_copied_per_row() -> None:
    import pyarrow as pa

    rows = 20_000  # 20 KB of indices, 80 MB decoded to numpy unicode
    body = arrow_body(pa.table({"city": _one_long_word(rows)}))
    got = _from_arrow(body, [CITY])["city"]
    assert got.shape == (rows,) and got[-1] == "w" * 1000
    assert _peak(lambda: _from_arrow(body, [CITY])) < MOST_BYTES
    # For a number input the column is refused before anything is decoded.
    body = arrow_body(pa.table({"X": _one_long_word(rows)}))
    with pytest.raises(InvalidInput, match="'X': datatype BYTES does not fit the model's FP32"):
        _from_arrow(body, [VALUES])
    assert _peak(lambda: _from_arrow(body, [VALUES])) < MOST_BYTES


# --- answers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, Any]:
    return mixed_onnx(tmp_path_factory.mktemp("mixed"))


@pytest.fixture(scope="module")
def client(
    loaded_forest: tuple[LoadedModel, Array], mixed: tuple[LoadedModel, Any]
) -> Iterator[TestClient]:
    app = create_serving_app([loaded_forest[0], mixed[0]], authorizer=AllowAll())
    with TestClient(app) as test_client:
        yield test_client


def _refused(answer: Any, *needles: str) -> None:
    """A 400 whose error says each of ``needles`` (never a 500 with a traceback)."""
    assert answer.status_code == 400, (answer.status_code, answer.text[:300])
    for needle in needles:
        assert needle in answer.json()["error"], answer.json()["error"]


def _binary(client: TestClient, path: str, tensor: dict[str, Any], raw: bytes) -> Any:
    tensor = {**tensor, "parameters": {"binary_data_size": len(raw)}}
    header = json.dumps({"inputs": [tensor]}).encode()
    return client.post(path, content=header + raw, headers={HEADER: str(len(header))})


FOREST = "/v2/models/forest/infer"
MIXED = "/v2/models/mixed/infer"


def _mixed(city: list[Any]) -> dict[str, Any]:
    rows = len(city)
    return {
        "inputs": [
            {"name": "age", "datatype": "FP32", "shape": [rows, 1], "data": [40.0] * rows},
            {"name": "city", "datatype": "BYTES", "shape": [rows, 1], "data": city},
        ]
    }


def test_amplifying_bodies_are_refused_before_their_data_is_read(client: TestClient) -> None:
    tensor = {"name": "X", "shape": [len(LONG_AND_EMPTY)], "datatype": "FP32"}
    tensor["data"] = LONG_AND_EMPTY
    answer = client.post(FOREST, json={"inputs": [tensor]})
    _refused(answer, "'X': has shape [20001], the model takes shape [-1, 20]")
    # Asking numpy for 3.64 TiB ended in its MemoryError: a 500.
    huge = ["a" * 1_000_000] + [""] * 1_000_000
    tensor = {"name": "age", "shape": [len(huge), 1], "datatype": "FP32", "data": huge}
    _refused(client.post(MIXED, json={"inputs": [tensor]}), "'age'", "needs numbers, got strings")
    tensor = {"name": "city", "shape": [len(huge), 1], "datatype": "BYTES", "data": huge}
    _refused(client.post(MIXED, json={"inputs": [tensor]}), "'age': is missing")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_shapes_past_32_dimensions_are_a_400(client: TestClient, binary: bool) -> None:
    tensor = {"name": "X", "shape": [1] * 65, "datatype": "FP32"}
    if binary:
        answer = _binary(client, FOREST, tensor, np.zeros(1, dtype=np.float32).tobytes())
    else:
        answer = client.post(FOREST, json={"inputs": [{**tensor, "data": [0.0]}]})
    _refused(answer, "'X': shape has 65 dimensions")


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_an_empty_tensor_numpy_calls_too_big_is_a_400(
    client: TestClient, datatype: str, binary: bool
) -> None:
    tensor = {"name": "X", "shape": [0, MAX_DIMENSION, MAX_DIMENSION], "datatype": datatype}
    if binary:
        answer = _binary(client, FOREST, tensor, b"")
    else:
        answer = client.post(FOREST, json={"inputs": [{**tensor, "data": []}]})
    _refused(answer, "'X': shape [0, 2147483647, 2147483647] is too large")


def test_text_that_is_not_unicode_is_a_400_naming_the_input(client: TestClient) -> None:
    # orjson refuses a lone surrogate, json.loads reads it, and onnxruntime failed on it.
    body = json.dumps(_mixed([["a"], ["\ud800"]])).encode()
    assert b"\\ud800" in body
    _refused(client.post(MIXED, content=body), "'city': element 1 is not valid Unicode")
    columns = json.dumps({"columns": {"age": [[40.0]], "city": [["\udfff"]]}}).encode()
    _refused(client.post("/predict?model=mixed", content=columns), "'city': element 0")
    records = json.dumps({"records": [{"age": [40.0], "city": ["b\udc00"]}]}).encode()
    _refused(client.post("/predict?model=mixed", content=records), "'city': element 0")


def test_booleans_are_not_numbers_on_any_route(client: TestClient, loaded_forest: Any) -> None:
    X = loaded_forest[1][:1]
    flags = {"name": "X", "shape": [1, 20], "datatype": "BOOL", "data": [True] * 20}
    _refused(client.post(FOREST, json={"inputs": [flags]}), "'X': datatype BOOL does not fit")
    del flags["data"]
    _refused(_binary(client, FOREST, flags, b"\x01" * 20), "'X': datatype BOOL does not fit")
    mixed_row = [[True, *X[0, 1:].tolist()]]
    _refused(client.post("/predict", json=mixed_row), "'X': datatype FP32 needs numbers, got b")
    records = {"records": [{"age": [True], "city": ["a"]}]}
    _refused(client.post("/predict?model=mixed", json=records), "'age'", "got booleans")
    assert client.post("/predict", json=X.tolist()).status_code == 200


@pytest.mark.parametrize("odd", [1, True, 1.5])
def test_text_mixed_with_other_kinds_is_a_400(client: TestClient, odd: Any) -> None:
    """numpy made ``[1, "a"]`` the strings "1" and "a", and the model ran on them."""
    _refused(client.post(MIXED, json=_mixed([[odd], ["a"]])), "'city': datatype BYTES needs s")


def test_nul_characters_reach_the_model(client: TestClient) -> None:
    """numpy unicode drops trailing NULs: "a\\x00" reached the model as "a"."""
    answer = client.post(MIXED, json=_mixed([["a"], ["a\x00"], ["z"]]))
    assert answer.status_code == 200, answer.text
    probabilities = next(o for o in answer.json()["outputs"] if o["name"] == "probabilities")
    a, a_nul, unknown = np.reshape(probabilities["data"], (3, 2)).tolist()
    assert a_nul == unknown != a


def _rows(values: Any) -> Any:
    """One value a row, for the mixed model's [-1, 1] inputs."""
    import pyarrow as pa

    return pa.FixedSizeListArray.from_arrays(values, 1)


def _predict_arrow(client: TestClient, model: str, columns: dict[str, Any]) -> Any:
    import pyarrow as pa

    body = arrow_body(pa.table(columns))
    return client.post(f"/predict?model={model}", content=body, headers={"content-type": ARROW})


AGES = np.array([40.0, 41.0], dtype=np.float32)


def test_a_null_in_an_arrow_dictionary_is_a_null(client: TestClient) -> None:
    import pyarrow as pa

    # null_count counts null indices only: this column has none, and its first row
    # reached the model as the string "None".
    city = pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int8()), pa.array([None, "a"]))
    answer = _predict_arrow(client, "mixed", {"age": _rows(pa.array(AGES)), "city": _rows(city)})
    _refused(answer, "column 'city' has 1 null value(s)")
    plain = pa.array(["b", "a"])
    answer = _predict_arrow(client, "mixed", {"age": _rows(pa.array(AGES)), "city": _rows(plain)})
    assert answer.status_code == 200, answer.text


# An Arrow type, its OIP datatype, and a value of it.
ARROW_TYPES = [("uint64", "UINT64", 2**64 - 1), ("int64", "INT64", 1), ("int32", "INT32", 7),
               ("bool", "BOOL", True)]  # fmt: skip


@pytest.mark.parametrize(("arrow_type", "datatype", "value"), ARROW_TYPES)
def test_arrow_columns_are_cast_only_where_oip_would_cast(
    client: TestClient, loaded_forest: Any, arrow_type: str, datatype: str, value: Any
) -> None:
    """An Arrow column's type is its datatype: a uint64 column of 2**64 - 1 went into
    an FP32 input (as 1.8e19) where OIP refuses UINT64 data."""
    import pyarrow as pa

    message = f"datatype {datatype} does not fit the model's FP32"
    X = loaded_forest[1][:1]
    features = {f"f{i}": X[:, i] for i in range(1, 20)}
    column = pa.array([value], type=arrow_type)
    _refused(_predict_arrow(client, "forest", {"f0": column, **features}), "'f0': " + message)
    ages = _rows(pa.array([value, value], type=arrow_type))
    city = _rows(pa.array(["a", "b"]))
    _refused(_predict_arrow(client, "mixed", {"age": ages, "city": city}), "'age': " + message)
    oip = {"name": "X", "datatype": datatype, "shape": [1, 20], "data": [value] * 20}
    _refused(client.post(FOREST, json={"inputs": [oip]}), "'X': " + message)  # the same rule
    fits = _predict_arrow(client, "forest", {"f0": pa.array(X[:, 0]), **features})
    assert fits.status_code == 200, fits.text
