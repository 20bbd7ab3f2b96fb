"""Canary rollouts on the embedded host: a healthy canary climbs its steps to 100% and
replaces the stable variant; a canary that fails is rolled back on its own; every
transition is a revision and an audit row; the rollout's evidence is what the gateway
counted; a running rollout holds other changes off; the scheduler moves it on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from ghaf.client import Client
from ghaf.core.errors import Conflict, InvalidInput, NotFound
from ghaf.core.ids import new_id
from ghaf.deployments import rollouts
from tests.conftest import Platform, TrainedModel, audited

FAST = [
    {"weight": 50, "min_duration_s": 0, "min_requests": 10},
    {"weight": 100, "min_duration_s": 0, "min_requests": 10},
]


@pytest.fixture
def stable(admin: Client, two_versions: str) -> str:
    project = two_versions
    admin.deployments.create(
        project, "api", variants=[{"name": "stable", "model": "churn", "version": 1, "weight": 100}]
    )
    return project


def _traffic(platform: Platform, project: str, rows: list[list[float]], n: int) -> dict[str, int]:
    served: dict[str, int] = {}
    url = f"{platform.url}/api/v1/projects/{project}/deployments/api/predict"
    headers = {"authorization": f"Bearer {platform.admin_token}"}
    with httpx.Client(timeout=60) as http:
        for _ in range(n):
            answer = http.post(url, json=rows, headers=headers)
            variant = answer.headers.get("x-ghaf-variant", f"failed {answer.status_code}")
            served[variant] = served.get(variant, 0) + 1
    writer = platform.gateway.traffic_writer
    assert writer is not None
    deadline = time.monotonic() + 10
    while not writer.idle and time.monotonic() < deadline:  # written every 0.25 s
        time.sleep(0.05)
    time.sleep(0.3)  # a write that began as the wait ended
    return served


def _advance(platform: Platform, admin: Client, project: str) -> tuple[str, int]:
    """Judge now (the server's scheduler may also have, meanwhile: either way the state
    that follows is the same), and the rollout's state and step after it."""
    with platform.runtime.acting_as("system:rollouts", request_id=new_id()) as ctx:
        rollouts.advance_rollouts(ctx)
    found = admin.deployments.get_rollout(project, "api")
    return found.state, found.step


def test_a_healthy_canary_climbs_to_all_traffic_and_replaces_the_stable(
    platform: Platform, admin: Client, stable: str, trained: TrainedModel
) -> None:
    rows = trained.X[:2].tolist()
    started = admin.deployments.start_rollout(
        stable, "api", {"name": "canary", "model": "churn", "version": 2}, steps=FAST
    )
    assert started.state == "running" and started.step == 1 and started.weight == 50
    assert started.base_revision == 1
    spec = admin.deployments.get(stable, "api")
    assert spec.revision == 2
    assert {v["name"]: v["weight"] for v in spec.spec["variants"]} == {"stable": 50, "canary": 50}
    assert _advance(platform, admin, stable) == ("running", 1)  # no evidence yet: it holds
    assert "0 of 10 canary requests" in admin.deployments.get_rollout(stable, "api").outcome

    served = _traffic(platform, stable, rows, 60)
    assert set(served) == {"stable", "canary"}
    status = admin.deployments.get_rollout(stable, "api")
    assert status.canary_evidence.requests == served["canary"]
    assert status.canary_evidence.failure_rate == 0
    assert status.stable_evidence.requests == served["stable"]
    assert status.canary_evidence.p99_ms is not None

    assert _advance(platform, admin, stable) == ("running", 2)
    now = admin.deployments.get_rollout(stable, "api")
    assert now.step == 2 and now.weight == 100
    assert now.canary_evidence.requests == 0  # a step is judged on its own traffic
    assert set(_traffic(platform, stable, rows, 15)) == {"canary"}
    assert _advance(platform, admin, stable) == ("completed", 2)

    done = admin.deployments.get_rollout(stable, "api")
    assert done.state == "completed" and done.finished_at is not None
    final = admin.deployments.get(stable, "api")
    assert [(v["name"], v["weight"]) for v in final.spec["variants"]] == [("canary", 100)]
    assert final.resolved["canary"].version == 2
    reasons = [r.reason for r in admin.deployments.revisions(stable, "api")]
    assert reasons[0].startswith("rollout of canary completed")
    assert reasons[1].startswith("rollout of canary: step 2")
    for action in ("start", "step", "complete"):
        assert audited(admin, stable, f"deployment:rollout-{action}"), action
    # The stable's replica is no longer needed: the next request retires it.
    assert set(_traffic(platform, stable, rows, 2)) == {"canary"}
    assert sorted(k[1] for k in platform.gateway.fleet.replicas()) == ["canary"]


