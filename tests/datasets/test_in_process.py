"""Dataset actions called in-process with a Context (as a scheduler, a job runner or
the UI would), no HTTP in between: the same function, the same checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput, PermissionDenied
from ghaf.datasets import schemas, service
from tests.conftest import Platform


def test_aliases_in_process(
    platform: Platform,
    admin: Client,
    project: str,
    member_in: Callable[[str, str], tuple[str, Client]],
    tmp_path: Path,
) -> None:
    (tmp_path / "a.txt").write_text("one")
    admin.datasets.create(project, "inproc")
    admin.datasets.add_version(project, "inproc", tmp_path / "a.txt")
    _, viewer = member_in(project, "viewer")
    _, member = member_in(project, "member")
    with platform.context_as(viewer) as ctx, pytest.raises(PermissionDenied):
        service.set_alias(ctx, project, "inproc", "prod", schemas.AliasSet(version=1))
    with platform.context_as(member) as ctx:
        moved = service.set_alias(ctx, project, "inproc", "prod", schemas.AliasSet(version=1))
        assert (moved.alias, moved.version, moved.previous) == ("prod", 1, None)
        assert service.get_version(ctx, project, "inproc", "prod").aliases == ["prod", "latest"]
        page, cursor = service.list_versions(ctx, project, "inproc", limit=10, cursor=None)
        assert [v.version for v in page] == [1] and cursor is None
        with pytest.raises(InvalidInput) as bad:
            service.delete_alias(ctx, project, "inproc", "not a name")
        assert bad.value.field == "alias"
        service.delete_alias(ctx, project, "inproc", "prod")
    assert admin.datasets.version(project, "inproc").aliases == ["latest"]
