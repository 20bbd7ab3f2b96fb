"""Runs against a server process that goes away: spooling and sync, a killed training
process, and heartbeats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ghaf
from ghaf.client import Client, spool
from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess, free_port
from tests.conftest import Databases, unique

HEARTBEAT_TIMEOUT_S = 2


@dataclass
class Live:
    env: dict[str, str]
    port: int
    token: str
    log: Path
    process: ServerProcess

    @property
    def url(self) -> str:
        return self.process.url

    def start(self) -> None:
        self.process = ServerProcess(env=self.env, port=self.port, log_path=self.log).start()

    def client(self) -> Client:
        return Client(url=self.url, token=self.token)


@pytest.fixture(scope="module")
def live(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("tracking-home")
    url = databases.new_url()
    result = initialise(Settings(home=home, database_url=url, master_key=None))
    assert result.token is not None
    env = {
        "GHAF_HOME": str(home),
        "GHAF_DATABASE_URL": url,
        "GHAF_RUN_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
    }
    port = free_port()
    server = Live(env, port, result.token.token, home / "server.log", ServerProcess())
    server.start()
    yield server
    server.process.stop()


def _wait_for(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_an_unreachable_server_spools_and_sync_sends_it_later(
    live: Live, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GHAF_CACHE", str(tmp_path / "cache"))
    with live.client() as client:
        project = client.projects.create(unique("p")).name
    live.process.stop()
    try:
        with (
            live.client() as offline,
            ghaf.start_run("offline", project=project, client=offline) as run,
        ):
            run.log_params({"lr": 0.01})
            for i in range(2500):
                run.log_metric("loss", float(i))
            run.log_metric("nan", float("nan"))
    finally:
        live.start()
    assert spool.pending() == [spool.spool_dir() / f"{run.id}.spool"]
    with live.client() as client:
        report = client.runs.sync()
        assert report.sent == [run.id] and report.failed == {}
        assert report.points == 2501
        found = client.runs.get(project, run.id)
        assert found.status == "finished" and found.params == {"lr": "0.01"}
        assert len(client.runs.history(project, run.id, "loss")) == 2500
        # Sending again is a no-op: the spool is gone.
        assert client.runs.sync().sent == []
    assert spool.pending() == []


def test_a_killed_process_leaves_a_failed_run_with_its_flushed_points(
    live: Live, tmp_path: Path
) -> None:
    with live.client() as client:
        project = client.projects.create(unique("p")).name
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import time, ghaf
            run = ghaf.start_run("crash", flush_interval=60)
            for i in range(1000):
                run.log_metric("loss", float(i))
            run.flush()
            print(run.id, flush=True)
            for i in range(1000, 2000):
                run.log_metric("loss", float(i))
            time.sleep(120)
            """
        )
    )
    env = {
        **os.environ,
        "GHAF_URL": live.url,
        "GHAF_TOKEN": live.token,
        "GHAF_PROJECT": project,
        "GHAF_CACHE": str(tmp_path / "cache"),
    }
    child = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        with live.client() as client:
            assert client.runs.get(project, run_id).status == "running"
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            failed = _wait_for(lambda: client.runs.get(project, run_id).status == "failed")
            found = client.runs.get(project, run_id)
            assert failed, found
            assert found.status_reason is not None and "heartbeat lost" in found.status_reason
            points = client.runs.history(project, run_id, "loss")
            assert list(points["value"][:1000]) == [float(i) for i in range(1000)]
    finally:
        child.kill()


def test_heartbeats_keep_a_quiet_run_alive_and_a_lost_one_revives(live: Live) -> None:
    with live.client() as client:
        project = client.projects.create(unique("p")).name
        with ghaf.start_run("quiet", project=project, client=client, flush_interval=0.2) as run:
            time.sleep(HEARTBEAT_TIMEOUT_S * 2)  # nothing logged: heartbeats only
            assert client.runs.get(project, run.id).status == "running"
            run.log_metric("late", 1.0)
        assert client.runs.get(project, run.id).status == "finished"
        # A run created without a sender fails once its heartbeat is overdue...
        bare = client.runs.create(project, "quiet")
        assert _wait_for(lambda: client.runs.get(project, bare.id).status == "failed")
        # ...and revives when its client turns out to be alive.
        from ghaf.tracking.batches import LogBatch

        client.runs.log(project, bare.id, LogBatch(params={"a": "1"}))
        revived = client.runs.get(project, bare.id)
        assert revived.status == "running" and revived.status_reason is None
        actions = [e.action for e in client.audit.list(project=project)]
        assert "run:expire" in actions
