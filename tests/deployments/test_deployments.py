"""Deployments: create, change, history, rollback and removal, each a numbered audited
revision; production takes only released versions; variants follow their aliases."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from ghaf.client import Client
from ghaf.core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tests.conftest import Platform, TrainedModel, audited


def _register(client: Client, project: str, trained: TrainedModel, name: str = "churn") -> int:
    return client.models.register(project, name, path=trained.path, sample=trained.X[:5]).version


def variant(name: str, version: str | int, weight: float = 0, **extra: object) -> dict:
    return {"name": name, "model": "churn", "version": version, "weight": weight, **extra}


@pytest.fixture
def two_versions(admin: Client, project: str, trained: TrainedModel) -> str:
    """``project`` with churn v1 (alias champion) and v2 (alias challenger)."""
    _register(admin, project, trained)
    _register(admin, project, trained)
    admin.models.set_alias(project, "churn", "champion", 1)
    admin.models.set_alias(project, "churn", "challenger", 2)
    return project


def test_create_show_list_and_audit(admin: Client, two_versions: str) -> None:
    project = two_versions
    out = admin.deployments.create(
        project,
        "churn-api",
        variants=[variant("a", "@champion", 50), variant("b", 2, 50), variant("s", 1, shadow=True)],
        sticky={"header": "x-user-id"},
        description="churn scoring",
    )
    assert out.revision == 1 and not out.production
    assert {k: (v.version, v.follows) for k, v in out.resolved.items()} == {
        "a": (1, "champion"),
        "b": (2, None),
        "s": (1, None),
    }
    assert out.spec["sticky"] == {"header": "x-user-id", "field": None}
    assert out.spec["variants"][0]["runtime"]["max_batch_size"] == 64  # defaults filled in
    assert admin.deployments.get(project, "churn-api") == out
    assert [d.name for d in admin.deployments.list(project)] == ["churn-api"]
    (event,) = audited(admin, project, "deployment:create")
    assert event.detail["serves"] == ["a=churn:1", "b=churn:2", "s=churn:1"]


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([variant("a", 1, 60), variant("b", 2, 30)], "must sum to 100, not 90 (a=60, b=30)"),
        ([variant("a", 1, 100), variant("a", 2, 0)], "repeated: a"),
        ([variant("a", 1, 100), variant("s", 2, 10, shadow=True)], "weight must be 0"),
        ([variant("s", 1, shadow=True)], "at least one variant must take live traffic"),
        ([variant("a", 1, 101)], "less than or equal to 100"),
        ([variant("a/..", 1, 100)], "variants.0.name: must not contain '/'"),
    ],
)
def test_bad_specs_are_refused_naming_the_problem(
    admin: Client, two_versions: str, variants: list[dict], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        admin.deployments.create(two_versions, "bad", variants=variants)
    assert admin.deployments.list(two_versions) == []


def test_versions_a_deployment_cannot_serve(
    admin: Client, two_versions: str, reviewer: tuple[str, Client]
) -> None:
    project = two_versions
    _, maintainer = reviewer
    admin.models.delete_alias(project, "churn", "challenger")
    maintainer.models.reject(project, "churn", 2, comment="leaks the label")
    with pytest.raises(Conflict, match="version 2 of 'churn' is rejected") as refused:
        admin.deployments.create(project, "d", variants=[variant("a", 1, 50), variant("b", 2, 50)])
    assert refused.value.field == "variants[1].version"
    with pytest.raises(NotFound, match="no version 9"):
        admin.deployments.create(project, "d", variants=[variant("a", 9, 100)])
    with pytest.raises(NotFound, match="no model 'nope'"):
        admin.deployments.create(
            project, "d", variants=[{"name": "a", "model": "nope", "version": 1, "weight": 100}]
        )


def test_names_are_unique_per_project(admin: Client, two_versions: str) -> None:
    admin.deployments.create(two_versions, "d", variants=[variant("a", 1, 100)])
    with pytest.raises(Conflict, match="deployment 'd' already exists"):
        admin.deployments.create(two_versions, "d", variants=[variant("a", 2, 100)])
    assert admin.deployments.get(two_versions, "d").resolved["a"].version == 1


def test_update_history_and_rollback(admin: Client, two_versions: str) -> None:
    project = two_versions
    admin.deployments.create(project, "d", variants=[variant("a", 1, 100)])
    two = admin.deployments.update(
        project, "d", variants=[variant("a", 1, 80), variant("b", 2, 20)], reason="canary b"
    )
    assert two.revision == 2 and two.resolved["b"].version == 2
    sticky = admin.deployments.update(project, "d", sticky={"field": "user"})
    assert sticky.revision == 3 and len(sticky.spec["variants"]) == 2  # the rest kept
    back = admin.deployments.rollback(project, "d", 1)
    assert back.revision == 4
    assert list(back.resolved) == ["a"] and back.spec["sticky"] is None
    history = admin.deployments.revisions(project, "d")
    assert [(r.revision, r.reason) for r in history] == [
        (4, "rolled back to revision 1"),
        (3, "updated"),
        (2, "canary b"),
        (1, "created"),
    ]
    assert admin.deployments.revision(project, "d", 2).resolved["b"].version == 2
    with pytest.raises(NotFound, match="no revision 99 \\(it has 1 to 4\\)"):
        admin.deployments.rollback(project, "d", 99)
    assert admin.deployments.get(project, "d").revision == 4
    (event,) = audited(admin, project, "deployment:rollback")
    assert event.detail["to"] == 1 and event.detail["revision"] == 4


def test_rollback_refuses_a_version_rejected_since(
    admin: Client, two_versions: str, reviewer: tuple[str, Client]
) -> None:
    project = two_versions
    admin.deployments.create(project, "d", variants=[variant("a", 2, 100)])
    admin.deployments.update(project, "d", variants=[variant("a", 1, 100)])
    _, maintainer = reviewer
    admin.models.delete_alias(project, "churn", "challenger")
    maintainer.models.reject(project, "churn", 2, comment="drifted")
    with pytest.raises(Conflict, match="version 2 of 'churn' is rejected"):
        admin.deployments.rollback(project, "d", 1)
    assert admin.deployments.get(project, "d").revision == 2


def test_production_takes_only_released_versions(
    admin: Client, two_versions: str, reviewer: tuple[str, Client]
) -> None:
    project = two_versions
    with pytest.raises(Conflict, match="in production: version 1 of 'churn' is pending"):
        admin.deployments.create(project, "prod", variants=[variant("a", 1, 100)], production=True)
    _, maintainer = reviewer
    maintainer.models.approve(project, "churn", 1)
    out = admin.deployments.create(
        project, "prod", variants=[variant("a", 1, 100)], production=True
    )
    assert out.production
    with pytest.raises(Conflict, match="version 2 of 'churn' is pending"):
        admin.deployments.update(project, "prod", variants=[variant("a", 2, 100)])
    staging = admin.deployments.create(project, "staging", variants=[variant("a", 2, 100)])
    with pytest.raises(Conflict, match="version 2 of 'churn' is pending"):
        admin.deployments.update(project, staging.name, production=True)


def test_production_follows_the_policys_gates(
    admin: Client, two_versions: str, reviewer: tuple[str, Client]
) -> None:
    project = two_versions
    _, maintainer = reviewer
    maintainer.models.approve(project, "churn", 1)
    admin.models.set_policy(project, "gates:\n  - signature: required\n")
    with pytest.raises(Conflict, match=r"needs passing quality gates.*no passing gate check"):
        admin.deployments.create(project, "prod", variants=[variant("a", 1, 100)], production=True)
    assert admin.models.check_gates(project, "churn", 1).passed
    assert admin.deployments.create(
        project, "prod", variants=[variant("a", 1, 100)], production=True
    ).production


def test_an_alias_move_rolls_the_deployments_that_follow_it(
    admin: Client, two_versions: str, trained: TrainedModel
) -> None:
    project = two_versions
    admin.deployments.create(
        project, "d", variants=[variant("a", "champion", 90), variant("b", 2, 10)]
    )
    admin.deployments.create(project, "pinned", variants=[variant("a", 1, 100)])
    admin.models.set_alias(project, "churn", "champion", 2)
    rolled = admin.deployments.get(project, "d")
    assert rolled.revision == 2 and rolled.resolved["a"].version == 2
    assert rolled.resolved["a"].follows == "champion"
    assert admin.deployments.revisions(project, "d")[0].reason == (
        "alias churn@champion moved to version 2"
    )
    assert admin.deployments.get(project, "pinned").revision == 1
    (event,) = audited(admin, project, "deployment:roll")
    assert event.detail == {
        "revision": 2,
        "alias": "churn@champion",
        "from": ["a=churn:1"],
        "to": 2,
    }
    admin.models.set_alias(project, "churn", "champion", 2)  # no move, no revision
    assert admin.deployments.get(project, "d").revision == 2
    # The challenger alias is followed by nobody: moving it changes no deployment.
    _register(admin, project, trained)
    admin.models.set_alias(project, "churn", "challenger", 3)
    assert admin.deployments.get(project, "d").revision == 2


def test_a_production_deployment_refuses_an_alias_move_it_cannot_take(
    admin: Client, two_versions: str, reviewer: tuple[str, Client]
) -> None:
    project = two_versions
    _, maintainer = reviewer
    maintainer.models.approve(project, "churn", 1)
    admin.deployments.create(
        project, "prod", variants=[variant("a", "@champion", 100)], production=True
    )
    with pytest.raises(Conflict, match="deployment 'prod' follows churn@champion") as refused:
        admin.models.set_alias(project, "churn", "champion", 2)
    assert "version 2 of 'churn' is pending" in refused.value.detail
    assert admin.models.get(project, "churn").aliases["champion"] == 1  # not moved
    assert admin.deployments.get(project, "prod").revision == 1
    maintainer.models.approve(project, "churn", 2)
    admin.models.set_alias(project, "churn", "champion", 2)
    assert admin.deployments.get(project, "prod").resolved["a"].version == 2


def test_roles(
    admin: Client, two_versions: str, member_in: Callable[[str, str], tuple[str, Client]]
) -> None:
    project = two_versions
    admin.deployments.create(project, "d", variants=[variant("a", 1, 100)])
    _, viewer = member_in(project, "viewer")
    _, member = member_in(project, "member")
    _, maintainer = member_in(project, "maintainer")
    assert viewer.deployments.get(project, "d").revision == 1
    assert [r.revision for r in viewer.deployments.revisions(project, "d")] == [1]
    for client in (viewer, member):
        with pytest.raises(PermissionDenied, match="deployment:write is required"):
            client.deployments.create(project, "e", variants=[variant("a", 1, 100)])
        with pytest.raises(PermissionDenied, match="deployment:write is required"):
            client.deployments.rollback(project, "d", 1)
        with pytest.raises(PermissionDenied, match="deployment:write is required"):
            client.deployments.delete(project, "d")
    assert maintainer.deployments.update(project, "d", reason="by a maintainer").revision == 2
    denied = [e for e in audited(admin, project, "deployment:write") if e.outcome == "denied"]
    assert len(denied) == 6  # three refusals each for the viewer and the member


def test_delete_and_paging(admin: Client, two_versions: str) -> None:
    project = two_versions
    for name in ("d1", "d2", "d3"):
        admin.deployments.create(project, name, variants=[variant("a", 1, 100)])
    first = admin.deployments.page(project, page_size=2)
    assert [d.name for d in first.items] == ["d1", "d2"] and first.next_cursor
    rest = admin.deployments.page(project, page_size=2, cursor=first.next_cursor)
    assert [d.name for d in rest.items] == ["d3"] and rest.next_cursor is None
    for _ in range(2):
        admin.deployments.update(project, "d1")
    page = admin.deployments.revisions_page(project, "d1", page_size=2)
    assert [r.revision for r in page.items] == [3, 2]
    admin.deployments.delete(project, "d2")
    with pytest.raises(NotFound, match="no deployment 'd2'"):
        admin.deployments.get(project, "d2")
    assert audited(admin, project, "deployment:delete")[-1].detail == {"revision": 1}
    # The name is free again.
    assert admin.deployments.create(project, "d2", variants=[variant("a", 2, 100)]).revision == 1


def test_a_served_version_cannot_be_retired(
    admin: Client, two_versions: str, reviewer: tuple[str, Client]
) -> None:
    project = two_versions
    admin.deployments.create(project, "d", variants=[variant("a", 1, 50), variant("b", 2, 50)])
    admin.models.delete_alias(project, "churn", "challenger")
    _, maintainer = reviewer
    with pytest.raises(
        Conflict, match="deployment 'd' serves version 2 of 'churn' \\(variant 'b'\\)"
    ):
        maintainer.models.reject(project, "churn", 2, comment="drifted")
    with pytest.raises(Conflict, match="so it cannot be archived"):
        admin.models.update(project, "churn", 2, archive=True)
    admin.models.delete_alias(project, "churn", "champion")
    with pytest.raises(Conflict, match=r"deployment 'd' serves 'churn'.*cannot be deleted"):
        admin.models.delete(project, "churn")
    assert admin.models.version(project, "churn", 2).status == "pending"
    admin.deployments.update(project, "d", variants=[variant("a", 1, 100)])
    assert maintainer.models.reject(project, "churn", 2, comment="drifted").status == "rejected"
    admin.deployments.delete(project, "d")
    admin.models.delete(project, "churn")


def test_a_gpu_variant_is_refused_where_there_is_no_gpu_unless_cpu_is_allowed(
    platform: Platform,
    admin: Client,
    project: str,
    trained: TrainedModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ghaf.serving import runtime

    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    monkeypatch.setattr(runtime, "available_providers", lambda: ("CPUExecutionProvider",))
    gpu = {"name": "g", "model": "churn", "version": 1, "weight": 100}
    for wanting in ({"runtime": {"device": "gpu"}}, {"resources": {"gpus": 1}}):
        with pytest.raises(InvalidInput, match=r"asks for a GPU.*allow_cpu_fallback") as info:
            admin.deployments.create(project, "gpu", variants=[{**gpu, **wanting}])
        assert info.value.field == "variants[0].runtime.device"
    allowed = {**gpu, "runtime": {"device": "gpu", "allow_cpu_fallback": True}}
    admin.deployments.create(project, "gpu", variants=[allowed])
    answer = admin.deployments.predict(project, "gpu", trained.X[:2].tolist())
    assert answer.variant == "g" and len(answer.predictions) == 2  # on the CPU

    # A revision written where a GPU was, served where none is: refused at the start,
    # with what to do, instead of a replica that starts only to exit.
    monkeypatch.setattr(
        runtime, "available_providers", lambda: ("CUDAExecutionProvider", "CPUExecutionProvider")
    )
    admin.deployments.create(project, "gpu2", variants=[{**gpu, "runtime": {"device": "gpu"}}])
    monkeypatch.setattr(runtime, "available_providers", lambda: ("CPUExecutionProvider",))
    refused = httpx.post(
        f"{platform.url}/api/v1/projects/{project}/deployments/gpu2/predict",
        json=trained.X[:2].tolist(),
        headers={"authorization": f"Bearer {platform.admin_token}"},
        timeout=60,
    )
    assert refused.status_code == 503, refused.text
    assert "asks for a GPU, but this server has none" in refused.json()["detail"]
    assert refused.json()["request_id"]
