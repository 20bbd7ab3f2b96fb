"""The prediction log: records become Parquet rows stored through the artifact store
(encrypted, residency-checked), a full queue drops and counts, and a stalled writer
never slows a request."""

from __future__ import annotations

import gc
import io
import json
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ghaf.client import Client
from ghaf.core.errors import Unavailable
from ghaf.serving import predlog
from ghaf.serving.app import ServingOptions, create_serving_app
from ghaf.serving.auth import PlatformAuthorizer
from ghaf.serving.batching import BatchingOptions
from ghaf.serving.predlog import (
    ClientSink,
    PredictionLog,
    PredictionLogOptions,
    StoreSink,
)
from ghaf.serving.runtime import LoadedModel
from ghaf.serving.standalone import prepare
from tests.conftest import Platform, unique
from tests.serving.conftest import AllowAll, Registered, bearer, running

PATH = re.compile(r"predictions/(?P<model>[^/]+)/(?P<version>\d+)/\d{4}-\d\d-\d\d/[^/]+\.parquet")


class MemorySink:
    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}

    def write(self, project: str, path: str, data: bytes) -> None:
        self.files[path] = (project, data)


class StalledSink(MemorySink):
    """Blocks every write until released (a platform that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, project: str, path: str, data: bytes) -> None:
        self.entered.set()
        self.release.wait(60)
        super().write(project, path, data)


class FlakySink(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.failing = True

    def write(self, project: str, path: str, data: bytes) -> None:
        if self.failing:
            raise Unavailable("the platform is down")
        super().write(project, path, data)


def _record(plog: PredictionLog, rows: int, request_id: str, *, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    inputs = {"X": rng.normal(size=(rows, 4)).astype(np.float32)}
    outputs = {
        "predictions": rng.integers(0, 2, size=rows).astype(np.int64),
        "probabilities": rng.random(size=(rows, 2)),
    }
    plog.log(
        project="p",
        model="m",
        version="2",
        request_id=request_id,
        caller="alice",
        latency_s=0.0015,
        inputs=inputs,
        outputs=outputs,
    )
    return {"inputs": inputs, "outputs": outputs}


def _read(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def _field(table: pa.Table, struct: str, name: str) -> np.ndarray[Any, Any]:
    return np.asarray(table.column(struct).combine_chunks().field(name).to_pylist())


def test_records_become_rows_of_one_parquet_file_per_version() -> None:
    sink = MemorySink()
    plog = PredictionLog(sink)
    first = _record(plog, 3, "r1", seed=1)
    second = _record(plog, 2, "r2", seed=2)
    plog.flush()
    [(path, (project, data))] = sink.files.items()
    found = PATH.fullmatch(path)
    assert found and found["model"] == "m" and found["version"] == "2"
    assert project == "p"
    table = _read(data)
    assert table.num_rows == 5
    assert table.column("request_id").to_pylist() == ["r1"] * 3 + ["r2"] * 2
    assert table.column("row").to_pylist() == [0, 1, 2, 0, 1]
    assert set(table.column("caller").to_pylist()) == {"alice"}
    assert table.column("model").to_pylist() == ["m"] * 5
    assert table.column("version").to_pylist() == [2] * 5
    assert table.column("latency_ms").to_pylist() == pytest.approx([1.5] * 5)
    assert str(table.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    stamps = table.column("timestamp").to_pylist()
    assert abs(stamps[0].timestamp() - time.time()) < 60
    X = np.vstack([first["inputs"]["X"], second["inputs"]["X"]])
    assert np.array_equal(_field(table, "inputs", "X"), X)
    for name in ("predictions", "probabilities"):
        expected = np.concatenate([first["outputs"][name], second["outputs"][name]])
        assert np.allclose(_field(table, "outputs", name), expected)
    metadata = table.schema.metadata
    assert metadata[b"ghaf.prediction_log"] == b"1"
    assert metadata[b"ghaf.input_shapes"] == b'{"X": [4]}'
    assert plog.stats.files == 1 and plog.stats.rows == 5 and plog.stats.dropped == 0


def test_text_tensors_and_versions_go_to_files_of_their_own() -> None:
    sink = MemorySink()
    plog = PredictionLog(sink)
    for version in ("1", "2"):
        plog.log(
            project="p",
            model="m",
            version=version,
            request_id=f"r{version}",
            caller="bob",
            latency_s=0.001,
            inputs={"text": np.array([b"caf\xc3\xa9", b"tea"])},
            outputs={"label": np.array(["a", "b"])},
        )
    plog.flush()
    assert sorted(PATH.fullmatch(p)["version"] for p in sink.files) == ["1", "2"]  # type: ignore[index]
    for _, data in sink.files.values():
        table = _read(data)
        assert _field(table, "inputs", "text").tolist() == [b"caf\xc3\xa9", b"tea"]
        assert _field(table, "outputs", "label").tolist() == ["a", "b"]


def _wait(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the writer did not store the file in time"
        time.sleep(0.01)


def test_files_rotate_by_size_and_by_time() -> None:
    sink = MemorySink()
    plog = PredictionLog(sink, PredictionLogOptions(rotate_bytes=1, flush_s=0.02))
    plog.start()
    try:
        for i in range(3):
            _record(plog, 2, f"r{i}")
            _wait(lambda: len(sink.files) == i + 1)  # each file is over the size at once
    finally:
        plog.stop()
    timed = MemorySink()
    plog = PredictionLog(timed, PredictionLogOptions(rotate_s=0.2, flush_s=0.05))
    plog.start()
    try:
        _record(plog, 2, "late")
        _wait(lambda: bool(timed.files))  # stored after rotate_s, with no flush
    finally:
        plog.stop()
    assert plog.stats.files == 1


def test_a_full_queue_drops_and_counts() -> None:
    plog = PredictionLog(MemorySink(), PredictionLogOptions(queue_size=3))
    for i in range(5):
        _record(plog, 1, f"r{i}")
    assert plog.depth == 3 and plog.stats.logged == 3 and plog.stats.dropped == 2
    small = PredictionLog(MemorySink(), PredictionLogOptions(queue_bytes=1000))
    _record(small, 10, "fits")  # 10 rows x (16 + 8 + 16) bytes
    _record(small, 30, "too big")
    assert small.stats.logged == 1 and small.stats.dropped == 1


def test_logging_never_waits_for_a_stalled_writer() -> None:
    sink = StalledSink()
    plog = PredictionLog(sink, PredictionLogOptions(queue_size=100, rotate_bytes=1, flush_s=0.01))
    plog.start()
    try:
        _record(plog, 1, "first")
        assert sink.entered.wait(10)  # the writer is stuck inside the sink now
        inputs = {"X": np.zeros((1, 4), np.float32)}
        outputs = {"predictions": np.zeros(1, np.int64)}
        started = time.perf_counter()
        for i in range(20_000):
            plog.log(
                project="p",
                model="m",
                version="2",
                request_id=str(i),
                caller="c",
                latency_s=0.001,
                inputs=inputs,
                outputs=outputs,
            )
        elapsed = time.perf_counter() - started
        # ~1 us each; a blocking call would wait for the release (60 s).
        assert elapsed < 2.0, f"20,000 log calls took {elapsed:.2f} s"
        assert plog.stats.dropped == 20_000 - 100
    finally:
        sink.release.set()
        plog.stop()
    assert plog.stats.rows == 101  # the first record, then the 100 that fitted


def test_a_file_that_cannot_be_stored_is_retried_then_given_up() -> None:
    sink = FlakySink()
    plog = PredictionLog(sink, PredictionLogOptions(pending_files=1))
    _record(plog, 2, "a")
    plog.flush()
    _record(plog, 3, "b")
    plog.flush()  # two files waiting, one allowed: the older one is given up
    assert plog.stats.failures >= 2 and plog.stats.dropped == 1 and not sink.files
    sink.failing = False
    plog.flush()
    [(_, data)] = sink.files.values()
    assert _read(data).column("request_id").to_pylist() == ["b"] * 3
    assert plog.stats.files == 1 and plog.stats.rows == 3


def test_a_drain_longer_than_a_chunk_keeps_its_order_and_one_row_group_per_file() -> None:
    """The writer converts a drain in chunks (giving up the GIL between them); the
    files are as if it had converted it at once."""
    sink = MemorySink()
    plog = PredictionLog(sink)
    expected: dict[str, list[str]] = {"1": [], "2": []}
    numbers: dict[str, list[int]] = {"1": [], "2": []}
    for i in range(700):  # several chunks, two versions interleaved, 0 to 3 rows each
        version, rows = ("1", "2")[i % 3 == 0], i % 4
        plog.log(
            project="p",
            model="m",
            version=version,
            request_id=f"r{i}",
            caller="c",
            latency_s=0.001,
            inputs={"X": np.full((rows, 3), i, np.float32)},
            outputs={"y": np.arange(rows, dtype=np.int64)},
        )
        expected[version] += [f"r{i}"] * rows
        numbers[version] += list(range(rows))
    plog.flush()
    assert len(sink.files) == 2 and plog.stats.dropped == 0
    for path, (_, data) in sink.files.items():
        version = PATH.fullmatch(path)["version"]  # type: ignore[index]
        assert pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups == 1
        table = _read(data)
        ids = table.column("request_id").to_pylist()
        assert ids == expected[version]
        assert table.column("row").to_pylist() == numbers[version]
        assert _field(table, "inputs", "X")[:, 0].tolist() == [float(r[1:]) for r in ids]
    assert plog.stats.rows == sum(len(ids) for ids in expected.values())


def test_object_tensors_are_binary_when_any_value_of_the_drain_is() -> None:
    """Text or binary is decided over the whole drain, not chunk by chunk."""
    sink = MemorySink()
    plog = PredictionLog(sink)
    for i in range(400):
        value = b"raw" if i == 350 else f"t{i}"
        plog.log(
            project="p",
            model="m",
            version="1",
            request_id=f"r{i}",
            caller="c",
            latency_s=0.001,
            inputs={"text": np.array([value], dtype=object)},
            outputs={"y": np.zeros(1)},
        )
    plog.flush()
    [(_, data)] = sink.files.values()
    table = _read(data)
    assert str(table.schema.field("inputs").type.field("text").type) == "binary"
    assert _field(table, "inputs", "text")[[0, 350]].tolist() == [b"t0", b"raw"]


def test_queued_records_leave_the_garbage_collector_alone() -> None:
    """A second of queued records kept as tracked objects would reach the oldest
    generation and set off full collections, which stop the event loop."""
    plog = PredictionLog(MemorySink())
    _record(plog, 2, "r")
    # A tuple is untracked once the collector sees its items untracked: the record's
    # own tuples may come after it in the first pass.
    gc.collect()
    gc.collect()
    assert plog.depth == 1 and not gc.is_tracked(plog._queue[0])


# --- through the platform's artifact store --------------------------------------------


@pytest.fixture(scope="module")
def churn(
    platform: Platform, registered: Registered, tmp_path_factory: pytest.TempPathFactory
) -> LoadedModel:
    folder = tmp_path_factory.mktemp("predlog")
    return prepare(platform.client().models, registered.project, "churn@prod", folder)


def _infer_body(X: np.ndarray[Any, Any]) -> dict[str, Any]:
    tensor = {"name": "X", "datatype": "FP64", "shape": list(X.shape), "data": X.ravel().tolist()}
    return {"inputs": [tensor]}


def _stored(admin: Client, project: str, model: str) -> list[tuple[str, pa.Table]]:
    found = admin.artifacts.list(project, prefix=f"predictions/{model}/")
    return [(a.path, _read(admin.artifacts.read(project, a.path))) for a in found]


def _raw_files(root: Path) -> Iterator[bytes]:
    for path in root.rglob("*"):
        if path.is_file():
            yield path.read_bytes()


def test_served_requests_land_in_the_project_encrypted_and_audited(
    platform: Platform, registered: Registered, churn: LoadedModel
) -> None:
    plog = PredictionLog(StoreSink(platform.runtime))
    app = create_serving_app(
        [churn],
        authorizer=PlatformAuthorizer(platform.runtime, registered.project),
        prediction_log=plog,
    )
    member = bearer(registered.member)
    X = registered.X4[:5]
    with running(app) as url:
        infer = httpx.post(
            f"{url}/v2/models/churn/infer",
            json=_infer_body(X[:3]),
            headers={**member, "x-request-id": "req-1"},
        )
        assert infer.status_code == 200 and infer.headers["x-request-id"] == "req-1"
        records = [{"X": row} for row in X[3:].tolist()]
        answer = httpx.post(f"{url}/predict", json={"records": records}, headers=member)
        assert answer.status_code == 200
        generated = answer.headers["x-request-id"]
        bad = httpx.post(f"{url}/predict", json={"records": [{"Y": 1}]}, headers=member)
        assert bad.status_code == 400  # refused requests are counted, not logged
    # The app's shutdown stored what was buffered.
    admin = platform.client()
    [(path, table)] = _stored(admin, registered.project, "churn")
    version = registered.churn.version
    assert PATH.fullmatch(path) and path.startswith(f"predictions/churn/{version}/")
    assert table.column("request_id").to_pylist() == ["req-1"] * 3 + [generated] * 2
    assert set(table.column("caller").to_pylist()) == {registered.member.whoami().name}
    assert np.allclose(_field(table, "inputs", "X"), X)
    predicted = _field(table, "outputs", "predictions")
    assert predicted.tolist() == registered.churn_model.predict(X).tolist()
    assert all(ms > 0 for ms in table.column("latency_ms").to_pylist())
    # Encrypted at rest: no stored object holds the Parquet footer in clear.
    if not platform.settings.storage_url:
        assert not any(
            b"ghaf.prediction_log" in raw for raw in _raw_files(platform.settings.artifacts_dir)
        )
    puts = [
        e
        for e in admin.audit.list(project=registered.project)
        if e.action == "artifact:put" and e.resource.endswith(path)
    ]
    assert [e.actor for e in puts] == ["system:prediction-log"]


def test_the_standalone_sink_stores_through_the_platform_api(
    platform: Platform, registered: Registered
) -> None:
    plog = PredictionLog(ClientSink(registered.member.artifacts))
    plog.log(
        project=registered.project,
        model="forest",
        version="1",
        request_id="sdk-1",
        caller="edge",
        latency_s=0.002,
        inputs={"X": registered.X20[:4]},
        outputs={"label": np.arange(4, dtype=np.int64)},
    )
    plog.flush()
    assert plog.stats.files == 1, plog.stats
    [(path, table)] = _stored(platform.client(), registered.project, "forest")
    assert path.startswith("predictions/forest/1/")
    assert np.allclose(_field(table, "inputs", "X"), registered.X20[:4])


def test_a_project_outside_the_stores_region_keeps_its_log_out(
    platform: Platform, churn: LoadedModel
) -> None:
    admin = platform.client()
    project = admin.projects.create(unique("elsewhere"), allowed_regions=["mars-1"]).name
    plog = PredictionLog(StoreSink(platform.runtime))
    plog.log(
        project=project,
        model="churn",
        version="1",
        request_id="r",
        caller="c",
        latency_s=0.001,
        inputs={"X": np.zeros((1, 4))},
        outputs={"predictions": np.zeros(1, np.int64)},
    )
    plog.flush()
    # Refused for good: not retried, its record counted as dropped.
    assert plog.stats.files == 0 and plog.stats.failures == 1 and plog.stats.dropped == 1
    plog.flush()
    assert plog.stats.failures == 1
    assert admin.artifacts.list(project, prefix="predictions/") == []


def test_a_stalled_writer_does_not_slow_requests(churn: LoadedModel) -> None:
    def medians(app: Any, before_stop: Any = None) -> tuple[float, int]:
        body = _infer_body(np.zeros((1, 4)))
        times = []
        with running(app) as url, httpx.Client(base_url=url) as http:
            for _ in range(10):  # warm up
                http.post("/v2/models/churn/infer", json=body)
            for _ in range(60):
                started = time.perf_counter()
                answer = http.post("/v2/models/churn/infer", json=body)
                times.append(time.perf_counter() - started)
                assert answer.status_code == 200
            scrape = http.get("/metrics").text
            if before_stop is not None:
                before_stop()  # the app's shutdown waits for its writer
        dropped = re.search(r"^ghaf_serving_prediction_log_dropped_total (\S+)$", scrape, re.M)
        return statistics.median(times), int(float(dropped[1])) if dropped else -1

    options = ServingOptions(batching=BatchingOptions(max_latency_ms=0))
    baseline, _ = medians(create_serving_app([churn], authorizer=AllowAll(), options=options))
    sink = StalledSink()
    plog = PredictionLog(sink, PredictionLogOptions(queue_size=20, rotate_bytes=1, flush_s=0.01))
    app = create_serving_app([churn], authorizer=AllowAll(), options=options, prediction_log=plog)
    entered: list[bool] = []

    def release() -> None:
        entered.append(sink.entered.is_set())
        sink.release.set()

    try:
        stalled, dropped = medians(app, release)
    finally:
        sink.release.set()
    assert entered == [True]  # the writer was stuck in the sink all along
    # 70 requests: a few went into the stuck file, 20 fill the queue, the rest dropped.
    assert dropped >= 40
    assert stalled < 3 * baseline + 0.005, (stalled, baseline)


def test_a_record_parquet_refuses_is_dropped_and_the_writer_goes_on() -> None:
    sink = MemorySink()
    plog = PredictionLog(sink, PredictionLogOptions(rotate_bytes=1))
    plog.log(
        project="p",
        model="odd",
        version="1",
        request_id="no-outputs",
        caller="alice",
        latency_s=0.001,
        inputs={"X": np.zeros((1, 4), np.float32)},
        outputs={},  # no per-row output: Parquet refuses the empty struct column
    )
    _record(plog, 2, "good")
    plog.flush()
    assert plog.stats.dropped_lost == 1
    assert plog.stats.rows == 2 and len(sink.files) == 1


def _one_row(plog: PredictionLog, model: str, X: np.ndarray[Any, Any]) -> None:
    plog.log(
        project="p",
        model=model,
        version="1",
        request_id=model,
        caller="c",
        latency_s=0.001,
        inputs={"X": X},
        outputs={"y": np.zeros(len(X), np.int64)},
    )


def test_tensors_of_the_same_size_but_not_shape_get_files_of_their_own() -> None:
    """A file's metadata names one shape per tensor (readers reshape with it): (2, 3)
    and (3, 2) rows hold as many values, so the same column type, but not one file."""
    sink = MemorySink()
    plog = PredictionLog(sink)
    wide, tall = np.arange(6.0).reshape(1, 2, 3), np.arange(6.0, 12.0).reshape(1, 3, 2)
    _one_row(plog, "m", wide)
    _one_row(plog, "m", tall)
    plog.flush()
    assert len(sink.files) == 2 and plog.stats.rows == 2
    found = []
    for _, data in sink.files.values():
        table = _read(data)
        [shape] = json.loads(table.schema.metadata[b"ghaf.input_shapes"]).values()
        found.append(_field(table, "inputs", "X").reshape(-1, *shape))
    assert [X.tolist() for X in sorted(found, key=lambda X: X.flat[0])] == [
        wide.tolist(),
        tall.tolist(),
    ]


class FailingOnceSink(MemorySink):
    """The platform failing one write, then taking every other."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def write(self, project: str, path: str, data: bytes) -> None:
        self.calls += 1
        if self.calls == 1:
            raise Unavailable("the platform blinked")
        super().write(project, path, data)


