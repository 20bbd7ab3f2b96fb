"""The binary tensor extension of OIP v2 (Triton's): binary inputs and outputs, BYTES
framing, compressed bodies, and every way the framing can be wrong answered 400 naming
the input while the server keeps serving."""

from __future__ import annotations

import gzip
import json
import random
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from ghaf.core.errors import InvalidInput
from ghaf.serving.app import ServingOptions, create_serving_app
from ghaf.serving.runtime import LoadedModel, VersionInfo, file_sha256, load_model
from ghaf.serving.tensors import (
    DATATYPES,
    BinaryData,
    InputSpec,
    binary_array,
    decode_inputs,
    encode_binary,
    split_body,
)
from tests.serving.conftest import AllowAll, forest_onnx, running

LIMIT = 256 * 1024
Forest = tuple[LoadedModel, Any, np.ndarray[Any, Any]]  # served, the sklearn model, its X
HEADER = "Inference-Header-Content-Length"
COLORS = np.array([["red"], ["blue"], ["green"], ["red"], ["blue"], ["green"]])
WARMTH = np.array(["warm", "cold", "cold", "warm", "cold", "cold"])


@pytest.fixture(scope="module")
def forest(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[LoadedModel, Any, np.ndarray[Any, Any]]:
    path, model, X = forest_onnx(tmp_path_factory.mktemp("forest"))
    info = VersionInfo(
        model="forest",
        version=1,
        format="onnx",
        sha256=file_sha256(path),
        inputs=[{"name": "X", "dtype": "float32", "shape": [-1, 20]}],
        outputs=[
            {"name": "label", "dtype": "int64", "shape": [-1]},
            {"name": "probabilities", "dtype": "float32", "shape": [-1, 2]},
        ],
    )
    return load_model(path, info), model, X


@pytest.fixture(scope="module")
def colors(tmp_path_factory: pytest.TempPathFactory) -> tuple[LoadedModel, Any]:
    """A skops pipeline with a text input and text labels: BYTES both ways."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression())
    model.fit(COLORS, WARMTH)
    path = tmp_path_factory.mktemp("colors") / "colors.skops"
    sio.dump(model, path)
    info = VersionInfo(
        model="colors",
        version=1,
        format="skops",
        sha256=file_sha256(path),
        inputs=[{"name": "color", "dtype": "str", "shape": [-1, 1]}],
    )
    return load_model(path, info), model


@pytest.fixture(scope="module")
def url(forest: Forest, colors: tuple[LoadedModel, Any]) -> Iterator[str]:
    app = create_serving_app(
        [forest[0], colors[0]],
        authorizer=AllowAll(),
        options=ServingOptions(max_body_bytes=LIMIT),
    )
    with running(app) as found:
        yield found


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=30) as client:
        yield client


def framed(
    document: dict[str, Any], *chunks: bytes, length: int | str | None = None
) -> tuple[bytes, dict[str, str]]:
    """A binary infer body: the JSON header, then ``chunks``; the header's length in
    Inference-Header-Content-Length unless ``length`` overrides it."""
    header = json.dumps(document).encode()
    return header + b"".join(chunks), {HEADER: str(len(header) if length is None else length)}


def binary_input(
    name: str, array: np.ndarray[Any, Any], datatype: str
) -> tuple[dict[str, Any], bytes]:
    raw = array.astype(DATATYPES[datatype].newbyteorder("<")).tobytes()
    tensor = {
        "name": name,
        "datatype": datatype,
        "shape": list(array.shape),
        "parameters": {"binary_data_size": len(raw)},
    }
    return tensor, raw


def text_bytes(values: list[str]) -> bytes:
    out = b""
    for value in values:
        encoded = value.encode()
        out += struct.pack("<I", len(encoded)) + encoded
    return out


def parse_binary_answer(answer: httpx.Response) -> dict[str, np.ndarray[Any, Any]]:
    """What tritonclient does with a binary answer: the JSON header, then each binary
    output's bytes in the order the header lists them."""
    length = int(answer.headers[HEADER])
    header = json.loads(answer.content[:length])
    rest, offset, arrays = answer.content[length:], 0, {}
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            arrays[output["name"]] = np.asarray(output["data"]).reshape(output["shape"])
            continue
        chunk = rest[offset : offset + size]
        offset += size
        if output["datatype"] == "BYTES":
            values, at = [], 0
            while at < len(chunk):
                (n,) = struct.unpack_from("<I", chunk, at)
                values.append(chunk[at + 4 : at + 4 + n].decode())
                at += 4 + n
            arrays[output["name"]] = np.array(values).reshape(output["shape"])
        else:
            dtype = DATATYPES[output["datatype"]].newbyteorder("<")
            arrays[output["name"]] = np.frombuffer(chunk, dtype=dtype).reshape(output["shape"])
    assert offset == len(rest)
    return arrays


def good(http: httpx.Client, X: np.ndarray[Any, Any]) -> None:
    """The server still answers a well-formed binary request."""
    tensor, raw = binary_input("X", X[:2], "FP32")
    body, headers = framed({"inputs": [tensor]}, raw)
    assert http.post("/v2/models/forest/infer", content=body, headers=headers).status_code == 200


# --- working requests -------------------------------------------------------------------


def test_binary_inputs_with_json_outputs(http: httpx.Client, forest: Forest) -> None:
    _, model, X = forest
    tensor, raw = binary_input("X", X[:30], "FP32")
    body, headers = framed({"id": "b1", "inputs": [tensor]}, raw)
    answer = http.post("/v2/models/forest/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert HEADER.lower() not in answer.headers  # nothing binary comes back
    document = answer.json()
    assert document["id"] == "b1"
    label = next(o for o in document["outputs"] if o["name"] == "label")
    assert label["data"] == model.predict(X[:30]).tolist()


def test_binary_both_ways_matches_the_model(http: httpx.Client, forest: Forest) -> None:
    _, model, X = forest
    rows = X[:100]
    tensor, raw = binary_input("X", rows, "FP32")
    body, headers = framed({"inputs": [tensor], "parameters": {"binary_data_output": True}}, raw)
    answer = http.post("/v2/models/forest/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/octet-stream"
    arrays = parse_binary_answer(answer)
    assert arrays["label"].dtype == np.int64
    np.testing.assert_array_equal(arrays["label"], model.predict(rows))
    np.testing.assert_allclose(arrays["probabilities"], model.predict_proba(rows), atol=1e-5)


def test_json_inputs_with_binary_outputs_picked_one_by_one(
    http: httpx.Client, forest: Forest
) -> None:
    _, model, X = forest
    rows = X[:3]
    document = {
        "inputs": [
            {"name": "X", "datatype": "FP32", "shape": [3, 20], "data": rows.ravel().tolist()}
        ],
        "parameters": {"binary_data_output": True},  # the default; outputs override it
        "outputs": [
            {"name": "probabilities", "parameters": {"binary_data": False}},
            {"name": "label"},
        ],
    }
    answer = http.post("/v2/models/forest/infer", json=document)
    assert answer.status_code == 200, answer.text
    header = json.loads(answer.content[: int(answer.headers[HEADER])])
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "label"]
    assert "data" in header["outputs"][0] and "data" not in header["outputs"][1]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 3 * 8}
    arrays = parse_binary_answer(answer)
    np.testing.assert_array_equal(arrays["label"], model.predict(rows))


def test_bytes_tensors_both_ways(http: httpx.Client, colors: tuple[LoadedModel, Any]) -> None:
    _, model = colors
    asked = ["green", "red", "blue", "green", "purple"]
    raw = text_bytes(asked)
    tensor = {
        "name": "color",
        "datatype": "BYTES",
        "shape": [5, 1],
        "parameters": {"binary_data_size": len(raw)},
    }
    body, headers = framed(
        {
            "inputs": [tensor],
            "outputs": [{"name": "predictions", "parameters": {"binary_data": True}}],
        },
        raw,
    )
    answer = http.post("/v2/models/colors/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    header = json.loads(answer.content[: int(answer.headers[HEADER])])
    assert header["outputs"][0]["datatype"] == "BYTES"
    got = parse_binary_answer(answer)["predictions"]
    assert got.tolist() == model.predict(np.array(asked).reshape(-1, 1)).tolist()


def test_gzip_and_deflate_bodies_are_read(http: httpx.Client, forest: Forest) -> None:
    """tritonclient's request_compression_algorithm: the Inference-Header-Content-Length
    counts the uncompressed JSON."""
    _, model, X = forest
    tensor, raw = binary_input("X", X[:4], "FP32")
    body, headers = framed({"inputs": [tensor]}, raw)
    for encoding, packed in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        answer = http.post(
            "/v2/models/forest/infer",
            content=packed,
            headers={**headers, "content-encoding": encoding},
        )
        assert answer.status_code == 200, (encoding, answer.text)
        label = next(o for o in answer.json()["outputs"] if o["name"] == "label")
        assert label["data"] == model.predict(X[:4]).tolist()


def test_compressed_bodies_that_expand_past_the_limit_are_413(http: httpx.Client) -> None:
    bomb = gzip.compress(b" " * (LIMIT * 4))
    assert len(bomb) < LIMIT
    refused = http.post(
        "/v2/models/forest/infer", content=bomb, headers={"content-encoding": "gzip"}
    )
    assert refused.status_code == 413
    for encoding, content, message in (
        ("gzip", b"not gzip at all", "the body is not valid gzip data"),
        ("gzip", gzip.compress(b'{"inputs": []}')[:-12], "the gzip body is truncated"),
        ("br", b"x", "Content-Encoding 'br' is not supported"),
    ):
        answer = http.post(
            "/v2/models/forest/infer", content=content, headers={"content-encoding": encoding}
        )
        assert answer.status_code == 400, encoding
        assert message in answer.json()["error"]


def test_server_metadata_lists_the_extension(http: httpx.Client) -> None:
    assert "binary_tensor_data" in http.get("/v2").json()["extensions"]


# --- malformed framing: 400 naming the input, and the server keeps serving --------------

FP32_ROW = np.arange(20, dtype=np.float32).reshape(1, 20)
ROW_BYTES = FP32_ROW.tobytes()  # 80 bytes


def _x(size: Any, shape: list[int] | None = None, datatype: str = "FP32") -> dict[str, Any]:
    return {
        "name": "X",
        "datatype": datatype,
        "shape": shape or [1, 20],
        "parameters": {"binary_data_size": size},
    }


MALFORMED: list[tuple[str, tuple[bytes, dict[str, str]], str]] = [
    ("size overruns the body", framed({"inputs": [_x(800)]}, ROW_BYTES),
     "input 'X': binary_data_size 800 overruns the body: only 80 byte(s)"),
    ("negative size", framed({"inputs": [_x(-80)]}, ROW_BYTES),
     "input 'X': binary_data_size -80 is negative"),
    ("size is not a number", framed({"inputs": [_x("80")]}, ROW_BYTES),
     "input 'X': binary_data_size must be a whole number of bytes, not '80'"),
    ("size is a boolean", framed({"inputs": [_x(True)]}, ROW_BYTES),
     "input 'X': binary_data_size must be a whole number of bytes, not True"),
    ("size is fractional", framed({"inputs": [_x(80.0)]}, ROW_BYTES),
     "input 'X': binary_data_size must be a whole number of bytes, not 80.0"),
    ("size does not match shape x datatype", framed({"inputs": [_x(76)]}, ROW_BYTES[:76]),
     "input 'X': binary_data_size is 76 bytes, but shape [1, 20] of FP32 needs 80 (20 x 4)"),
    ("shape says more rows than the bytes hold", framed({"inputs": [_x(80, [2, 20])]}, ROW_BYTES),
     "input 'X': binary_data_size is 80 bytes, but shape [2, 20] of FP32 needs 160"),
    ("bytes left after the last input", framed({"inputs": [_x(80)]}, ROW_BYTES, b"\x00" * 8),
     "the body has 8 byte(s) of binary data after the last binary input"),
    ("header length past the body", framed({"inputs": [_x(80)]}, ROW_BYTES, length=10_000),
     "Inference-Header-Content-Length is 10,000 but the body holds only"),
    ("negative header length", framed({"inputs": [_x(80)]}, ROW_BYTES, length=-5),
     "Inference-Header-Content-Length is negative (-5)"),
    ("header length not a number", framed({"inputs": [_x(80)]}, ROW_BYTES, length="12a"),
     "Inference-Header-Content-Length must be a whole number of bytes, not '12a'"),
    ("header length zero", framed({"inputs": [_x(80)]}, ROW_BYTES, length=0),
     "Inference-Header-Content-Length is 0"),
    ("header length cuts the JSON", framed({"inputs": [_x(80)]}, ROW_BYTES, length=20),
     "the body is not valid JSON"),
    ("binary size without the header", (json.dumps({"inputs": [_x(80)]}).encode(), {}),
     "input 'X': has binary_data_size 80 but the request has no Inference-Header-Content-Length"),
    ("data and binary data both", framed({"inputs": [{**_x(80), "data": [0] * 20}]}, ROW_BYTES),
     "input 'X': has both data and binary_data_size"),
    ("an unknown datatype", framed({"inputs": [_x(80, datatype="BF16")]}, ROW_BYTES),
     "input 'X': unknown datatype 'BF16'"),
    ("parameters not an object", framed({"inputs": [{**_x(80), "parameters": [80]}]}, ROW_BYTES),
     "input 'X': parameters must be an object"),
    ("shared memory asked", framed({"inputs": [{**_x(80), "parameters": {
        "shared_memory_region": "r", "shared_memory_byte_size": 80}}]}),
     "input 'X': the shared-memory extension is not supported"),
    ("binary_data_output not a boolean",
     framed({"inputs": [_x(80)], "parameters": {"binary_data_output": "yes"}}, ROW_BYTES),
     "parameters.binary_data_output must be true or false, not 'yes'"),
    ("an output's binary_data not a boolean",
     framed({"inputs": [_x(80)], "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]},
            ROW_BYTES),
     "outputs[0].parameters.binary_data must be true or false, not 1"),
    ("classification asked",
     framed({"inputs": [_x(80)],
             "outputs": [{"name": "label", "parameters": {"classification": 2}}]}, ROW_BYTES),
     "outputs[0]: the classification extension is not supported"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "message"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_malformed_framing_is_a_400_naming_the_problem(
    http: httpx.Client,
    forest: Forest,
    request_: tuple[bytes, dict[str, str]],
    message: str,
) -> None:
    body, headers = request_
    refused = http.post("/v2/models/forest/infer", content=body, headers=headers)
    assert refused.status_code == 400, refused.text
    assert message in refused.json()["error"]
    good(http, forest[2])


def _color(raw: bytes, count: int = 2) -> tuple[bytes, dict[str, str]]:
    tensor = {
        "name": "color",
        "datatype": "BYTES",
        "shape": [count, 1],
        "parameters": {"binary_data_size": len(raw)},
    }
    return framed({"inputs": [tensor]}, raw)


BYTES_MALFORMED = [
    ("element overruns", _color(struct.pack("<I", 3) + b"red" + struct.pack("<I", 99) + b"blue"),
     "input 'color': BYTES element 1 claims 99 byte(s) but only 4 are left"),
    ("prefix cut short", _color(struct.pack("<I", 3) + b"red" + b"\x04\x00"),
     "input 'color': BYTES element 1 of 2 is missing"),
    ("bytes left over", _color(text_bytes(["red", "blue"]) + b"\x00"),
     "input 'color': binary_data_size is 16 bytes, but its 2 BYTES element(s) take 15"),
    ("not UTF-8", _color(text_bytes(["red"]) + struct.pack("<I", 2) + b"\xff\xfe"),
     "input 'color': BYTES element 1 is not UTF-8 text"),
    ("huge element length", _color(b"\xff\xff\xff\xff" + b"x" * 8),
     "input 'color': BYTES element 0 claims 4,294,967,295 byte(s)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("request_", "message"),
    [case[1:] for case in BYTES_MALFORMED],
    ids=[case[0] for case in BYTES_MALFORMED],
)
def test_malformed_bytes_elements_are_a_400_naming_the_input(
    http: httpx.Client,
    forest: Forest,
    request_: tuple[bytes, dict[str, str]],
    message: str,
) -> None:
    body, headers = request_
    refused = http.post("/v2/models/colors/infer", content=body, headers=headers)
    assert refused.status_code == 400, refused.text
    assert message in refused.json()["error"]
    good(http, forest[2])


def test_random_corruption_never_answers_500(http: httpx.Client, forest: Forest) -> None:
    """Flipped bytes, cut bodies and wrong header lengths: only 200 or 400, ever."""
    tensor, raw = binary_input("X", forest[2][:3], "FP32")
    body, headers = framed({"inputs": [tensor], "parameters": {"binary_data_output": True}}, raw)
    length = int(headers[HEADER])
    rng = random.Random(15)
    statuses = set()
    for _ in range(60):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        cut = (
            bytes(mutated[: rng.randint(0, len(mutated))]) if rng.random() < 0.3 else bytes(mutated)
        )
        claimed = str(length + rng.randint(-40, 40)) if rng.random() < 0.4 else str(length)
        answer = http.post("/v2/models/forest/infer", content=cut, headers={HEADER: claimed})
        assert answer.status_code in (200, 400), answer.text
        statuses.add(answer.status_code)
    assert 400 in statuses
    good(http, forest[2])


# --- units ------------------------------------------------------------------------------


def test_aligned_binary_inputs_are_read_in_place() -> None:
    X = np.arange(40, dtype=np.float32).reshape(2, 20)
    header = b'{"inputs": []}  '  # 16 bytes: the tensor starts aligned
    body = header + X.tobytes()
    _, binary = split_body(body, str(len(header)))
    assert binary is not None
    array = binary_array("X", binary.take("X", X.nbytes), "FP32", (2, 20))
    np.testing.assert_array_equal(array, X)
    assert np.shares_memory(array, np.frombuffer(body, dtype=np.uint8))  # no copy
    odd = b'{"inputs": []} ' + X.tobytes()  # 15 bytes: misaligned, copied once
    _, binary = split_body(odd, "15")
    assert binary is not None
    copied = binary_array("X", binary.take("X", X.nbytes), "FP32", (2, 20))
    np.testing.assert_array_equal(copied, X)
    assert copied.flags.aligned


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_every_fixed_datatype_round_trips_in_binary(datatype: str) -> None:
    dtype = DATATYPES[datatype]
    array = (np.arange(6) % 2 if dtype.kind == "b" else np.arange(6)).astype(dtype).reshape(2, 3)
    descriptor, raw = encode_binary("t", array)
    assert descriptor == {
        "name": "t",
        "datatype": datatype,
        "shape": [2, 3],
        "parameters": {"binary_data_size": array.nbytes},
    }
    data = raw if isinstance(raw, bytes) else raw.tobytes()
    back = binary_array("t", memoryview(data), datatype, (2, 3))
    np.testing.assert_array_equal(back, array)
    assert back.dtype == dtype


def test_bytes_round_trip_and_empty_tensors() -> None:
    array = np.array([["a", "bé"], ["", "long text"]])
    descriptor, raw = encode_binary("t", array)
    assert descriptor["datatype"] == "BYTES"
    assert isinstance(raw, bytes) and raw[:5] == b"\x01\x00\x00\x00a"
    back = binary_array("t", memoryview(raw), "BYTES", (2, 2))
    assert back.tolist() == array.tolist()
    assert binary_array("t", memoryview(b""), "FP32", (0, 20)).shape == (0, 20)
    assert binary_array("t", memoryview(b""), "BYTES", (0, 1)).shape == (0, 1)


def test_bool_binary_data_must_be_zero_or_one() -> None:
    with pytest.raises(InvalidInput, match="input 'flags': BOOL binary data must be bytes 0 or 1"):
        binary_array("flags", memoryview(b"\x00\x01\x02"), "BOOL", (3,))


def test_binary_inputs_are_checked_against_the_signature_like_json_ones() -> None:
    signature = [InputSpec.from_signature({"name": "X", "dtype": "float64", "shape": [-1, 2]})]
    raw = np.array([[1, 2], [3, 4]], dtype=np.float32).tobytes()
    tensor = {
        "name": "X",
        "datatype": "FP32",
        "shape": [2, 2],
        "parameters": {"binary_data_size": 16},
    }
    widened = decode_inputs([tensor], signature, BinaryData(memoryview(raw)))["X"]
    assert widened.dtype == np.float64 and widened.tolist() == [[1, 2], [3, 4]]
    nan = np.array([[1, np.nan]], dtype=np.float64).tobytes()
    tensor = {
        "name": "X",
        "datatype": "FP64",
        "shape": [1, 2],
        "parameters": {"binary_data_size": 16},
    }
    with pytest.raises(InvalidInput, match="input 'X': holds 1 NaN or infinite value"):
        decode_inputs([tensor], signature, BinaryData(memoryview(nan)))


def test_two_binary_inputs_take_their_bytes_in_order() -> None:
    signature = [
        InputSpec.from_signature({"name": "a", "dtype": "int32", "shape": [-1]}),
        InputSpec.from_signature({"name": "b", "dtype": "float64", "shape": [-1]}),
    ]
    a, b = np.array([1, 2, 3], dtype=np.int32), np.array([0.5, 1.5, 2.5])
    inputs = [
        {"name": "a", "datatype": "INT32", "shape": [3], "parameters": {"binary_data_size": 12}},
        {"name": "b", "datatype": "FP64", "shape": [3], "parameters": {"binary_data_size": 24}},
    ]
    got = decode_inputs(inputs, signature, BinaryData(memoryview(a.tobytes() + b.tobytes())))
    assert got["a"].tolist() == [1, 2, 3] and got["b"].tolist() == [0.5, 1.5, 2.5]
