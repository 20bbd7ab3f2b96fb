"""A/B tests on a deployment: outcomes credited to the variant that answered, the report
with its fixed-horizon and always-valid p-values, the winner and its promotion."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ghaf.client import Client
from ghaf.core.errors import Conflict, InvalidInput, PermissionDenied
from ghaf.deployments import schemas, service
from tests.conftest import Platform, TrainedModel, audited


@pytest.fixture
def ab(admin: Client, project: str, trained: TrainedModel) -> str:
    """``project`` with deployment ``d``: variants a (control) and b at 50/50, a shadow s,
    and a binary A/B test."""
    for _ in range(2):
        admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    admin.deployments.create(
        project,
        "d",
        variants=[
            {"name": "a", "model": "churn", "version": 1, "weight": 50},
            {"name": "b", "model": "churn", "version": 2, "weight": 50},
            {"name": "s", "model": "churn", "version": 2, "shadow": True},
        ],
        abtest={"kind": "binary", "control": "a"},
    )
    return project


def assign(platform: Platform, client: Client, project: str, pairs: list[tuple[str, str]]) -> int:
    """What the gateway does after answering: record who answered each request."""
    revision = client.deployments.get(project, "d").revision
    new = 0
    with platform.context_as(client) as ctx:
        for start in range(0, len(pairs), schemas.MAX_OUTCOMES):
            items = [
                schemas.Assignment(request_id=r, variant=v)
                for r, v in pairs[start : start + schemas.MAX_OUTCOMES]
            ]
            new += service.record_assignments(
                ctx, project, "d", schemas.Assignments(revision=revision, items=items)
            )
    return new


def traffic(n: int, rates: dict[str, float], seed: int = 0) -> tuple[list, dict[str, float]]:
    rng = np.random.default_rng(seed)
    pairs, outcomes = [], {}
    for i in range(n):
        variant = "a" if i % 2 == 0 else "b"
        request_id = f"req-{seed}-{i}"
        pairs.append((request_id, variant))
        outcomes[request_id] = float(rng.random() < rates[variant])
    return pairs, outcomes


def test_a_real_effect_wins_and_is_promoted(platform: Platform, admin: Client, ab: str) -> None:
    pairs, outcomes = traffic(12_000, {"a": 0.10, "b": 0.16})
    assert assign(platform, admin, ab, pairs) == 12_000
    assert assign(platform, admin, ab, pairs[:10]) == 0  # the first record stays
    result = admin.deployments.post_outcomes(ab, "d", outcomes)
    assert (result.recorded, result.unknown, result.duplicate) == (12_000, 0, 0)
    report = admin.deployments.abtest_report(ab, "d")
    assert report.winner == "b" and report.control == "a"
    control, treatment = report.variants
    assert (control.variant, control.n, treatment.variant, treatment.n) == ("a", 6000, "b", 6000)
    a = np.mean([outcomes[r] for r, v in pairs if v == "a"])
    b = np.mean([outcomes[r] for r, v in pairs if v == "b"])
    assert control.mean == pytest.approx(a) and treatment.mean == pytest.approx(b)
    assert treatment.lift == pytest.approx(b - a)
    assert treatment.significant and treatment.sequential_p_value < 0.05
    assert treatment.p_value <= treatment.sequential_p_value  # the fixed test is bolder
    low, high = treatment.lift_interval
    assert low < b - a < high
    promoted = admin.deployments.promote(ab, "d")
    weights = {v["name"]: v["weight"] for v in promoted.spec["variants"]}
    assert weights == {"a": 0.0, "b": 100.0, "s": 0.0}
    assert promoted.spec["variants"][2]["shadow"] is True
    assert admin.deployments.revisions(ab, "d")[0].reason == "promoted b, the A/B test's winner"
    # One audit row per request the SDK sent (10,000 outcomes each).
    assert [e.detail["recorded"] for e in audited(admin, ab, "deployment:outcomes")] == [
        10_000,
        2_000,
    ]


def test_no_winner_without_a_difference(platform: Platform, admin: Client, ab: str) -> None:
    pairs, outcomes = traffic(4_000, {"a": 0.2, "b": 0.2}, seed=3)
    assign(platform, admin, ab, pairs)
    admin.deployments.post_outcomes(ab, "d", outcomes)
    report = admin.deployments.abtest_report(ab, "d")
    assert report.winner is None
    with pytest.raises(Conflict, match="has no winner yet"):
        admin.deployments.promote(ab, "d")
    assert admin.deployments.get(ab, "d").revision == 1


def test_unknown_duplicate_and_shadow_outcomes_are_counted_not_errors(
    platform: Platform, admin: Client, ab: str
) -> None:
    assign(platform, admin, ab, [("r1", "a"), ("r2", "b"), ("r3", "s")])
    result = admin.deployments.post_outcomes(
        ab, "d", [("r1", 1.0), ("r1", 0.0), ("r2", 0.0), ("r3", 1.0), ("ghost", 1.0)]
    )
    assert (result.recorded, result.unknown, result.duplicate, result.shadow) == (2, 1, 1, 1)
    again = admin.deployments.post_outcomes(ab, "d", {"r2": 1.0})
    assert (again.recorded, again.duplicate) == (0, 1)
    report = admin.deployments.abtest_report(ab, "d")
    assert (report.unknown_outcomes, report.duplicate_outcomes) == (1, 2)
    assert [v.n for v in report.variants] == [1, 1]
    assert report.variants[1].p_value is None and report.variants[1].note  # too few


def test_binary_outcomes_are_0_or_1_and_numeric_tests_take_rewards(
    platform: Platform, admin: Client, ab: str
) -> None:
    assign(platform, admin, ab, [("r1", "a")])
    with pytest.raises(InvalidInput, match=r"an outcome is 0 or 1, not 2\.5") as refused:
        admin.deployments.post_outcomes(ab, "d", {"r1": 2.5})
    assert refused.value.field == "items[0].value"
    admin.deployments.update(ab, "d", abtest={"kind": "numeric", "control": "a"})
    pairs = [(f"n{i}", "a" if i % 2 else "b") for i in range(400)]
    assign(platform, admin, ab, pairs)
    rng = np.random.default_rng(1)
    rewards = {r: float(rng.normal(10 if v == "a" else 12, 2)) for r, v in pairs}
    admin.deployments.post_outcomes(ab, "d", rewards)
    report = admin.deployments.abtest_report(ab, "d")
    assert report.kind == "numeric" and report.winner == "b"
    # The changed test started afresh: the binary outcome of r1 is not in it.
    assert sum(v.n for v in report.variants) == 400


def test_bulk_parquet_upload(platform: Platform, admin: Client, ab: str, tmp_path: Path) -> None:
    pairs, outcomes = traffic(3_000, {"a": 0.1, "b": 0.1}, seed=5)
    assign(platform, admin, ab, pairs)
    path = tmp_path / "outcomes.parquet"
    pq.write_table(
        pa.table(
            {
                "request_id": [*outcomes, "ghost"],
                "value": [*(int(v) for v in outcomes.values()), 1],
                "extra": ["x"] * (len(outcomes) + 1),
            }
        ),
        path,
    )
    result = admin.deployments.upload_outcomes(ab, "d", path)
    assert (result.recorded, result.unknown) == (3_000, 1)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"request_id": ["r"], "score": [1.0]}), bad)
    with pytest.raises(InvalidInput, match="no column value"):
        admin.deployments.upload_outcomes(ab, "d", bad)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InvalidInput, match="not a Parquet file"):
        admin.deployments.upload_outcomes(ab, "d", junk)
    hostile = tmp_path / "hostile.parquet"
    pq.write_table(pa.table({"request_id": ["../../etc"], "value": [1.0]}), hostile)
    with pytest.raises(InvalidInput, match="row 0"):
        admin.deployments.upload_outcomes(ab, "d", hostile)


def test_a_deployment_without_a_test_and_roles(
    platform: Platform,
    admin: Client,
    ab: str,
    member_in: Callable[[str, str], tuple[str, Client]],
) -> None:
    admin.deployments.update(ab, "d", clear_abtest=True)
    with pytest.raises(Conflict, match="runs no A/B test"):
        admin.deployments.post_outcomes(ab, "d", {"r": 1.0})
    with pytest.raises(Conflict, match="runs no A/B test"):
        admin.deployments.abtest_report(ab, "d")
    admin.deployments.update(ab, "d", abtest={"kind": "binary", "control": "a"})
    _, viewer = member_in(ab, "viewer")
    _, member = member_in(ab, "member")
    with pytest.raises(PermissionDenied, match="deployment:invoke is required"):
        viewer.deployments.post_outcomes(ab, "d", {"r": 1.0})
    assert member.deployments.post_outcomes(ab, "d", {"r": 1.0}).unknown == 1
    assert viewer.deployments.abtest_report(ab, "d").winner is None
    with pytest.raises(PermissionDenied, match="deployment:write is required"):
        member.deployments.promote(ab, "d")
    with pytest.raises(InvalidInput, match=r"abtest\.control 'zz' is not a live variant"):
        admin.deployments.update(ab, "d", abtest={"kind": "binary", "control": "zz"})
    with pytest.raises(InvalidInput, match=r"abtest\.control 's' is not a live variant"):
        admin.deployments.update(ab, "d", abtest={"kind": "binary", "control": "s"})
