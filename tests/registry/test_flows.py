"""The registry's multi-step actions called in-process, as a scheduler or the UI would:
``flows.register_version``, ``flows.check_gates`` and ``flows.set_alias`` with a Context
from the runtime, no HTTP in between."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput, NotFound, PermissionDenied
from ghaf.registry import checks, flows, schemas, tensors
from tests.conftest import Platform, TrainedModel, audited, unique

TIMEOUT_S = 60.0


def upload_request(
    client: Client, project: str, trained: TrainedModel, sample: Any
) -> schemas.VersionCreate:
    sha256, size = client.artifacts.put_blob(project, trained.path)
    return schemas.VersionCreate.model_validate(
        {
            "file": {"sha256": sha256, "size": size, "filename": trained.path.name},
            "sample": tensors.to_wire(tensors.from_user(sample)),
        }
    )


GATED = """
approvals: {required: 1}
protected_aliases: [champion]
gates:
  - safe_format: true
  - max_size_mb: 5
"""


def test_register_check_and_alias_in_process(
    platform: Platform,
    admin: Client,
    project: str,
    trained: TrainedModel,
    reviewer: tuple[str, Client],
) -> None:
    request = upload_request(admin, project, trained, trained.X[:5])
    with platform.context_as(admin) as ctx:
        version = flows.register_version(ctx, project, "churn", request, timeout_s=TIMEOUT_S)
    assert (version.model, version.version, version.status) == ("churn", 1, "pending")
    assert version.checks["sample_rows"] == 5
    # Committed: the REST door sees what the in-process call did, and it was audited.
    assert admin.models.version(project, "churn", 1).sha256 == version.sha256
    assert audited(admin, project, "model:register")[-1].outcome == "success"

    admin.models.set_policy(project, GATED)
    reviewer[1].models.approve(project, "churn", 1, comment="fine")
    with platform.context_as(admin) as ctx:
        # A protected alias with no passing gate check runs the gates first, in the flow.
        moved = flows.set_alias(
            ctx, project, "churn", "champion", schemas.AliasSet(version=1), timeout_s=TIMEOUT_S
        )
    assert (moved.alias, moved.version) == ("champion", 1)
    assert admin.models.version(project, "churn@champion").gates["passed"] is True
    with platform.context_as(admin) as ctx:
        report = flows.check_gates(ctx, project, "churn", "@champion", timeout_s=TIMEOUT_S)
    assert report.passed and report.checked_by == admin.whoami().name


def test_a_viewer_is_refused_and_nothing_is_written(
    platform: Platform,
    admin: Client,
    project: str,
    trained: TrainedModel,
    member_in: Callable[[str, str], tuple[str, Client]],
) -> None:
    request = upload_request(admin, project, trained, trained.X[:5])
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    _, viewer = member_in(project, "viewer")
    with platform.context_as(viewer) as ctx, pytest.raises(PermissionDenied, match="model:write"):
        flows.register_version(ctx, project, "other", request, timeout_s=TIMEOUT_S)
    with platform.context_as(viewer) as ctx, pytest.raises(PermissionDenied, match="model:write"):
        flows.check_gates(ctx, project, "churn", "1", timeout_s=TIMEOUT_S)
    with platform.context_as(viewer) as ctx, pytest.raises(PermissionDenied, match="model:write"):
        flows.set_alias(
            ctx, project, "churn", "prod", schemas.AliasSet(version=1), timeout_s=TIMEOUT_S
        )
    with pytest.raises(NotFound):
        admin.models.get(project, "other")
    assert admin.models.version(project, "churn", 1).gates is None
    assert "prod" not in admin.models.get(project, "churn").aliases
    refused = audited(admin, project, "model:write")
    assert [e.outcome for e in refused] == ["denied"] * 3


def test_a_failed_check_commits_nothing_and_is_audited(
    platform: Platform, admin: Client, project: str, trained: TrainedModel
) -> None:
    # Nine features where the model takes four: the child process refuses to predict.
    request = upload_request(admin, project, trained, np.ones((2, 9)))
    with platform.context_as(admin) as ctx, pytest.raises(InvalidInput, match="predict"):
        flows.register_version(ctx, project, "churn", request, timeout_s=TIMEOUT_S)
    with pytest.raises(NotFound):
        admin.models.get(project, "churn")  # not even the model the commit would create
    refusal = audited(admin, project, "model:register")[-1]
    assert refusal.outcome == "denied" and "predict" in refusal.detail["reason"]


def test_no_transaction_is_held_while_the_model_runs(
    platform: Platform,
    admin: Client,
    project: str,
    trained: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On SQLite a held write transaction would stop every other writer for as long as
    the child runs: another write must get through during the check."""
    real_check = checks.check
    wrote: list[str] = []

    def check_while_someone_writes(*args: Any, **kwargs: Any) -> Any:
        name = unique("m")
        writer = threading.Thread(
            target=lambda: wrote.append(admin.models.create(project, name).name)
        )
        writer.start()
        writer.join(timeout=10)
        assert not writer.is_alive(), "a write waited on the registration's transaction"
        return real_check(*args, **kwargs)

    monkeypatch.setattr(checks, "check", check_while_someone_writes)
    request = upload_request(admin, project, trained, trained.X[:2])
    with platform.context_as(admin) as ctx:
        version = flows.register_version(ctx, project, "churn", request, timeout_s=TIMEOUT_S)
    assert version.version == 1 and len(wrote) == 1
