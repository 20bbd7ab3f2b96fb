"""The serving app end to end: versions registered on the platform (skops and ONNX),
fetched and verified through the SDK, served over OIP v2 and /predict beside the
platform (tokens checked against its database)."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ghaf.client import Client
from ghaf.serving.app import ServingOptions, create_serving_app
from ghaf.serving.auth import PlatformAuthorizer
from ghaf.serving.batching import BatchingOptions
from ghaf.serving.runtime import LoadedModel
from ghaf.serving.standalone import prepare
from tests.conftest import Platform
from tests.serving.conftest import AllowAll, Registered, bearer, running

LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def loaded(
    platform: Platform, registered: Registered, tmp_path_factory: pytest.TempPathFactory
) -> list[LoadedModel]:
    admin = platform.client()
    folder = tmp_path_factory.mktemp("fetched")
    return [
        prepare(admin.models, registered.project, "churn@prod", folder / "churn"),
        prepare(admin.models, registered.project, "forest:1", folder / "forest"),
    ]


@pytest.fixture(scope="module")
def app(platform: Platform, registered: Registered, loaded: list[LoadedModel]) -> Any:
    return create_serving_app(
        loaded,
        authorizer=PlatformAuthorizer(platform.runtime, registered.project),
        options=ServingOptions(
            batching=BatchingOptions(max_batch_size=32, max_latency_ms=2), max_body_bytes=LIMIT
        ),
    )


@pytest.fixture(scope="module")
def url(app: Any) -> Iterator[str]:
    with running(app) as found:
        yield found


@pytest.fixture(scope="module")
def http(url: str, registered: Registered) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, headers=bearer(registered.member), timeout=30) as client:
        yield client


def fp32(X: np.ndarray[Any, Any], name: str = "X") -> dict[str, Any]:
    return {"name": name, "datatype": "FP32", "shape": list(X.shape), "data": X.ravel().tolist()}


def test_health_needs_no_token_and_everything_else_does(url: str, registered: Registered) -> None:
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    anonymous = httpx.get(f"{url}/v2")
    assert anonymous.status_code == 401
    assert "Bearer" in anonymous.json()["error"]
    assert anonymous.headers["www-authenticate"] == "Bearer"
    for path in ("/v2/models/forest", "/v2/models/forest/ready"):
        assert httpx.get(url + path).status_code == 401
    body = {"inputs": [fp32(registered.X20[:1])]}
    assert httpx.post(f"{url}/v2/models/forest/infer", json=body).status_code == 401
    forged = {"authorization": "Bearer ghaf_" + "x" * 43}
    assert httpx.get(f"{url}/v2", headers=forged).status_code == 401


def test_a_token_without_deployment_invoke_is_refused(url: str, registered: Registered) -> None:
    for caller in (registered.viewer, registered.outsider):
        refused = httpx.get(f"{url}/v2/models/forest", headers=bearer(caller))
        assert refused.status_code == 403
        assert "deployment:invoke" in refused.json()["error"]
    body = {"inputs": [fp32(registered.X20[:1])]}
    viewer = bearer(registered.viewer)
    assert httpx.post(f"{url}/v2/models/forest/infer", json=body, headers=viewer).status_code == 403


def test_a_service_account_with_a_member_role_may_invoke(
    url: str, registered: Registered, platform: Platform
) -> None:
    admin = platform.client()
    admin.service_accounts.create(registered.project, "scorer", role="member")
    token = admin.service_accounts.create_token(registered.project, "scorer", token_name="t").token
    answer = httpx.get(f"{url}/v2", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["name"] == "ghaf"


def test_server_and_model_metadata(http: httpx.Client, registered: Registered) -> None:
    assert http.get("/v2").json()["name"] == "ghaf"
    forest = http.get("/v2/models/forest").json()
    assert forest["name"] == "forest" and forest["versions"] == ["1"]
    assert forest["platform"] == "onnxruntime_onnx"
    assert forest["inputs"] == [
        {"name": registered.forest.inputs[0]["name"], "datatype": "FP32", "shape": [-1, 20]}
    ]
    churn = http.get(f"/v2/models/churn/versions/{registered.churn.version}").json()
    assert churn["inputs"] == [{"name": "X", "datatype": "FP64", "shape": [-1, 4]}]
    assert churn["platform"] == "sklearn_skops"
    assert http.get("/v2/models/churn/ready").json() == {
        "name": "churn",
        "version": None,
        "ready": True,
    }
    ready = http.get(f"/v2/models/churn/versions/{registered.churn.version}/ready")
    assert ready.json()["ready"] is True


def test_infer_onnx_matches_the_model_and_echoes_the_id(
    http: httpx.Client, registered: Registered
) -> None:
    X = registered.X20[:25]
    name = registered.forest.inputs[0]["name"]
    answer = http.post(
        "/v2/models/forest/infer", json={"id": "req-7", "inputs": [fp32(X, name)]}
    ).json()
    assert answer["id"] == "req-7"
    assert (answer["model_name"], answer["model_version"]) == ("forest", "1")
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["label"]["datatype"] == "INT64" and outputs["label"]["shape"] == [25]
    assert outputs["label"]["data"] == registered.forest_model.predict(X).tolist()
    proba = np.asarray(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(proba, registered.forest_model.predict_proba(X), atol=1e-5)
    only = http.post(
        "/v2/models/forest/versions/1/infer",
        json={"inputs": [fp32(X[:2], name)], "outputs": [{"name": "label"}], "parameters": {}},
    ).json()
    assert [o["name"] for o in only["outputs"]] == ["label"]


def test_infer_skops_nested_data(http: httpx.Client, registered: Registered) -> None:
    X = registered.X4[:6]
    tensor = {"name": "X", "datatype": "FP64", "shape": [6, 4], "data": X.tolist()}
    answer = http.post("/v2/models/churn/infer", json={"inputs": [tensor]}).json()
    outputs = {o["name"]: o["data"] for o in answer["outputs"]}
    assert outputs["predictions"] == registered.churn_model.predict(X).tolist()
    assert answer["model_version"] == str(registered.churn.version)


BAD = [
    ({"inputs": [{"name": "X", "datatype": "BYTES", "shape": [1, 4], "data": list("abcd")}]},
     "input 'X': datatype BYTES does not fit the model's FP64"),
    ({"inputs": [{"name": "X", "datatype": "INT8", "shape": [1, 4], "data": [1, 2, 3, 1000]}]},
     "input 'X': values from 1 to 1000 do not fit INT8"),
    ({"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]},
     "input 'X': has shape [1, 3], the model takes shape [-1, 4]"),
    ({"inputs": [{"name": "Z", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
     "input 'Z': is not an input of this model"),
    ({"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]},
                 {"name": "W", "datatype": "FP64", "shape": [1], "data": [1]}]},
     "input 'W': is not an input of this model; it takes X"),
    ({"inputs": [{"name": "X", "datatype": "FP64", "shape": [0, 4], "data": []}]},
     "input 'X': the batch is empty"),
    ({"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 4], "data": [1, "NaN", 3, 4]}]},
     "input 'X': datatype FP64 needs numbers, got strings"),
    ({"inputs": []}, "the request needs 'inputs'"),
    ({"outputs": [{"name": "X"}]}, "the request needs 'inputs'"),
    ({"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}],
      "outputs": [{"name": "nope"}]},
     "output 'nope' is not an output of this model"),
    ({"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 4], "data": [1, 2, 3, 4]}],
      "id": 5},
     "'id' must be a string"),
    ([1, 2, 3], "the body must be a JSON object with 'inputs'"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "message"), BAD)
def test_bad_input_is_a_400_naming_the_problem_and_the_server_keeps_serving(
    http: httpx.Client, registered: Registered, body: Any, message: str
) -> None:
    refused = http.post("/v2/models/churn/infer", json=body)
    assert refused.status_code == 400, refused.text
    assert message in refused.json()["error"]
    good = {"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 4], "data": [0, 0, 0, 0]}]}
    assert http.post("/v2/models/churn/infer", json=good).status_code == 200


def test_a_narrowing_datatype_is_refused(http: httpx.Client, registered: Registered) -> None:
    name = registered.forest.inputs[0]["name"]
    body = {"inputs": [{"name": name, "datatype": "FP64", "shape": [1, 20], "data": [0.5] * 20}]}
    refused = http.post("/v2/models/forest/infer", json=body)
    assert refused.status_code == 400
    assert refused.json()["error"] == f"input {name!r}: datatype FP64 does not fit the model's FP32"


def test_nan_the_signature_forbids_is_refused(http: httpx.Client) -> None:
    # JSON has no NaN; Python's json (and many clients) write the bare token anyway.
    raw = (
        b'{"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 4], "data": [1, NaN, 3, 4]}]}'
    )
    refused = http.post(
        "/v2/models/churn/infer", content=raw, headers={"content-type": "application/json"}
    )
    assert refused.status_code == 400
    assert "input 'X': holds 1 NaN or infinite value(s)" in refused.json()["error"]


def test_malformed_json_and_empty_bodies_are_400(http: httpx.Client) -> None:
    for content in (b"{bad", b"", b"\xff\xfe"):
        refused = http.post("/v2/models/churn/infer", content=content)
        assert refused.status_code == 400, content
        assert "error" in refused.json()


def test_unknown_models_and_versions_are_404(http: httpx.Client) -> None:
    gone = http.get("/v2/models/nope")
    assert gone.status_code == 404
    assert gone.json()["error"] == "no model 'nope' is served here; served: churn, forest"
    body = {"inputs": [{"name": "X", "datatype": "FP64", "shape": [1, 4], "data": [0, 0, 0, 0]}]}
    assert http.post("/v2/models/nope/infer", json=body).status_code == 404
    version = http.post("/v2/models/churn/versions/99/infer", json=body)
    assert (
        version.status_code == 404 and "has no version '99' served here" in version.json()["error"]
    )
    assert http.get("/v2/nothing").status_code == 404


def test_a_body_over_the_limit_is_413_and_anonymous_ones_are_401_unread(
    url: str, http: httpx.Client
) -> None:
    big = b'{"inputs": [' + b" " * (LIMIT + 10) + b"]}"
    refused = http.post("/v2/models/churn/infer", content=big)
    assert (
        refused.status_code == 413 and "larger than this server accepts" in refused.json()["error"]
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(LIMIT // 4096 + 2):
            yield b" " * 4096

    streamed = http.post("/v2/models/churn/infer", content=chunks())
    assert streamed.status_code == 413
    assert httpx.post(f"{url}/v2/models/churn/infer", content=big).status_code == 401


def test_predict_answers_in_the_shape_it_was_asked(
    http: httpx.Client, registered: Registered
) -> None:
    X4, model = registered.X4[:5], registered.churn_model
    expected = model.predict(X4).tolist()
    assert http.post("/predict", json=X4.tolist()).json() == expected
    records = http.post("/predict", json={"records": [{"X": row} for row in X4.tolist()]}).json()
    assert [r["predictions"] for r in records["records"]] == expected
    np.testing.assert_allclose(
        [r["probabilities"] for r in records["records"]], model.predict_proba(X4)
    )
    columns = http.post("/predict", json={"columns": {"X": X4.tolist()}}).json()["columns"]
    assert columns["predictions"] == expected
    forest = http.post("/predict?model=forest", json=registered.X20[:3].tolist()).json()
    assert forest == registered.forest_model.predict(registered.X20[:3]).tolist()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "a bare body must be a non-empty list of rows"),
        ([[1, 2, 3]], "input 'X': has shape [1, 3], the model takes shape [-1, 4]"),
        ({"records": [{"Y": [1, 2, 3, 4]}]}, "records[0] has 'Y', which is not an input"),
        ({"records": [{}]}, "records[0] has no 'X'"),
        ({"columns": {"X": [["a", "b", "c", "d"]]}}, "input 'X': datatype FP64 needs numbers"),
        ({"rows": []}, 'send {"records": [{...}, ...]}'),
    ],
)
def test_predict_refuses_bad_bodies_by_name(http: httpx.Client, body: Any, message: str) -> None:
    refused = http.post("/predict", json=body)
    assert refused.status_code == 400
    assert message in refused.json()["error"]


def test_concurrent_requests_are_batched_and_each_gets_its_rows(
    url: str, app: Any, registered: Registered
) -> None:
    X, model = registered.X20, registered.forest_model
    name = registered.forest.inputs[0]["name"]
    rng = random.Random(11)
    slices = []
    for _ in range(60):
        start = rng.randrange(0, len(X) - 20)
        slices.append((start, start + rng.randint(1, 20)))
    stats = app.state.models.get("forest").batcher.stats
    calls, requests = stats.calls, stats.requests

    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(
            base_url=url, headers=bearer(registered.member), timeout=30
        ) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/v2/models/forest/infer",
                        json={"id": f"r{i}", "inputs": [fp32(X[a:b], name)]},
                    )
                    for i, (a, b) in enumerate(slices)
                )
            )
        return [a.json() for a in answers]

    for i, ((a, b), answer) in enumerate(zip(slices, asyncio.run(main()), strict=True)):
        assert answer["id"] == f"r{i}"
        labels = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
        assert labels == model.predict(X[a:b]).tolist()
    assert stats.requests - requests == len(slices)
    assert stats.calls - calls < len(slices)  # some requests shared a model call


class Blocking(LoadedModel):
    """A loaded model whose calls wait until released (to fill the queue)."""

    release: threading.Event

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        self.release.wait(10)
        return super().predict(inputs)


def test_a_full_queue_answers_429_with_retry_after(
    loaded: list[LoadedModel], registered: Registered
) -> None:
    source = loaded[1]
    blocking = Blocking(**{k: getattr(source, k) for k in source.__dataclass_fields__})
    blocking.release = threading.Event()
    app = create_serving_app(
        [blocking],
        authorizer=AllowAll(),
        options=ServingOptions(batching=BatchingOptions(max_queue=1, max_batch_size=1)),
    )
    name = registered.forest.inputs[0]["name"]
    body = {"inputs": [fp32(registered.X20[:1], name)]}

    async def main(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = asyncio.ensure_future(client.post("/v2/models/forest/infer", json=body))
            await asyncio.sleep(0.2)  # running, blocked
            second = asyncio.ensure_future(client.post("/v2/models/forest/infer", json=body))
            await asyncio.sleep(0.2)  # queued
            third = await client.post("/v2/models/forest/infer", json=body)
            assert third.headers["retry-after"] == "1"
            assert "requests waiting" in third.json()["error"]
            blocking.release.set()
            return [third.status_code, (await first).status_code, (await second).status_code]

    with running(app) as url:
        try:
            assert asyncio.run(main(url)) == [429, 200, 200]
        finally:
            blocking.release.set()


def test_served_files_were_verified_against_the_registry(
    loaded: list[LoadedModel], registered: Registered
) -> None:
    churn, forest = loaded
    assert churn.info.sha256 == registered.churn.sha256
    assert forest.info.sha256 == registered.forest.sha256
    assert (churn.info.version, forest.info.version) == (registered.churn.version, 1)


def test_tampered_download_is_refused_at_start(
    platform: Platform, registered: Registered, tmp_path: Path
) -> None:
    """A source whose file does not match the registered hash: the server never starts."""
    from ghaf.core.errors import IntegrityFailure

    admin: Client = platform.client()

    class Tampering:
        def version(self, *args: Any, **kwargs: Any) -> Any:
            return admin.models.version(*args, **kwargs)

        def policy(self, project: str) -> Any:
            return admin.models.policy(project)

        def download(
            self,
            project: str,
            name: str,
            version: int | str | None = None,
            *,
            destination: str | Path = ".",
            onnx: bool = False,
        ) -> Path:
            path = admin.models.download(project, name, version, destination=destination)
            path.write_bytes(path.read_bytes() + b"\x00")
            return path

    with pytest.raises(IntegrityFailure, match="refusing to serve it"):
        prepare(Tampering(), registered.project, "forest", tmp_path)


# --- /predict with Arrow ----------------------------------------------------------------

ARROW = "application/vnd.apache.arrow.stream"


def arrow_body(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def arrow_table(content: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(content).read_all()


def test_predict_takes_arrow_tables_of_rows_or_features(
    http: httpx.Client, registered: Registered
) -> None:
    import pyarrow as pa

    X4, model = registered.X4[:7], registered.churn_model
    expected = model.predict(X4).tolist()
    rows = pa.FixedSizeListArray.from_arrays(pa.array(X4.ravel()), 4)
    tables = {
        "fixed-size lists": pa.table({"X": rows}),
        "lists": pa.table({"X": pa.array(X4.tolist(), type=pa.list_(pa.float64()))}),
        "one column per feature": pa.table({f"f{i}": X4[:, i] for i in range(4)}),
        "float32 features, in two batches": pa.Table.from_batches(
            pa.table({f"f{i}": X4[:, i].astype(np.float32) for i in range(4)}).to_batches(
                max_chunksize=4
            )
        ),
    }
    for what, table in tables.items():
        answer = http.post("/predict", content=arrow_body(table), headers={"content-type": ARROW})
        assert answer.status_code == 200, (what, answer.text)
        columns = answer.json()["columns"]
        if what.startswith("float32"):  # widened to the model's float64: values differ a hair
            assert len(columns["predictions"]) == 7
            continue
        assert columns["predictions"] == expected, what
        np.testing.assert_allclose(columns["probabilities"], model.predict_proba(X4))


def test_predict_answers_arrow_when_accept_asks(http: httpx.Client, registered: Registered) -> None:
    import pyarrow as pa

    X4, model = registered.X4[:5], registered.churn_model
    table = pa.table({"X": pa.FixedSizeListArray.from_arrays(pa.array(X4.ravel()), 4)})
    answer = http.post(
        "/predict", content=arrow_body(table), headers={"content-type": ARROW, "accept": ARROW}
    )
    assert answer.status_code == 200 and answer.headers["content-type"] == ARROW
    got = arrow_table(answer.content)
    assert got.column_names == ["predictions", "probabilities"]
    assert got.column("predictions").to_pylist() == model.predict(X4).tolist()
    assert pa.types.is_fixed_size_list(got.schema.field("probabilities").type)
    np.testing.assert_allclose(got.column("probabilities").to_pylist(), model.predict_proba(X4))
    # a JSON body answered in Arrow too
    json_body = http.post("/predict", json=X4.tolist(), headers={"accept": ARROW})
    assert json_body.headers["content-type"] == ARROW
    assert arrow_table(json_body.content).column("predictions").to_pylist() == (
        model.predict(X4).tolist()
    )


def test_predict_refuses_bad_arrow_bodies_by_name(http: httpx.Client) -> None:
    import pyarrow as pa

    X = pa.FixedSizeListArray.from_arrays(pa.array([0.0] * 8), 4)
    cases = [
        (b"not arrow at all", "the body is not an Arrow IPC stream"),
        (b"", "the request has no body; send an Arrow IPC stream"),
        (arrow_body(pa.table({"X": pa.array([[1.0, 2, 3, 4], None])})), "column 'X' has 1 null"),
        (arrow_body(pa.table({"X": pa.array([[1.0, 2, 3, 4], [1.0]])})),
         "column 'X' has lists of different lengths (1 to 4)"),
        (arrow_body(pa.table({"X": X, "Y": pa.array([1, 2])})),
         "input 'Y': is not an input of this model; it takes X"),
        (arrow_body(pa.table({"f0": pa.array([1.0]), "f1": pa.array([2.0])})),
         "input 'X': has shape [1, 2], the model takes shape [-1, 4]"),
        (arrow_body(pa.table({"X": pa.array([[1.0, 2, 3, 4]])}).slice(0, 0)),
         "the Arrow table has no rows: the batch is empty"),
        (arrow_body(pa.table({"when": pa.array([0, 1], type=pa.timestamp("s"))})),
         "column 'when' has Arrow type timestamp[s]"),
        (arrow_body(pa.table({"f0": pa.array(["a"]), "f1": pa.array(["b"]),
                              "f2": pa.array(["c"]), "f3": pa.array(["d"])})),
         "input 'f0': datatype BYTES does not fit the model's FP64"),
        (arrow_body(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["a", "a"])),
         "the Arrow table has column 'a' twice"),
    ]  # fmt: skip
    for content, message in cases:
        refused = http.post("/predict", content=content, headers={"content-type": ARROW})
        assert refused.status_code == 400, (message, refused.text)
        assert message in refused.json()["error"]
    assert http.post("/predict", json=[[0, 0, 0, 0]]).status_code == 200


def test_predict_arrow_columns_name_the_inputs_of_a_dataframe_model(tmp_path: Path) -> None:
    """A model registered from a DataFrame takes one 1-D input per column; an Arrow table
    with those columns (in any order, integers widened) goes straight in."""
    import pandas as pd
    import pyarrow as pa
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from ghaf.serving.runtime import VersionInfo, file_sha256, load_model

    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {"age": rng.integers(20, 70, 80).astype(float), "income": rng.normal(5e3, 1e3, 80)}
    )
    model = LogisticRegression().fit(frame, (frame.age > 45).astype(int))
    path = tmp_path / "frame.skops"
    sio.dump(model, path)
    inputs = [{"name": n, "dtype": "float64", "shape": [-1]} for n in ("age", "income")]
    info = VersionInfo("ages", 1, "skops", file_sha256(path), inputs)
    app = create_serving_app([load_model(path, info)], authorizer=AllowAll())
    table = pa.table({"income": frame.income[:6], "age": frame.age[:6].astype("int64")})
    with running(app) as url:
        answer = httpx.post(
            f"{url}/predict",
            content=arrow_body(table),
            headers={"content-type": ARROW, "accept": ARROW},
        )
        missing = httpx.post(
            f"{url}/predict",
            content=arrow_body(pa.table({"age": [30.0]})),
            headers={"content-type": ARROW},
        )
    assert answer.status_code == 200, answer.text
    got = arrow_table(answer.content).column("predictions").to_pylist()
    assert got == model.predict(frame[:6]).tolist()
    assert missing.status_code == 400
    assert "input 'income': is missing" in missing.json()["error"]


# --- readiness and compressed JSON ------------------------------------------------------


def test_readiness_is_the_status_code(loaded: list[LoadedModel]) -> None:
    """OIP clients read only the status: 503 before the app has started, 200 after."""
    app = create_serving_app(loaded[:1], authorizer=AllowAll())

    async def unstarted() -> list[httpx.Response]:  # ASGITransport runs no lifespan
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return [await client.get(p) for p in ("/v2/health/ready", "/v2/models/churn/ready")]

    health, model = asyncio.run(unstarted())
    assert (health.status_code, health.json()) == (503, {"ready": False})
    assert model.status_code == 503 and model.json()["ready"] is False
    with running(app) as url:
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{url}/v2/models/churn/ready").status_code == 200


def test_a_gzip_json_body_is_read(http: httpx.Client, registered: Registered) -> None:
    import gzip
    import json

    X = registered.X4[:2]
    body = {"inputs": [{"name": "X", "datatype": "FP64", "shape": [2, 4], "data": X.tolist()}]}
    answer = http.post(
        "/v2/models/churn/infer",
        content=gzip.compress(json.dumps(body).encode()),
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    assert outputs["predictions"] == registered.churn_model.predict(X).tolist()
