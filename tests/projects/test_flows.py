"""The purge flow called in-process, and through the REST route and the CLI that use it."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.client import Client
from ghaf.core.clock import utcnow
from ghaf.core.errors import PermissionDenied
from ghaf.projects import flows
from ghaf.security.tenancy import Project
from tests.conftest import Platform, unique

MakePlatform = Callable[..., Platform]


def _object_files(platform: Platform) -> list[Path]:
    root = platform.settings.artifacts_dir
    return [p for p in root.rglob("*") if p.is_file() and "audit-witness" not in p.parts]


def _past_retention(platform: Platform, name: str) -> None:
    with platform.runtime.database.transaction() as session:
        session.execute(
            update(Project)
            .where(Project.name == name)
            .values(purge_after=utcnow() - timedelta(seconds=1))
        )


def _deleted_project_with_bytes(platform: Platform) -> str:
    name = platform.admin.projects.create(unique("gone")).name
    platform.admin.artifacts.upload(name, "x.bin", os.urandom(1000))
    platform.admin.projects.delete(name)
    return name


def test_purge_flow_removes_rows_and_bytes(fresh_platform: MakePlatform) -> None:
    live = fresh_platform()
    name = _deleted_project_with_bytes(live)
    kept = _deleted_project_with_bytes(live)  # deleted, but still within its retention
    _past_retention(live, name)
    assert len(_object_files(live)) == 2
    with live.runtime.acting_as("system:test", request_id=unique("purge")) as ctx:
        assert flows.purge(ctx) == [name]
    assert len(_object_files(live)) == 1  # only the kept project's bytes remain
    assert [p.name for p in live.admin.projects.list(deleted=True)] == [kept]
    events = [e for e in live.admin.audit.list() if e.action == "project:purge"]
    assert [(e.actor, e.detail["name"]) for e in events] == [("system:test", name)]


def test_purge_flow_needs_a_platform_admin(fresh_platform: MakePlatform) -> None:
    live = fresh_platform()
    name = _deleted_project_with_bytes(live)
    _past_retention(live, name)
    user, client = live.new_user()
    with live.context_as(client) as ctx, pytest.raises(PermissionDenied, match="platform:admin"):
        flows.purge(ctx)
    assert _object_files(live)  # nothing was removed
    with pytest.raises(PermissionDenied):
        client.projects.purge()  # REST: POST /projects:purge
    denied = [e for e in live.admin.audit.list() if e.outcome == "denied"]
    assert any(e.actor == user.name and e.action == "platform:admin" for e in denied)


def test_purge_through_rest_and_cli_removes_bytes(
    fresh_platform: MakePlatform, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = fresh_platform()
    first, second = _deleted_project_with_bytes(live), _deleted_project_with_bytes(live)
    _past_retention(live, first)
    assert live.admin.projects.purge() == [first]
    assert len(_object_files(live)) == 1
    _past_retention(live, second)
    monkeypatch.setenv("GHAF_URL", live.url)
    monkeypatch.setenv("GHAF_TOKEN", live.admin_token)
    result = CliRunner().invoke(app, ["projects", "purge", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"purged": [second]}
    assert _object_files(live) == []


def test_restore_is_a_custom_method(admin: Client) -> None:
    name = admin.projects.create(unique("r")).name
    admin.projects.delete(name)
    restored = admin.request("POST", f"/api/v1/projects/{name}:restore").json()
    assert restored["name"] == name and restored["deleted_at"] is None