def _narrow_model(tmp_path: Path, trained: TrainedModel) -> Path:
    """A model of three features: it refuses the four-feature rows the stable takes."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(trained.X)[:, :3]
    model = LogisticRegression(max_iter=200).fit(X, np.asarray(trained.y))
    path = tmp_path / "narrow.skops"
    sio.dump(model, path)
    return path


def test_a_failing_canary_is_rolled_back_on_its_own(
    platform: Platform, admin: Client, stable: str, trained: TrainedModel, tmp_path: Path
) -> None:
    narrow = np.asarray(trained.X)[:5, :3]
    admin.models.register(stable, "narrow", path=_narrow_model(tmp_path, trained), sample=narrow)
    admin.deployments.start_rollout(
        stable,
        "api",
        {"name": "canary", "model": "narrow", "version": 1},
        steps=[{"weight": 50, "min_duration_s": 3600, "min_requests": 1000}, {"weight": 100}],
    )
    served = _traffic(platform, stable, trained.X[:2].tolist(), 60)
    assert served.get("failed 400", 0) > 0 and served["stable"] > 0
    assert _advance(platform, admin, stable) == ("rolled_back", 1)  # long before the hour
    status = admin.deployments.get_rollout(stable, "api")
    assert status.state == "rolled_back" and "the canary failed" in status.outcome
    assert status.weight == 0
    final = admin.deployments.get(stable, "api")
    assert [(v["name"], v["weight"]) for v in final.spec["variants"]] == [("stable", 100)]
    (event,) = audited(admin, stable, "deployment:rollout-rollback")
    assert "the canary failed" in event.detail["why"]
    assert set(_traffic(platform, stable, trained.X[:2].tolist(), 5)) == {"stable"}


def test_abort_gives_the_stable_its_share_back(
    admin: Client, stable: str, member_in: Callable[[str, str], tuple[str, Client]]
) -> None:
    admin.deployments.start_rollout(stable, "api", {"name": "c", "model": "churn", "version": 2})
    _, viewer = member_in(stable, "viewer")
    assert viewer.deployments.get_rollout(stable, "api").state == "running"
    with pytest.raises(Exception, match="deployment:write"):
        viewer.deployments.abort_rollout(stable, "api")
    aborted = admin.deployments.abort_rollout(stable, "api", reason="not today")
    assert aborted.state == "aborted" and aborted.outcome == "not today"
    final = admin.deployments.get(stable, "api")
    assert [(v["name"], v["weight"]) for v in final.spec["variants"]] == [("stable", 100)]
    assert audited(admin, stable, "deployment:rollout-abort")
    with pytest.raises(Conflict, match="no rollout running"):
        admin.deployments.abort_rollout(stable, "api")


def test_a_running_rollout_holds_other_changes_off(admin: Client, stable: str) -> None:
    canary = {"name": "c", "model": "churn", "version": 2}
    admin.deployments.start_rollout(stable, "api", canary)
    with pytest.raises(Conflict, match="rolling out 'c'"):
        admin.deployments.update(stable, "api", production=False, reason="x")
    with pytest.raises(Conflict, match="rolling out 'c'"):
        admin.deployments.rollback(stable, "api", 1)
    with pytest.raises(Conflict, match="rolling out 'c'"):
        admin.deployments.start_rollout(stable, "api", {**canary, "name": "d"})


def test_bad_rollouts_are_refused_with_what_was_wrong(
    admin: Client, project: str, stable: str
) -> None:
    canary = {"name": "c", "model": "churn", "version": 2}
    with pytest.raises(NotFound, match="has had no rollout"):
        admin.deployments.get_rollout(stable, "api")
    with pytest.raises(InvalidInput, match="must increase"):
        admin.deployments.start_rollout(
            stable, "api", canary, steps=[{"weight": 50}, {"weight": 20}, {"weight": 100}]
        )
    with pytest.raises(InvalidInput, match="last step must give the canary 100"):
        admin.deployments.start_rollout(stable, "api", canary, steps=[{"weight": 50}])
    with pytest.raises(Conflict, match="has a variant 'stable' already"):
        admin.deployments.start_rollout(stable, "api", {**canary, "name": "stable"})
    with pytest.raises(InvalidInput, match="not a live variant"):
        admin.deployments.start_rollout(stable, "api", canary, stable="nope")
    with pytest.raises(NotFound):
        admin.deployments.start_rollout(stable, "api", {**canary, "version": 9})
    with pytest.raises(InvalidInput, match="cannot be a shadow"):
        admin.deployments.start_rollout(stable, "api", {**canary, "shadow": True})
    with pytest.raises(NotFound, match="no deployment 'ghost'"):
        admin.deployments.start_rollout(stable, "ghost", canary)
    # two live variants: which one the canary replaces must be said
    admin.deployments.create(
        stable,
        "two",
        variants=[
            {"name": "a", "model": "churn", "version": 1, "weight": 50},
            {"name": "b", "model": "churn", "version": 2, "weight": 50},
        ],
        abtest={"kind": "binary", "control": "a"},
    )
    with pytest.raises(Conflict, match="runs an A/B test"):
        admin.deployments.start_rollout(stable, "two", canary, stable="b")
    admin.deployments.update(stable, "two", clear_abtest=True)
    with pytest.raises(InvalidInput, match="name the one the canary replaces"):
        admin.deployments.start_rollout(stable, "two", canary)
    moved = admin.deployments.start_rollout(stable, "two", canary, stable="b")
    spec = admin.deployments.get(stable, "two").spec
    # the canary takes its share of b's half only; a keeps its own
    assert {v["name"]: v["weight"] for v in spec["variants"]} == {"a": 50, "b": 47.5, "c": 2.5}
    assert moved.weight == 2.5


def test_the_scheduler_moves_a_rollout_on(
    fresh_platform: Callable[..., Platform], trained: TrainedModel
) -> None:
    live = fresh_platform(deployment_traffic_flush_s=0.25, deployment_rollout_interval_s=0.5)
    admin = live.admin
    admin.projects.create("p")
    for _ in range(2):
        admin.models.register("p", "churn", path=trained.path, sample=trained.X[:5])
    admin.deployments.create(
        "p", "api", variants=[{"name": "stable", "model": "churn", "version": 1, "weight": 100}]
    )
    admin.deployments.start_rollout(
        "p",
        "api",
        {"name": "canary", "model": "churn", "version": 2},
        steps=[{"weight": 100, "min_duration_s": 0, "min_requests": 0}],
    )
    deadline = time.monotonic() + 30  # judged every half second
    while time.monotonic() < deadline:
        if admin.deployments.get_rollout("p", "api").state == "completed":
            break
        time.sleep(0.25)
    assert admin.deployments.get_rollout("p", "api").state == "completed"
    assert [v["name"] for v in admin.deployments.get("p", "api").spec["variants"]] == ["canary"]
