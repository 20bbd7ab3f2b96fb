"""Tracking's service functions called in-process with a Context, as the scheduler and
other domains call them: each authorises itself, and none reaches past its project."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from ghaf.client import Client
from ghaf.core.clock import utcnow
from ghaf.core.errors import NotFound, PermissionDenied
from ghaf.datasets import service as datasets
from ghaf.tracking import service
from ghaf.tracking.models import Run
from tests.conftest import Platform, unique


def _age(platform: Platform, run_id: str) -> None:
    """Make a run look silent for an hour."""
    with platform.runtime.database.transaction(write=True) as session:
        session.execute(
            update(Run).where(Run.id == run_id).values(heartbeat_at=utcnow() - timedelta(hours=1))
        )


def test_fail_stale_runs_is_ghafs_own_work(
    platform: Platform,
    admin: Client,
    project: str,
    member_in: Callable[[str, str], tuple[str, Client]],
) -> None:
    run = admin.runs.create(project, "stale")
    _age(platform, run.id)
    _, owner = member_in(project, "owner")
    with platform.context_as(owner) as ctx, pytest.raises(PermissionDenied):
        service.fail_stale_runs(ctx, timeout_s=60)
    assert admin.runs.get(project, run.id).status == "running"
    with platform.runtime.acting_as("system:runs", request_id=unique("reap")) as ctx:
        assert run.id in service.fail_stale_runs(ctx, timeout_s=60)
    ended = admin.runs.get(project, run.id)
    assert ended.status == "failed" and (ended.status_reason or "").startswith("heartbeat lost")


def test_find_artifact_authorises_and_stays_in_its_project(
    platform: Platform, admin: Client, project: str
) -> None:
    run = admin.runs.create(project, "with-artifact")
    admin.runs.log_artifact(project, run.id, b"weights", path="model/model.bin")
    other = admin.projects.create(unique("p")).name
    with platform.context_as(admin) as ctx:
        found = service.find_artifact(ctx.in_project(project), run.id[:13], "model/model.bin")
        assert (found.run_id, found.size) == (run.id, 7)
        with pytest.raises(NotFound, match="no artifact"):
            service.find_artifact(ctx.in_project(project), run.id, "model/other.bin")
        # The run is not reachable through another project, whoever asks.
        with pytest.raises(NotFound, match="has no run"):
            service.find_artifact(ctx.in_project(other), run.id, "model/model.bin")
        roleless = ctx.in_project(project)
        roleless.role = None  # a context holding no role in the project is refused
        with pytest.raises(PermissionDenied, match="run:read"):
            service.find_artifact(roleless, run.id, "model/model.bin")


def test_consumed_by_authorises_and_stays_in_its_project(
    platform: Platform, admin: Client, project: str, tmp_path: Path
) -> None:
    (tmp_path / "a.csv").write_text("a\n1\n")
    admin.datasets.create(project, "read-me")
    admin.datasets.add_version(project, "read-me", tmp_path / "a.csv")
    run = admin.runs.create(project, "reader")
    admin.runs.log_input(project, run.id, "read-me")
    other = admin.projects.create(unique("p")).name
    with platform.context_as(admin) as ctx:
        assert datasets.consumed_by(ctx.in_project(project), "run", [run.id]) == {
            run.id: [("read-me", 1)]
        }
        assert datasets.consumed_by(ctx.in_project(other), "run", [run.id]) == {}
        roleless = ctx.in_project(project)
        roleless.role = None
        with pytest.raises(PermissionDenied, match="dataset:read"):
            datasets.consumed_by(roleless, "run", [run.id])
