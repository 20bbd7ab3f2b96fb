"""OIP v2 JSON tensors: decoding, checking against a signature, encoding; text tensors
as onnxruntime and scikit-learn take them."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ghaf.core.errors import InvalidInput
from ghaf.registry.formats import Trust, get, tabular
from ghaf.serving.runtime import LoadedModel, RuntimeOptions, VersionInfo, file_sha256, load_model
from ghaf.serving.tensors import (
    DATATYPES,
    MAX_DIMENSION,
    TEXT,
    BinaryData,
    InputSpec,
    decode_inputs,
    encode_tensor,
    finite,
    fit,
    values_array,
)
from tests.serving.test_binary import text_bytes

SIGNATURE = [InputSpec.from_signature({"name": "X", "dtype": "float32", "shape": [-1, 3]})]


def tensor(data: Any, shape: list[int], datatype: str = "FP32", name: str = "X") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def test_flat_and_nested_data_give_the_same_array() -> None:
    flat = decode_inputs([tensor([1, 2, 3, 4, 5, 6], [2, 3])], SIGNATURE)["X"]
    nested = decode_inputs([tensor([[1, 2, 3], [4, 5, 6]], [2, 3])], SIGNATURE)["X"]
    assert flat.dtype == np.float32 and flat.shape == (2, 3)
    np.testing.assert_array_equal(flat, nested)
    np.testing.assert_array_equal(flat, [[1, 2, 3], [4, 5, 6]])


def test_safe_widening_is_allowed_and_cast_to_the_signature() -> None:
    wide = [InputSpec.from_signature({"name": "X", "dtype": "float64", "shape": [-1, 2]})]
    got = decode_inputs([tensor([1.5, 2, 3, 4], [2, 2], "FP32")], wide)["X"]
    assert got.dtype == np.float64
    ints = [InputSpec.from_signature({"name": "X", "dtype": "int64", "shape": [-1]})]
    assert decode_inputs([tensor([1, 2], [2], "INT8")], ints)["X"].dtype == np.int64


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_decodes_and_encodes(datatype: str) -> None:
    dtype = DATATYPES[datatype]
    choices: dict[str, list[Any]] = {"b": [True, False], "U": ["a", "bé"]}
    values = choices.get(dtype.kind, [1, 2])
    spec = InputSpec.from_signature(
        {"name": "v", "dtype": "str" if dtype.kind == "U" else dtype.name, "shape": [-1]}
    )
    array = decode_inputs([tensor(values, [2], datatype, "v")], [spec])["v"]
    assert array.dtype == (TEXT if datatype == "BYTES" else dtype) and array.tolist() == values
    encoded = encode_tensor("v", array)
    assert encoded == {"name": "v", "datatype": datatype, "shape": [2], "data": values}


def test_nan_is_refused_unless_the_signature_allows_it() -> None:
    nan = [tensor([1.0, float("nan"), 3.0], [1, 3])]
    with pytest.raises(InvalidInput, match=r"input 'X': holds 1 NaN or infinite"):
        decode_inputs(nan, SIGNATURE)
    allowing = [
        InputSpec.from_signature(
            {"name": "X", "dtype": "float32", "shape": [-1, 3], "allow_nan": True}
        )
    ]
    assert np.isnan(decode_inputs(nan, allowing)["X"][0, 1])


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([tensor([1, 2, 3], [1, 3], "FP64")], r"'X': datatype FP64 does not fit the model's FP32"),
        ([tensor([1, 2, 3], [1, 3], "BYTES")], r"'X': datatype BYTES does not fit the model's"),
        ([tensor(["a", "b", "c"], [1, 3])], r"'X': datatype FP32 needs numbers, got strings"),
        ([tensor([True, False, True], [1, 3])], r"needs numbers, got booleans"),
        ([tensor([1, None, 3], [1, 3])], r"needs numbers, got null values"),
        (
            [tensor([1, 2, 3, 4], [2, 2])],
            r"'X': has shape \[2, 2\], the model takes shape \[-1, 3\]",
        ),
        ([tensor([1, 2, 3], [3])], r"'X': has shape \[3\], the model takes shape \[-1, 3\]"),
        ([tensor([1, 2, 3, 4], [1, 3])], r"shape \[1, 3\] needs 3 values, data holds 4"),
        ([tensor([[1, 2], [3, 4], [5, 6]], [2, 3])], r"nested data has shape \[3, 2\]"),
        ([tensor([[1, 2, 3], [4, 5]], [2, 3])], r"ragged"),
        ([tensor([], [0, 3])], r"'X': the batch is empty \(0 rows\)"),
        ([tensor([1, 2, 3], [1, -3])], r"negative dimension"),
        ([tensor([1, 2, 3], [1, 3], "FP99")], r"unknown datatype 'FP99'"),
        ([tensor([1, 2, 3], [1, 3], ["FP32"])], r"unknown datatype \['FP32'\]"),  # type: ignore[arg-type]
        ([tensor([1, 2, 3], [1, 3], {"a": 1})], r"unknown datatype \{'a': 1\}"),  # type: ignore[arg-type]
        ([tensor([1, 2, 3], [1, 3], name="Y")], r"input 'Y': is not an input of this model"),
        (
            [tensor([1, 2, 3], [1, 3]), tensor([1], [1], name="extra")],
            r"input 'extra': is not an input of this model; it takes X",
        ),
        ([tensor([1, 2, 3], [1, 3]), tensor([1, 2, 3], [1, 3])], r"'X': is given twice"),
        ([], r"needs 'inputs': a non-empty list"),
        ([{"name": "X", "datatype": "FP32", "shape": [1, 3]}], r"'X': has no data"),
        ([{"datatype": "FP32", "shape": [1], "data": [1]}], r"inputs\[0\] needs a name"),
        ([tensor([1e39, 0, 0], [1, 3])], r"values too large for FP32"),
        ([tensor([1, 2, 3], [1, 3], "INT32")], r"'X': datatype INT32 does not fit the model's"),
    ],
)
def test_bad_input_is_refused_naming_the_input_and_the_problem(
    inputs: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_inputs(inputs, SIGNATURE)


def test_a_missing_input_and_disagreeing_row_counts_are_named() -> None:
    two = [
        InputSpec.from_signature({"name": "age", "dtype": "int64", "shape": [-1]}),
        InputSpec.from_signature({"name": "income", "dtype": "float64", "shape": [-1]}),
    ]
    with pytest.raises(InvalidInput, match=r"input 'income': is missing; the model needs it"):
        decode_inputs([tensor([41], [1], "INT64", "age")], two)
    with pytest.raises(InvalidInput, match=r"'income': has 2 rows but 'age' has 1"):
        decode_inputs(
            [tensor([41], [1], "INT64", "age"), tensor([1.0, 2.0], [2], "FP64", "income")], two
        )


def test_integers_out_of_range_are_refused() -> None:
    small = [InputSpec.from_signature({"name": "X", "dtype": "uint8", "shape": [-1]})]
    with pytest.raises(InvalidInput, match=r"values from -1 to 3 do not fit UINT8"):
        decode_inputs([tensor([-1, 3], [2], "UINT8")], small)


FP32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize(
    "too_large",
    [1e39, -1e39, float(np.nextafter(FP32_MAX, np.inf)), 1e200, -1.7e308],
    ids=["1e39", "-1e39", "just-past-max", "1e200", "near-fp64-max"],
)
def test_a_value_that_would_become_infinite_in_fp32_is_refused(too_large: float) -> None:
    inputs = [tensor([1.0, too_large, 3.0], [1, 3])]
    with _no_warnings(), pytest.raises(InvalidInput, match=r"input 'X': values too large for FP32"):
        decode_inputs(inputs, SIGNATURE)
    allowing = [
        InputSpec.from_signature(
            {"name": "X", "dtype": "float32", "shape": [-1, 3], "allow_nan": True}
        )
    ]
    with pytest.raises(InvalidInput, match=r"values too large for FP32"):
        decode_inputs(inputs, allowing)  # allow_nan allows NaN, not overflow


def test_the_largest_fp32_value_fits() -> None:
    got = decode_inputs([tensor([FP32_MAX, -FP32_MAX, 0.0], [1, 3])], SIGNATURE)["X"]
    assert got.dtype == np.float32 and np.isfinite(got).all()


@pytest.mark.parametrize("special", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_pass_with_allow_nan_and_are_counted_without(special: float) -> None:
    data = [special, 2.0, special]
    allowing = [
        InputSpec.from_signature(
            {"name": "X", "dtype": "float32", "shape": [-1, 3], "allow_nan": True}
        )
    ]
    got = decode_inputs([tensor(data, [1, 3])], allowing)["X"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.array([data], dtype=np.float32))
    with pytest.raises(InvalidInput, match=r"holds 2 NaN or infinite value\(s\)"):
        decode_inputs([tensor(data, [1, 3])], SIGNATURE)


def test_too_large_is_named_before_nan_when_both_are_sent() -> None:
    with pytest.raises(InvalidInput, match=r"values too large for FP32"):
        decode_inputs([tensor([float("nan"), 1e39, 1.0], [1, 3])], SIGNATURE)


def test_fp16_overflow_is_refused_and_its_largest_value_fits() -> None:
    half = [InputSpec.from_signature({"name": "h", "dtype": "float16", "shape": [-1]})]
    got = decode_inputs([tensor([65504.0, -65504, 0.5], [3], "FP16", "h")], half)["h"]
    assert got.dtype == np.float16 and got.tolist() == [65504.0, -65504.0, 0.5]
    # A float, and integers (another branch): -2**63 once passed as its own absolute value.
    for too_large in (65520.0, -1e6, 70000, -70000, -(2**63)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow warning on the way to the refusal
            with pytest.raises(InvalidInput, match=r"input 'h': values too large for FP16"):
                decode_inputs([tensor([1, too_large], [2], "FP16", "h")], half)


def test_integers_take_their_input_s_64_bit_type_whatever_numpy_would_guess() -> None:
    """numpy reads [2**64 - 1, 1] as floats: no one of int64 and uint64 holds both."""
    wide = [InputSpec.from_signature({"name": "u", "dtype": "uint64", "shape": [-1]})]
    got = decode_inputs([tensor([2**64 - 1, 1], [2], "UINT64", "u")], wide)["u"]
    assert got.dtype == np.uint64 and got.tolist() == [2**64 - 1, 1]
    signed = [InputSpec.from_signature({"name": "i", "dtype": "int64", "shape": [-1]})]
    with pytest.raises(
        InvalidInput, match=r"'i': values from 1 to 9223372036854775808 do not fit INT64"
    ):
        decode_inputs([tensor([2**63, 1], [2], "INT64", "i")], signed)
    with pytest.raises(InvalidInput, match=r"'X': integers past 64 bits are not read"):
        decode_inputs([tensor([2**70, 1, 2], [1, 3])], SIGNATURE)


def test_integers_fit_float_inputs_and_are_finite() -> None:
    got = decode_inputs([tensor([2**62, -(2**63), 7], [1, 3])], SIGNATURE)["X"]
    assert got.dtype == np.float32 and np.isfinite(got).all()


def test_a_large_request_takes_the_same_checks() -> None:
    wide = [InputSpec.from_signature({"name": "X", "dtype": "float32", "shape": [-1, 20]})]
    data = [0.5] * 6000
    got = decode_inputs([tensor(data, [300, 20])], wide)["X"]
    assert got.shape == (300, 20) and got.dtype == np.float32
    data[4321] = float("nan")
    with pytest.raises(InvalidInput, match=r"holds 1 NaN or infinite value\(s\)"):
        decode_inputs([tensor(data, [300, 20])], wide)
    data[17] = 1e39
    with pytest.raises(InvalidInput, match=r"values too large for FP32"):
        decode_inputs([tensor(data, [300, 20])], wide)


def test_values_array_then_fit_still_checks_finiteness() -> None:
    """The path of the bare-rows and columns bodies: values_array, then fit."""
    wide = [InputSpec.from_signature({"name": "X", "dtype": "float64", "shape": [-1, 2]})]
    array = values_array("X", [[1.0, float("inf")]], "FP32")
    with pytest.raises(InvalidInput, match=r"holds 1 NaN or infinite value\(s\)"):
        fit({"X": array}, wide)
    assert fit({"X": values_array("X", [[1.0, 2.0]], "FP32")}, wide)["X"].dtype == np.float64


@pytest.mark.parametrize(
    ("values", "dtype", "expected"),
    [
        ([3e38, 3e38], np.float32, True),  # the sum of squares overflows: still finite
        ([60000.0, 60000.0], np.float16, True),
        ([1e300, -1e300], np.float64, True),
        ([1.0, float("nan")], np.float32, False),
        ([float("inf"), 1.0], np.float64, False),
        ([float("-inf"), 1.0], np.float16, False),
        ([1, 2], np.int64, True),
        ([1 + 2j, 3j], np.complex64, True),
        ([1 + 2j, complex(0, float("inf"))], np.complex128, False),
    ],
)
def test_finite(values: list[Any], dtype: Any, expected: bool) -> None:
    with _no_warnings():
        assert finite(np.array(values, dtype=dtype)) is expected
        big = np.zeros(5000, dtype=dtype)
        big[-2:] = values
        assert finite(big) is expected


@contextlib.contextmanager
def _no_warnings() -> Iterator[None]:
    """Any warning (numpy's overflow warnings above all) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- the signature first, then every value's kind ----------------------------------------

AGE = InputSpec.from_signature({"name": "age", "dtype": "float32", "shape": [-1, 1]})
CITY = InputSpec.from_signature({"name": "city", "dtype": "str", "shape": [-1, 1]})
COUNT = InputSpec.from_signature({"name": "n", "dtype": "int32", "shape": [-1]})
RAGGED = [[1.0, 2.0, 3.0], [4.0]]  # would be refused as ragged, if it were read


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([tensor(RAGGED, [2, 3], "FP64")], r"'X': datatype FP64 does not fit the model's FP32"),
        ([tensor(RAGGED, [2, 4])], r"'X': has shape \[2, 4\], the model takes shape \[-1, 3\]"),
        ([tensor(RAGGED, [0, 3])], r"'X': the batch is empty"),
        ([tensor(RAGGED, [2, 3], name="Y")], r"'Y': is not an input of this model"),
        ([tensor([1, 2, 3], [1, 3]), tensor(RAGGED, [2, 3])], r"'X': is given twice"),
    ],
)
def test_the_signature_is_checked_before_the_data_is_read(
    inputs: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_inputs(inputs, SIGNATURE)


def test_a_float_never_becomes_an_integer() -> None:
    with pytest.raises(InvalidInput, match=r"'n': datatype INT32 needs integers, got numbers"):
        decode_inputs([tensor([1.5, 2], [2], "INT32", "n")], [COUNT])


BOOLEANS_FOR_NUMBERS = [
    (
        [tensor([True, 0.5, 1.0], [1, 3])],
        SIGNATURE,
        r"'X': datatype FP32 needs numbers, got booleans",
    ),
    ([tensor([True, 2], [2], "INT32", "n")], [COUNT], r"'n': datatype INT32 needs integers, got b"),
    ([tensor([True, False, True], [1, 3], "BOOL")], SIGNATURE, r"'X': datatype BOOL does not fit"),
]


@pytest.mark.parametrize(("inputs", "signature", "message"), BOOLEANS_FOR_NUMBERS)
def test_a_boolean_is_never_a_number(
    inputs: list[dict[str, Any]], signature: list[InputSpec], message: str
) -> None:
    """numpy casts True to 1 "safely", and reads [True, 0.5] as floats."""
    with pytest.raises(InvalidInput, match=message):
        decode_inputs(inputs, signature)


def test_a_boolean_array_does_not_fit_a_number_input() -> None:
    """The binary tensors' and Arrow columns' way: an array of its own type, then fit."""
    binary = {"name": "X", "datatype": "BOOL", "shape": [1, 3]}
    binary["parameters"] = {"binary_data_size": 3}
    with pytest.raises(InvalidInput, match=r"'X': datatype BOOL does not fit the model's FP32"):
        decode_inputs([binary], SIGNATURE, BinaryData(memoryview(b"\x01\x00\x01")))
    with pytest.raises(InvalidInput, match=r"'X': datatype BOOL does not fit the model's FP32"):
        fit({"X": np.ones((1, 3), dtype=bool)}, SIGNATURE)


@pytest.mark.parametrize(
    ("data", "got"),
    [
        ([1, "a"], "integers"),
        ([True, "a"], "booleans"),
        ([1.5, "a"], "numbers"),
        ([None, "a"], "null values"),
        ([{}, "a"], "objects"),
    ],
)
def test_text_is_strings_only(data: list[Any], got: str) -> None:
    """numpy would make ``[1, "a"]`` the strings "1" and "a"."""
    with pytest.raises(InvalidInput, match=rf"'city': datatype BYTES needs strings, got {got}$"):
        decode_inputs([tensor(data, [2, 1], "BYTES", "city")], [CITY])


def test_text_keeps_its_nul_characters_and_each_string_its_own_length() -> None:
    values = ["a\x00", "\x00", "", "a much longer string"]
    spec = [InputSpec.from_signature({"name": "city", "dtype": "str", "shape": [-1]})]
    from_json = decode_inputs([tensor(values, [4], "BYTES", "city")], spec)["city"]
    raw = text_bytes(values)
    binary = {"name": "city", "datatype": "BYTES", "shape": [4]}
    binary["parameters"] = {"binary_data_size": len(raw)}
    from_binary = decode_inputs([binary], spec, BinaryData(memoryview(raw)))["city"]
    for array in (from_json, from_binary, values_array("city", values, "BYTES")):
        assert array.dtype == TEXT and array.tolist() == values


@pytest.mark.parametrize("bad", ["\ud800", "x\udfff", "\ud83d"])
def test_text_that_is_not_unicode_is_refused_naming_the_element(bad: str) -> None:
    # A lone surrogate: JSON can spell one ("\\ud800"), and json.loads reads it.
    data = json.loads(json.dumps(["ok", "é", bad]))
    message = r"'city': element 2 is not valid Unicode text"
    with pytest.raises(InvalidInput, match=message):
        decode_inputs([tensor([[v] for v in data], [3, 1], "BYTES", "city")], [CITY])
    with pytest.raises(InvalidInput, match=message):
        values_array("city", data, "BYTES")  # the /predict columns' and records' way


def test_shapes_and_nesting_past_32_dimensions_are_refused() -> None:
    """numpy's own limit is 64, past which it raises ValueError (a 500)."""
    for dims in (33, 65):
        with pytest.raises(InvalidInput, match=rf"'X': shape has {dims} dimensions; at most 32"):
            decode_inputs([tensor([1.0], [1] * dims)], SIGNATURE)
    nested: Any = 1.0
    for _ in range(65):
        nested = [nested]
    with pytest.raises(InvalidInput, match=r"'X': nested data has more than 32 levels"):
        values_array("X", nested, "FP32")


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_an_empty_tensor_too_large_for_numpy_is_refused(datatype: str) -> None:
    """Dimensions of at most 2**31 - 1 each, one of them 0: numpy still refuses to
    make the empty array when the others multiply past its limit ("array is too big")."""
    dtype = "str" if datatype == "BYTES" else "float32"
    open4d = [InputSpec.from_signature({"name": "X", "dtype": dtype, "shape": [-1] * 4})]
    shape = [1, 0, MAX_DIMENSION, MAX_DIMENSION]
    message = r"'X': shape \[1, 0, 2147483647, 2147483647\] is too large for any tensor"
    with pytest.raises(InvalidInput, match=message):
        decode_inputs([tensor([], shape, datatype)], open4d)
    binary = {"name": "X", "datatype": datatype, "shape": shape}
    binary["parameters"] = {"binary_data_size": 0}
    with pytest.raises(InvalidInput, match=message):
        decode_inputs([binary], open4d, BinaryData(memoryview(b"")))
    fine = decode_inputs([tensor([], [1, 0, 5, 5], datatype)], open4d)["X"]
    assert fine.shape == (1, 0, 5, 5)


# --- text reaches the models as they take it --------------------------------------------


def mixed_onnx(folder: Path) -> tuple[LoadedModel, Any]:
    """An ONNX pipeline of a number and a text input (``age`` FP32 [-1, 1], ``city``
    BYTES [-1, 1]) loaded to serve, and the scikit-learn pipeline it was made from."""
    import pandas as pd
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"age": rng.normal(40, 10, 200).astype(np.float32), "city": rng.choice(["a", "b"], 200)}
    )
    steps = [("num", StandardScaler(), ["age"]), ("cat", OneHotEncoder(), ["city"])]
    pipeline = Pipeline([("pre", ColumnTransformer(steps)), ("lr", LogisticRegression())])
    pipeline.set_params(pre__cat__handle_unknown="ignore")
    pipeline.fit(frame, (frame.age > 40) ^ (frame.city == "a"))
    onnx = convert_sklearn(
        pipeline,
        initial_types=[("age", FloatTensorType([None, 1])), ("city", StringTensorType([None, 1]))],
        options={id(pipeline.steps[-1][1]): {"zipmap": False}},
        target_opset=17,
    )
    path = folder / "mixed.onnx"
    path.write_bytes(onnx.SerializeToString())
    found = get("onnx").inspect(path, trust=Trust())
    info = VersionInfo("mixed", 1, "onnx", file_sha256(path), found.inputs, found.outputs)
    return load_model(path, info, options=RuntimeOptions(threads=1)), pipeline


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, Any]:
    return mixed_onnx(tmp_path_factory.mktemp("mixed"))


def test_text_tensors_run_in_onnxruntime_and_scikit_learn_alike(
    mixed: tuple[LoadedModel, Any],
) -> None:
    model, pipeline = mixed
    cities = ["a", "b", "a\x00", "\x00", "z"]  # NULs kept: unknown cities, as "z" is
    inputs = [
        tensor([[40.0]] * 5, [5, 1], "FP32", "age"),
        tensor([[c] for c in cities], [5, 1], "BYTES", "city"),
    ]
    arrays = decode_inputs(inputs, model.signature)
    assert arrays["city"].dtype == TEXT
    onnx = model.predict(arrays)["probabilities"]
    sklearn = pipeline.predict_proba(tabular(arrays))  # the skops format's way in
    np.testing.assert_allclose(onnx, sklearn, atol=1e-5)
    unknown = onnx[4].tolist()
    assert onnx[2].tolist() == onnx[3].tolist() == unknown  # "a\x00" is not "a"
    assert unknown not in (onnx[0].tolist(), onnx[1].tolist())
