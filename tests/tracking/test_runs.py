"""Runs end to end through the SDK against a live server: logging, lifecycle, bad input."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

import ghaf
from ghaf.client import Client
from ghaf.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from ghaf.tracking.batches import LogBatch, metrics_table
from tests.conftest import unique


def test_a_run_records_everything_and_is_durable_on_exit(
    admin: Client, project: str, tmp_path: Path
) -> None:
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    admin.datasets.create(project, "credit")
    admin.datasets.add_version(project, "credit", data)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07" * 5000)
    with ghaf.start_run(
        "churn", project=project, client=admin, tags={"team": "risk"}, note="baseline"
    ) as run:
        run.log_params({"lr": 0.1, "model": "rf", "depth": 5})
        for i in range(500):
            run.log_metric("loss", 1.0 / (i + 1), step=i)
        run.log_metric("val/auc", 0.91)
        run.set_tag("stage", "dev")
        stored = run.log_artifact(model)
        run.log_input(dataset="credit", version=1)
    assert stored is not None and stored.path == "model.onnx"
    found = admin.runs.get(project, run.id)
    assert found.status == "finished" and found.end_time is not None
    assert found.experiment == "churn" and found.note == "baseline"
    assert found.params == {"lr": "0.1", "model": "rf", "depth": "5"}
    assert found.metrics == {"loss": pytest.approx(1 / 500), "val/auc": 0.91}
    assert found.tags == {"team": "risk", "stage": "dev"}
    assert [(i.dataset, i.version) for i in found.inputs] == [("credit", 1)]
    for key in ("command", "host", "python", "packages"):
        assert key in found.provenance
    assert "git_commit" in found.provenance and "git_dirty" in found.provenance
    history = admin.runs.history(project, run.id, "loss")
    assert list(history["step"]) == list(range(500))
    assert history["value"].iloc[-1] == pytest.approx(1 / 500)
    target = admin.runs.download_artifact(project, run.id, "model.onnx", tmp_path / "back.onnx")
    assert target.read_bytes() == model.read_bytes()
    # Lineage both ways: the dataset version knows the run read it.
    consumers = admin.datasets.lineage(project, "credit", 1).consumers
    assert {"kind": "run", "id": run.id} in consumers
    # Short ids work wherever a run is expected.
    assert admin.runs.get(project, run.id[:13]).id == run.id


def test_an_exception_in_the_block_fails_the_run_and_keeps_its_points(
    admin: Client, project: str
) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        ghaf.start_run("churn", project=project, client=admin) as run,
    ):
        for i in range(100):
            run.log_metric("loss", float(i))
        raise RuntimeError("boom")
    found = admin.runs.get(project, run.id)
    assert found.status == "failed"
    assert len(admin.runs.history(project, run.id)) == 100


def test_nan_and_infinity_are_stored_and_shown_as_such(admin: Client, project: str) -> None:
    with ghaf.start_run("edge", project=project, client=admin) as run:
        run.log_metric("nan", float("nan"))
        run.log_metric("inf", float("inf"))
        run.log_metric("ninf", float("-inf"))
        run.log_metric("mixed", 1.0, step=0)
        run.log_metric("mixed", float("nan"), step=1)
    found = admin.runs.get(project, run.id)
    assert math.isnan(found.metrics["nan"]) and math.isnan(found.metrics["mixed"])
    assert found.metrics["inf"] == math.inf and found.metrics["ninf"] == -math.inf
    history = admin.runs.history(project, run.id, "mixed")
    assert history["value"].iloc[0] == 1.0 and math.isnan(history["value"].iloc[1])
    hits = admin.runs.search(project, "edge", filter="metrics.inf > 1e308")
    assert [r.id for r in hits] == [run.id]
    # NaN never matches a comparison.
    assert not admin.runs.search(project, "edge", filter="metrics.nan > -1e308")


def test_bad_values_are_refused_at_the_call(admin: Client, project: str) -> None:
    with ghaf.start_run("bad", project=project, client=admin) as run:
        with pytest.raises(InvalidInput, match="not a number"):
            run.log_metric("loss", "abc")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="not a number"):
            run.log_metric("loss", None)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="100,000 characters long; the limit is 8,000"):
            run.log_param("config", "x" * 100_000)
        for key in ("../escape", "a/../b", "/abs", "a//b", "bad\nkey", ""):
            with pytest.raises(InvalidInput):
                run.log_metric(key, 1.0)
        run.log_metric("train/loss", 0.5)  # '/' namespaces keys
        run.log_param("seed", 1)
        run.log_param("seed", 1)  # the same value again is fine
        with pytest.raises(InvalidInput, match="params cannot change"):
            run.log_param("seed", 2)
    with pytest.raises(InvalidInput, match="has ended"):
        run.log_metric("loss", 1.0)
    found = admin.runs.get(project, run.id)
    assert found.metrics == {"train/loss": 0.5} and found.params == {"seed": "1"}
    # Through REST as well: a finished run takes nothing more.
    with pytest.raises(Conflict, match="is finished"):
        admin.runs.log(project, run.id, LogBatch(params={"x": "1"}))


def test_params_set_elsewhere_cannot_change(admin: Client, project: str) -> None:
    created = admin.runs.create(project, "direct")
    admin.runs.log(project, created.id, LogBatch(params={"lr": "0.1"}))
    with pytest.raises(Conflict, match="params cannot change"):
        admin.runs.log(project, created.id, LogBatch(params={"lr": "0.2"}))
    with (
        pytest.raises(Conflict, match="params cannot change"),
        ghaf.start_run("direct", project=project, client=admin) as run,
    ):
        admin.runs.log(project, run.id, LogBatch(params={"lr": "0.1"}))
        run.log_param("lr", "0.3")
    # The refused batch changed nothing, and the run still ended (failed).
    assert admin.runs.get(project, run.id).params == {"lr": "0.1"}


def test_a_retried_batch_is_applied_once(admin: Client, project: str) -> None:
    created = admin.runs.create(project, "retry")
    batch = LogBatch(metrics=metrics_table(["a", "a"], [1.0, 2.0], [0, 1], [1, 2]), seq=7)
    first = admin.runs.log(project, created.id, batch)
    again = admin.runs.log(project, created.id, batch)
    assert (first.applied, first.points) == (True, 2)
    assert (again.applied, again.points) == (False, 0)
    assert len(admin.runs.history(project, created.id)) == 2


def test_rest_json_batches_and_their_errors(admin: Client, project: str) -> None:
    created = admin.runs.create(project, "json")
    url = f"/api/v1/projects/{project}/runs/{created.id}:log"
    admin.request(
        "POST",
        url,
        json={
            "params": {"depth": 3},
            "metrics": {
                "key": ["loss", "loss"],
                "value": [0.5, "NaN"],
                "step": [0, 1],
                "timestamp": [1_700_000_000_000, 1_700_000_000_001],
            },
        },
    )
    assert admin.runs.get(project, created.id).params == {"depth": "3"}
    bad = {"metrics": {"key": ["a"], "value": ["abc"], "step": [0], "timestamp": [0]}}
    with pytest.raises(InvalidInput, match="value"):
        admin.request("POST", url, json=bad)
    short = {"metrics": {"key": ["a", "b"], "value": [1.0], "step": [0], "timestamp": [0]}}
    with pytest.raises(InvalidInput, match="same length"):
        admin.request("POST", url, json=short)
    with pytest.raises(InvalidInput, match="not an Arrow IPC stream"):
        admin.request(
            "POST",
            url,
            content=b"junk",
            headers={"Content-Type": "application/vnd.apache.arrow.stream"},
        )
    with pytest.raises(InvalidInput, match="milliseconds since the epoch"):
        admin.request(
            "POST",
            url,
            json={"metrics": {"key": ["a"], "value": [1], "step": [0], "timestamp": [-5]}},
        )
    assert len(admin.runs.history(project, created.id)) == 2


def test_delete_and_restore(admin: Client, project: str) -> None:
    created = admin.runs.create(project, "tidy")
    admin.runs.end(project, created.id)
    assert admin.runs.delete(project, created.id).deleted
    assert not admin.runs.search(project, "tidy")
    assert [r.id for r in admin.runs.search(project, "tidy", include_deleted=True)] == [created.id]
    admin.runs.restore(project, created.id)
    assert [r.id for r in admin.runs.search(project, "tidy")] == [created.id]
    actions = [e.action for e in admin.audit.list(project=project)]
    assert {"run:create", "run:end", "run:delete", "run:restore"} <= set(actions)


def test_access_is_per_project(
    admin: Client, project: str, member_in: Callable[[str, str], tuple[str, Client]]
) -> None:
    created = admin.runs.create(project, "guarded")
    _, viewer = member_in(project, "viewer")
    assert viewer.runs.get(project, created.id).id == created.id
    assert viewer.runs.search(project, "guarded")
    with pytest.raises(PermissionDenied):
        viewer.runs.log(project, created.id, LogBatch(params={"a": "1"}))
    with pytest.raises(PermissionDenied):
        viewer.runs.create(project, "guarded")
    other = admin.projects.create(unique("p")).name
    _, outsider = member_in(other, "owner")
    with pytest.raises(NotFound):
        outsider.runs.get(project, created.id)
    # A run id from another project is not reachable through this one.
    with pytest.raises(NotFound):
        outsider.runs.get(other, created.id)
