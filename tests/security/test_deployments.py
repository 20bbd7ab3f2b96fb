"""Deployments under attack: hostile names in paths and bodies, another project's models,
damaged and deleted revision rows, huge and concurrent requests. Each gets a clear 4xx
(or, for damage at rest, a 502 saying so), never a 500, and nothing stored changes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from ghaf.client import Client
from ghaf.core.errors import GhafError, IntegrityFailure, InvalidInput, NotFound
from ghaf.security.cache import SecurityCache
from tests.conftest import Platform, TrainedModel, unique

HOSTILE_NAMES = [
    "..",
    "a/b",
    "x\x00y",
    "n" * 200,
    "x'; DROP TABLE deployments;--",
    "ｃhurn",  # noqa: RUF001  # a fullwidth lookalike
    "churn\u200b",  # a zero-width space
]


@pytest.fixture
def deployed(admin: Client, project: str, trained: TrainedModel) -> str:
    """``project`` with model churn v1 and deployment ``d`` serving it."""
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    admin.deployments.create(
        project, "d", variants=[{"name": "a", "model": "churn", "version": 1, "weight": 100}]
    )
    return project


def _headers(platform: Platform) -> dict[str, str]:
    return {"Authorization": f"Bearer {platform.admin_token}"}


@pytest.mark.parametrize("value", HOSTILE_NAMES)
def test_hostile_names_in_bodies_are_refused_naming_the_field(
    admin: Client, deployed: str, value: str
) -> None:
    project = deployed
    attempts = {
        "name": lambda: admin.deployments.create(
            project, value, variants=[{"name": "a", "model": "churn", "version": 1, "weight": 100}]
        ),
        "variant": lambda: admin.deployments.create(
            project, "e", variants=[{"name": value, "model": "churn", "version": 1, "weight": 100}]
        ),
        "model": lambda: admin.deployments.create(
            project, "e", variants=[{"name": "a", "model": value, "version": 1, "weight": 100}]
        ),
        "version": lambda: admin.deployments.create(
            project,
            "e",
            variants=[{"name": "a", "model": "churn", "version": value, "weight": 100}],
        ),
    }
    for where, attempt in attempts.items():
        with pytest.raises((InvalidInput, NotFound)) as refused:
            attempt()
        assert refused.value.field, where
    assert [d.name for d in admin.deployments.list(project)] == ["d"]


@pytest.mark.parametrize(
    "segment",
    ["..%2F..%2Fetc", "%2e%2e", "%FF%FE", "%00", "%C0%AE%C0%AE", "x" * 300],
)
def test_hostile_path_segments_get_a_clear_4xx(
    platform: Platform, deployed: str, segment: str
) -> None:
    base = f"{platform.url}/api/v1/projects/{deployed}/deployments/{segment}"
    for method, url, body in (
        ("GET", base, None),
        ("PATCH", base, {"reason": "x"}),
        ("DELETE", base, None),
        ("GET", base + "/revisions", None),
        ("POST", base + ":rollback", {"revision": 1}),
    ):
        response = httpx.request(method, url, json=body, headers=_headers(platform))
        assert 400 <= response.status_code < 500, (method, url, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    listed = httpx.get(
        f"{platform.url}/api/v1/projects/{deployed}/deployments", headers=_headers(platform)
    )
    assert [d["name"] for d in listed.json()["items"]] == ["d"]


@pytest.mark.parametrize("revision", ["0", "-1", "abc", "99999999999999999999", "1.5"])
def test_bad_revision_numbers(platform: Platform, deployed: str, revision: str) -> None:
    url = f"{platform.url}/api/v1/projects/{deployed}/deployments/d/revisions/{revision}"
    response = httpx.get(url, headers=_headers(platform))
    assert response.status_code == 422, response.text
    rollback = httpx.post(
        f"{platform.url}/api/v1/projects/{deployed}/deployments/d:rollback",
        json={"revision": revision},
        headers=_headers(platform),
    )
    assert rollback.status_code == 422, rollback.text


def test_another_projects_model_cannot_be_deployed(
    admin: Client,
    deployed: str,
    trained: TrainedModel,
    member_in: Callable[[str, str], tuple[str, Client]],
) -> None:
    # An attacker maintains a project of their own and names the victim's model in it.
    attacker_project = admin.projects.create(unique("attacker")).name
    _, attacker = member_in(attacker_project, "maintainer")
    with pytest.raises(NotFound) as refused:
        attacker.deployments.create(
            attacker_project,
            "steal",
            variants=[{"name": "a", "model": "churn", "version": 1, "weight": 100}],
        )
    assert deployed not in refused.value.detail
    # And the victim's deployment is invisible to them, exactly as a missing one.
    for attempt in (
        lambda: attacker.deployments.get(deployed, "d"),
        lambda: attacker.deployments.rollback(deployed, "d", 1),
        lambda: attacker.deployments.get(deployed, "nope"),
    ):
        with pytest.raises(NotFound, match=f"project '{deployed}' not found"):
            attempt()


def test_too_many_variants_and_long_reasons_are_refused(admin: Client, deployed: str) -> None:
    many = [
        {"name": f"v{i}", "model": "churn", "version": 1, "weight": 100 / 17} for i in range(17)
    ]
    with pytest.raises(InvalidInput, match="variants"):
        admin.deployments.create(deployed, "e", variants=many)
    with pytest.raises(InvalidInput, match="reason"):
        admin.deployments.update(deployed, "d", reason="x" * 401)
    with pytest.raises(InvalidInput, match="sticky"):
        admin.request(
            "PATCH",
            f"/api/v1/projects/{deployed}/deployments/d",
            json={"sticky": {"header": "bad header\r\nx: y"}},
        )
    assert admin.deployments.get(deployed, "d").revision == 1


TAMPERED = {
    "spec is a number": ("spec", "'5'"),
    "spec variants are not a list": ("spec", "'{\"variants\": 3}'"),
    "resolved names another variant": (
        "resolved",
        '\'{"zz": {"model": "churn", "version": 1, "sha256": "x"}}\'',
    ),
    "resolved version is text": (
        "resolved",
        '\'{"a": {"model": "churn", "version": "one", "sha256": "x"}}\'',
    ),
}


@pytest.mark.parametrize("change", sorted(TAMPERED))
def test_a_damaged_revision_row_is_a_clear_502_and_left_as_it_was(
    platform: Platform,
    admin: Client,
    deployed: str,
    change: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    column, value = TAMPERED[change]
    where = (
        "deployment_id = (SELECT id FROM deployments WHERE name = 'd' AND project_id = "
        "(SELECT id FROM projects WHERE name = :p))"
    )
    with platform.runtime.database.engine.begin() as connection:
        connection.execute(
            text(f"UPDATE deployment_revisions SET {column} = {value} WHERE {where}"),
            {"p": deployed},
        )
    monkeypatch.setattr(platform.runtime, "cache", SecurityCache())
    base = f"{platform.url}/api/v1/projects/{deployed}/deployments"
    for method, url, body in (
        ("GET", f"{base}/d", None),
        ("GET", base, None),
        ("GET", f"{base}/d/revisions", None),
        ("PATCH", f"{base}/d", {"reason": "touch"}),
        ("POST", f"{base}/d:rollback", {"revision": 1}),
    ):
        response = httpx.request(method, url, json=body, headers=_headers(platform))
        assert response.status_code == 502, (method, url, response.text)
        assert "damaged" in response.json()["detail"]
    with platform.runtime.database.engine.connect() as connection:
        stored = connection.execute(
            text(f"SELECT CAST({column} AS TEXT) FROM deployment_revisions WHERE {where}"),
            {"p": deployed},
        ).scalar_one()
    assert stored.replace(" ", "") == value.strip("'").replace(" ", "")
    # The alias listener and the registry's retire check meet the damage too: refused
    # clearly, and the registry's own write is rolled back with it.
    with pytest.raises(IntegrityFailure):
        admin.models.set_alias(deployed, "churn", "champion", 1)
    assert "champion" not in admin.models.get(deployed, "churn").aliases


def test_a_deleted_current_revision_is_reported_not_guessed(
    platform: Platform, admin: Client, deployed: str
) -> None:
    admin.deployments.update(deployed, "d", reason="second")
    with platform.runtime.database.engine.begin() as connection:
        connection.execute(
            text(
                "DELETE FROM deployment_revisions WHERE revision = 2 AND deployment_id = "
                "(SELECT id FROM deployments WHERE name = 'd' AND project_id = "
                "(SELECT id FROM projects WHERE name = :p))"
            ),
            {"p": deployed},
        )
    with pytest.raises(IntegrityFailure, match="revision 2, which is missing"):
        admin.deployments.get(deployed, "d")
    # The way out the message names works: roll back to a revision that exists.
    assert admin.deployments.rollback(deployed, "d", 1).revision == 3
    assert admin.deployments.get(deployed, "d").revision == 3


def test_concurrent_changes_get_distinct_revisions_or_a_clear_409(
    admin: Client, deployed: str
) -> None:
    outcomes: list[object] = []

    def change(i: int) -> None:
        try:
            outcomes.append(admin.deployments.update(deployed, "d", reason=f"writer {i}").revision)
        except GhafError as error:
            outcomes.append(error)

    threads = [threading.Thread(target=change, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    revisions = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, GhafError)]
    assert all(e.status == 409 and "changed meanwhile" in e.detail for e in refused), refused
    assert len(set(revisions)) == len(revisions)
    history = admin.deployments.revisions(deployed, "d")
    assert [r.revision for r in history] == list(range(len(revisions) + 1, 0, -1))
    assert admin.deployments.get(deployed, "d").revision == len(revisions) + 1


def _predict(platform: Platform, project: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{platform.url}/api/v1/projects/{project}/deployments/d/predict",
        json=body,
        headers={**_headers(platform), **headers},
        timeout=60,
    )


def test_the_gateway_leaves_no_decrypted_model_on_disk_and_no_key_in_answers(
    platform: Platform, deployed: str, trained: TrainedModel
) -> None:
    answer = _predict(platform, deployed, trained.X[:1].tolist())
    assert answer.status_code == 200, answer.text
    bundles = platform.settings.home / "deployments" / "bundles"
    assert oct(bundles.stat().st_mode & 0o777) == "0o700"
    assert list(bundles.iterdir()) == []  # the bundle went once the replica loaded it
    assert "authorization" not in {k.lower() for k in answer.headers}
    assert "bearer" not in answer.text.lower()


@pytest.mark.parametrize(
    "variant",
    ["../a", "a\x7f", "%2e%2e", "a" * 5000, "ａ"],  # noqa: RUF001 - a lookalike
)
def test_hostile_forced_variants_are_a_clear_404(
    platform: Platform, deployed: str, trained: TrainedModel, variant: str
) -> None:
    try:
        answer = _predict(platform, deployed, trained.X[:1].tolist(), **{"x-ghaf-variant": variant})
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # not even sendable as a header value
    assert answer.status_code in (400, 404, 431), answer.text
    if answer.headers["content-type"].startswith("text/plain"):  # the HTTP parser's own
        assert (answer.status_code, answer.text) == (400, "Invalid HTTP request received.")
    else:
        assert answer.headers["content-type"].startswith("application/problem+json")


def test_bodies_the_replica_refuses_are_passed_on_not_500s(
    platform: Platform, deployed: str
) -> None:
    for body in ({"records": [{"nope": 1}]}, [[1.0]], {"columns": {}}, "text"):
        answer = _predict(platform, deployed, body)
        assert answer.status_code == 400, (body, answer.text)
    raw = httpx.post(
        f"{platform.url}/api/v1/projects/{deployed}/deployments/d/predict",
        content=b"\xff\xfe{not json",
        headers={**_headers(platform), "content-type": "application/json"},
        timeout=60,
    )
    assert raw.status_code == 400, raw.text


def test_a_body_past_the_limit_never_reaches_a_replica(
    platform: Platform, deployed: str, trained: TrainedModel
) -> None:
    assert _predict(platform, deployed, trained.X[:1].tolist()).status_code == 200
    gateway = platform.runtime.backends["deployments"]
    before = set(gateway.fleet.replicas())  # type: ignore[attr-defined]
    huge = b"[" + b"1.0," * (platform.settings.deployment_max_body_bytes // 4 + 10) + b"1.0]"
    answer = httpx.post(
        f"{platform.url}/api/v1/projects/{deployed}/deployments/d/predict",
        content=huge,
        headers={**_headers(platform), "content-type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 413, answer.text[:200]
    assert "GHAF_DEPLOYMENT_MAX_BODY_BYTES" in answer.json()["detail"]
    # The replica was never sent it, and serves on.
    assert set(gateway.fleet.replicas()) == before  # type: ignore[attr-defined]
    assert _predict(platform, deployed, trained.X[:1].tolist()).status_code == 200


def test_outcomes_are_keyed_by_an_id_only_the_answer_carries(
    platform: Platform, admin: Client, deployed: str, trained: TrainedModel
) -> None:
    admin.deployments.update(deployed, "d", abtest={"kind": "binary", "control": "a"})
    # An attacker names the request id (X-Request-ID) a victim's request will carry...
    chosen = "claimed-by-attacker"
    answer = _predict(platform, deployed, trained.X[:1].tolist(), **{"x-request-id": chosen})
    assert answer.status_code == 200
    outcome_id = answer.headers["x-ghaf-outcome-id"]
    assert outcome_id != chosen and len(outcome_id) >= 20
    time.sleep(1.2)  # the gateway writes assignments twice a second
    # ...but outcomes are credited only under the answer's own random id.
    guessed = admin.deployments.post_outcomes(deployed, "d", {chosen: 1.0})
    assert (guessed.recorded, guessed.unknown) == (0, 1)
    assert admin.deployments.post_outcomes(deployed, "d", {outcome_id: 1.0}).recorded == 1


def test_a_negative_version_is_refused_naming_it(admin: Client, deployed: str) -> None:
    with pytest.raises(InvalidInput, match="versions start at 1"):
        admin.deployments.create(
            deployed,
            "neg",
            variants=[{"name": "a", "model": "churn", "version": -1, "weight": 100}],
        )


@pytest.mark.parametrize("attack", ["long ids by dictionary", "long ids plain", "twice"])
def test_hostile_parquet_uploads_are_refused_before_they_cost_memory(
    admin: Client, deployed: str, tmp_path: Path, attack: str
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    admin.deployments.update(deployed, "d", abtest={"kind": "binary", "control": "a"})
    path = tmp_path / "hostile.parquet"
    rows = 100_000
    if attack == "long ids by dictionary":
        ids = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), ["x" * 2000])
        pq.write_table(pa.table({"request_id": ids, "value": [1.0] * rows}), path,
                       compression="zstd")  # fmt: skip
        expected = "ids have at most 64"
    elif attack == "long ids plain":
        pq.write_table(pa.table({"request_id": ["y" * 500] * 1000, "value": [1.0] * 1000}), path)
        expected = "ids have at most 64"
    else:
        table = pa.Table.from_arrays(
            [pa.array(["r"]), pa.array([1.0]), pa.array(["s"])],
            names=["request_id", "value", "request_id"],
        )
        pq.write_table(table, path)
        expected = "2 columns named request_id"
    assert path.stat().st_size < 100_000  # a small upload...
    with pytest.raises(InvalidInput, match=expected):  # ...refused before it is decoded
        admin.deployments.upload_outcomes(deployed, "d", path)
