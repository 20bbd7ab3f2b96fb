"""OIP v2 JSON tensors: decoding, checking against a signature, encoding."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ghaf.core.errors import InvalidInput
from ghaf.serving.tensors import (
    DATATYPES,
    InputSpec,
    decode_inputs,
    encode_tensor,
    finite,
    fit,
    values_array,
)

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
    assert array.dtype.kind == dtype.kind and array.tolist() == values
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
        ([tensor([1, 2, 3], [1, 3], "BYTES")], r"'X': datatype BYTES needs strings, got"),
        ([tensor(["a", "b", "c"], [1, 3])], r"'X': datatype FP32 needs numbers, got strings"),
        ([tensor([True, False, True], [1, 3])], r"needs numbers, got booleans"),
        ([tensor([1, None, 3], [1, 3])], r"needs numbers, got mixed or null values"),
        (
            [tensor([1, 2, 3, 4], [2, 2])],
            r"'X': has shape \[2, 2\], the model takes shape \[-1, 3\]",
        ),
        ([tensor([1, 2, 3], [3])], r"'X': has shape \[3\], the model takes shape \[-1, 3\]"),
        ([tensor([1, 2, 3, 4], [1, 3])], r"shape \[1, 3\] needs 3 values, data holds 4"),
        ([tensor([[1, 2, 3], [4, 5, 6]], [3, 2])], r"nested data has shape \[2, 3\]"),
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
        ([tensor([1.5, 2, 3], [1, 3], "INT32")], r"datatype INT32 needs integers, got numbers"),
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
