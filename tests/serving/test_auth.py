"""Invoke tokens: the platform's check route, and the standalone server's cached checks."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ghaf.core.errors import PermissionDenied, Unauthenticated, Unavailable
from ghaf.server.process import free_port
from ghaf.serving.auth import RemoteAuthorizer
from tests.conftest import Platform
from tests.serving.conftest import Registered, bearer

CHECK = "/api/v1/projects/{}/deployments:check-invoke"


def test_the_check_route_answers_who_may_invoke(platform: Platform, registered: Registered) -> None:
    path = platform.url + CHECK.format(registered.project)
    member = httpx.get(path, params={"model": "churn"}, headers=bearer(registered.member))
    assert member.status_code == 200
    grant = member.json()
    assert grant["project"] == registered.project and grant["model"] == "churn"
    assert grant["permission"] == "deployment:invoke" and grant["kind"] == "user"
    viewer = httpx.get(path, headers=bearer(registered.viewer))
    assert viewer.status_code == 403 and "deployment:invoke" in viewer.json()["detail"]
    assert httpx.get(path, headers=bearer(registered.outsider)).status_code == 404
    assert httpx.get(path).status_code == 401
    bad = httpx.get(path, params={"model": "../x"}, headers=bearer(registered.member))
    assert bad.status_code == 422 and bad.json()["field"] == "model"


def test_refused_checks_are_audited(platform: Platform, registered: Registered) -> None:
    admin = platform.client()
    path = platform.url + CHECK.format(registered.project)
    httpx.get(path, params={"model": "forest"}, headers=bearer(registered.viewer))
    denied = [
        e
        for e in admin.audit.list(project=registered.project)
        if e.action == "deployment:invoke" and e.outcome == "denied"
    ]
    assert any(e.resource.endswith("/model/forest") for e in denied)


def test_remote_checks_are_cached_and_asked_once_per_token(
    platform: Platform, registered: Registered
) -> None:
    async def main() -> None:
        authorizer = RemoteAuthorizer(platform.url, registered.project, "churn", ttl_s=60)
        try:
            token = bearer(registered.member)["authorization"]
            grants = await asyncio.gather(
                *(authorizer.authorize(token, client=None) for _ in range(20))
            )
            assert {g.principal for g in grants} == {grants[0].principal}
            assert authorizer.platform_calls == 1  # concurrent checks shared one call
            await authorizer.authorize(token, client=None)
            assert authorizer.platform_calls == 1
            viewer = bearer(registered.viewer)["authorization"]
            for _ in range(3):
                with pytest.raises(PermissionDenied, match="deployment:invoke"):
                    await authorizer.authorize(viewer, client=None)
            assert authorizer.platform_calls == 2  # refusals are remembered too
            outsider = bearer(registered.outsider)["authorization"]
            with pytest.raises(PermissionDenied):
                await authorizer.authorize(outsider, client=None)
            with pytest.raises(Unauthenticated):
                await authorizer.authorize(None, client=None)
            with pytest.raises(Unauthenticated, match="unknown token"):
                await authorizer.authorize("Bearer ghaf_" + "a" * 43, client=None)
            assert authorizer.platform_calls == 4  # no token: refused without asking
        finally:
            await authorizer.aclose()

    asyncio.run(main())


def test_a_revoked_token_is_refused_once_its_check_expires(
    platform: Platform, registered: Registered
) -> None:
    admin = platform.client()
    user, client = platform.new_user()
    admin.members.add(registered.project, principal=user.name, role="member")
    created = client.tokens.create("short")
    token = f"Bearer {created.token}"

    async def main() -> None:
        authorizer = RemoteAuthorizer(platform.url, registered.project, ttl_s=0)
        try:
            assert (await authorizer.authorize(token, client=None)).principal == user.name
            client.tokens.revoke("short")
            with pytest.raises(Unauthenticated, match="revoked"):
                await authorizer.authorize(token, client=None)
        finally:
            await authorizer.aclose()

    asyncio.run(main())


def test_an_unreachable_platform_is_503_and_never_lets_a_request_through() -> None:
    async def main() -> None:
        authorizer = RemoteAuthorizer(f"http://127.0.0.1:{free_port()}", "p", timeout_s=2)
        try:
            for _ in range(2):
                with pytest.raises(Unavailable, match="cannot check the token"):
                    await authorizer.authorize("Bearer ghaf_" + "b" * 43, client=None)
            assert authorizer.platform_calls == 2  # not remembered: asked again
        finally:
            await authorizer.aclose()

    asyncio.run(main())


def test_a_flood_of_made_up_tokens_does_not_evict_good_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ghaf.serving import auth

    monkeypatch.setattr(auth, "MAX_CACHED", 40)
    grant = {"project": "p", "principal": "alice", "kind": "user"}

    def platform(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer good":
            return httpx.Response(200, json=grant)
        return httpx.Response(401, json={"detail": "no such token"})

    async def run() -> int:
        authorizer = RemoteAuthorizer(
            "http://platform",
            "p",
            ttl_s=60,
            refusal_ttl_s=60,
            transport=httpx.MockTransport(platform),
        )
        await authorizer.authorize("Bearer good", client=None)
        for i in range(200):
            with pytest.raises(Unauthenticated):
                await authorizer.authorize(f"Bearer made-up-{i}", client=None)
        assert len(authorizer._answers) <= 40
        asked = authorizer.platform_calls
        await authorizer.authorize("Bearer good", client=None)
        await authorizer.aclose()
        return authorizer.platform_calls - asked

    assert asyncio.run(run()) == 0  # still cached


def test_a_token_that_is_not_printable_ascii_is_refused_without_asking() -> None:
    async def run() -> None:
        authorizer = RemoteAuthorizer(
            "http://platform", "p", transport=httpx.MockTransport(lambda r: httpx.Response(500))
        )
        for header in ("Bearer \xe9t\xe9", "Bearer a\tb"):
            with pytest.raises(Unauthenticated, match="not a bearer token"):
                await authorizer.authorize(header, client=None)
        assert authorizer.platform_calls == 0
        await authorizer.aclose()

    asyncio.run(run())


def test_a_refreshed_grant_counts_as_new_when_the_cache_makes_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ghaf.serving import auth

    monkeypatch.setattr(auth, "MAX_CACHED", 40)
    grant = {"project": "p", "principal": "alice", "kind": "user"}

    async def run() -> int:
        authorizer = RemoteAuthorizer(
            "http://platform",
            "p",
            transport=httpx.MockTransport(lambda request: httpx.Response(200, json=grant)),
        )
        authorizer.ttl_s = 0.0  # the first grant expires at once...
        await authorizer.authorize("Bearer first", client=None)
        authorizer.ttl_s = 60.0
        for i in range(29):
            await authorizer.authorize(f"Bearer other-{i}", client=None)
        await authorizer.authorize("Bearer first", client=None)  # ...and is asked again
        for i in range(29, 40):  # past the limit: the older half of the grants goes
            await authorizer.authorize(f"Bearer other-{i}", client=None)
        asked = authorizer.platform_calls
        # Refreshed after 29 others, it is among the newer half; by first insertion
        # (a reassigned key keeps its place) it was the oldest, and went.
        await authorizer.authorize("Bearer first", client=None)
        await authorizer.aclose()
        return authorizer.platform_calls - asked

    assert asyncio.run(run()) == 0
