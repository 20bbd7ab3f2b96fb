"""OIP v2 JSON tensors: decoding, checking against a signature, encoding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ghaf.core.errors import InvalidInput
from ghaf.serving.tensors import DATATYPES, InputSpec, decode_inputs, encode_tensor

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
