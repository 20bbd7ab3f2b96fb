"""Two server processes appending to one database still produce one valid chain."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ghaf.client import Client
from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess
from tests.conftest import Databases, unique

WRITES_PER_CLIENT = 25


def test_two_processes_append_concurrently(databases: Databases, tmp_path: Path) -> None:
    home, url = tmp_path / "home", databases.new_url()
    result = initialise(
        Settings(home=home, database_url=url, master_key=None, audit_checkpoint_every=7)
    )
    assert result.token is not None
    token = result.token.token
    env = {"GHAF_HOME": str(home), "GHAF_DATABASE_URL": url, "GHAF_AUDIT_CHECKPOINT_EVERY": "7"}
    with (
        ServerProcess(env=env, log_path=tmp_path / "a.log") as a,
        ServerProcess(env=env, log_path=tmp_path / "b.log") as b,
    ):

        def hammer(server_url: str) -> int:
            with Client(url=server_url, token=token) as client:
                for _ in range(WRITES_PER_CLIENT):
                    client.projects.create(unique("c"))
            return WRITES_PER_CLIENT

        with ThreadPoolExecutor(4) as pool:
            done = sum(pool.map(hammer, [a.url, b.url, a.url, b.url]))
        with Client(url=a.url, token=token) as client:
            report = client.audit.verify()
            assert report.ok, report.problem
            assert report.rows == done + 2  # + bootstrap user and token
            seqs = [e.seq for e in client.audit.list()]
            assert seqs == list(range(1, len(seqs) + 1))