def test_stopping_tries_every_file_once_and_counts_the_ones_it_could_not_store() -> None:
    sink = FailingOnceSink()
    plog = PredictionLog(sink, PredictionLogOptions(flush_s=60))  # stop() is the only drain
    plog.start()
    for model in ("a", "b", "c"):
        _one_row(plog, model, np.zeros((1, 2), np.float32))
    plog.stop()
    assert sink.calls == 3 and len(sink.files) == 2
    assert plog.stats.failures == 1 and plog.stats.dropped_lost == 1
    assert plog.stats.rows + plog.stats.dropped_lost == plog.stats.logged


def test_a_writer_fault_counts_the_records_it_took_and_the_writer_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = MemorySink()
    plog = PredictionLog(sink)
    _record(plog, 2, "lost")
    _record(plog, 1, "lost too")
    monkeypatch.setattr(predlog, "_split", _failing_once(predlog._split))
    plog.flush()  # the records were taken from the queue, then the writer failed
    assert plog.depth == 0 and plog.stats.dropped_lost == 2 and not sink.files
    _record(plog, 3, "later")
    plog.flush()
    assert plog.stats.files == 1 and plog.stats.rows == 3 and plog.stats.dropped_lost == 2


def test_a_file_failing_to_close_at_stop_leaves_the_others_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sink = MemorySink()
    plog = PredictionLog(sink, PredictionLogOptions(flush_s=60))  # stop() is the only drain
    monkeypatch.setattr(predlog, "_bytes", _failing_once(predlog._bytes))
    plog.start()
    _one_row(plog, "a", np.zeros((2, 2), np.float32))  # its file is the first closed
    _one_row(plog, "b", np.zeros((1, 2), np.float32))
    plog.stop()
    assert [PATH.fullmatch(path)["model"] for path in sink.files] == ["b"]  # type: ignore[index]
    assert plog.stats.rows == 1 and plog.stats.dropped_lost == 1  # a's record


def test_a_file_lost_on_a_schema_change_counts_its_records_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new dtype closes the version's open file for a new one; that close failing
    loses the file's records and the new ones, each counted once."""
    sink = MemorySink()
    plog = PredictionLog(sink)
    monkeypatch.setattr(predlog, "_bytes", _failing_once(predlog._bytes))
    _one_row(plog, "a", np.zeros((2, 2), np.float32))
    _one_row(plog, "a", np.zeros((3, 2), np.float64))
    _one_row(plog, "b", np.zeros((1, 2), np.float32))
    plog.flush()
    assert len(sink.files) == 1 and plog.stats.rows == 1
    assert plog.stats.dropped_lost == 2  # a's two records (of 5 rows)


def _failing_once(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, but its first call fails (a fault of ghaf's)."""
    calls: list[None] = []

    def failing(*args: Any) -> Any:
        calls.append(None)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return function(*args)

    return failing
