"""The read-path security cache never outlives a change, in this process or another."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghaf.client import Client
from ghaf.core.errors import NotFound, Unauthenticated
from ghaf.core.settings import Settings
from ghaf.security.cache import CachedToken, SecurityCache
from ghaf.security.context import Caller
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess
from tests.conftest import Databases, unique

CALLER = Caller("id", "alice", "user", False)


def test_entries_belong_to_one_epoch() -> None:
    cache = SecurityCache()
    cache.put_token(5, "h", CachedToken(CALLER, None))
    assert cache.token(5, "h") is not None
    assert cache.token(6, "h") is None  # a newer epoch drops everything
    cache.put_token(5, "h", CachedToken(CALLER, None))  # a late writer of an older epoch
    assert cache.token(5, "h") is None and cache.token(6, "h") is None


def test_changes_in_one_process_reach_the_next_request_in_another(
    databases: Databases, tmp_path: Path
) -> None:
    home, url = tmp_path / "home", databases.new_url()
    created = initialise(Settings(home=home, database_url=url, master_key=None)).token
    assert created is not None
    env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": url}
    with ServerProcess(env=env) as a, ServerProcess(env=env) as b:
        admin_a = Client(url=a.url, token=created.token)
        admin_b = Client(url=b.url, token=created.token)
        project = admin_b.projects.create(unique("p")).name
        admin_b.users.create("bob")
        admin_b.members.add(project, principal="bob", role="viewer")
        bob_token = admin_b.users.create_token("bob", token_name="t").token
        bob_a = Client(url=a.url, token=bob_token)
        for _ in range(3):  # warm server A's cache
            assert bob_a.projects.get(project).role == "viewer"
        admin_b.members.remove(project, "bob")
        with pytest.raises(NotFound):
            bob_a.projects.get(project)
        admin_b.members.add(project, principal="bob", role="member")
        assert bob_a.projects.get(project).role == "member"
        admin_b.users.create_token("bob", token_name="t2")
        bob_b = Client(url=b.url, token=bob_token)
        bob_b.tokens.revoke("t")
        with pytest.raises(Unauthenticated, match="revoked"):
            bob_a.projects.get(project)
        assert admin_a.audit.verify().ok
        for client in (admin_a, admin_b, bob_a, bob_b):
            client.close()
