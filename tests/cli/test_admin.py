"""``ghaf server`` and ``ghaf admin`` as an operator meets them: a database that does
not exist, a port already taken, the start-up log, the way to the API docs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ghaf.cli.demo import database_kind
from ghaf.cli.main import app
from ghaf.console.output import EXIT_ADDRESS_IN_USE
from ghaf.core.settings import Settings
from ghaf.server.install import initialise
from ghaf.server.process import ServerProcess
from tests.conftest import PG_ADMIN_URL, Platform, _postgres_available, unique

runner = CliRunner()


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GHAF_")}
    return {**env, "GHAF_HOME": str(home), **extra}


@pytest.mark.skipif(_postgres_available() is not None, reason="no PostgreSQL on 127.0.0.1")
def test_admin_init_names_a_database_that_does_not_exist(tmp_path: Path) -> None:
    name = unique("nope_")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    result = runner.invoke(
        app, ["admin", "init"], env={"GHAF_HOME": str(tmp_path), "GHAF_DATABASE_URL": url}
    )
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no traceback
    assert lines[0].startswith(f"error: cannot open the database {url}: ")
    assert f'database "{name}" does not exist' in lines[0]
    assert f"createdb {name}" in lines[0]


def test_admin_init_names_a_database_it_cannot_reach(tmp_path: Path) -> None:
    url = "postgresql+psycopg://ghaf:s3cret-pw@127.0.0.1:9/ghaf"
    result = runner.invoke(
        app,
        ["admin", "init", "--json"],
        env={"GHAF_HOME": str(tmp_path), "GHAF_DATABASE_URL": url},
    )
    assert result.exit_code == 1
    problem = json.loads(result.stderr)
    assert problem["field"] == "database_url"
    assert problem["detail"].startswith(
        "cannot open the database postgresql+psycopg://ghaf:***@127.0.0.1:9/ghaf: "
    )
    assert "s3cret-pw" not in result.output + result.stderr


def test_admin_migrate_names_a_malformed_database_url(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["admin", "migrate"],
        env={"GHAF_HOME": str(tmp_path), "GHAF_DATABASE_URL": "nosuchdb://x/y"},
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: GHAF_DATABASE_URL is not a database URL ghaf can use")
    assert len(result.stderr.splitlines()) == 1


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def test_server_on_a_port_in_use_exits_3_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    initialise(Settings(home=home, master_key=None))
    before = _files(home / "artifacts")
    assert any("witness" in name for name in before), before  # the genesis checkpoint
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ghaf", "server", "--port", str(port)],
            capture_output=True,
            text=True,
            env=_env(home),
            timeout=60,
            check=False,
        )
    finally:
        taken.close()
    assert done.returncode == EXIT_ADDRESS_IN_USE == 3
    assert done.stderr == (
        f"error: cannot listen on 127.0.0.1:{port}: the address is already in use "
        "(another ghaf server?); stop that process or choose another --port / GHAF_PORT "
        "[port]\n"
    )
    assert _files(home / "artifacts") == before  # no audit checkpoint, nothing else


def test_server_help_documents_its_exit_codes() -> None:
    shown = runner.invoke(app, ["server", "--help"], env={"COLUMNS": "100"})
    assert "3 if the address (host and port) is already in use" in " ".join(shown.output.split())


def test_start_up_log_names_the_api_docs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    initialise(Settings(home=home, master_key=None))
    log = tmp_path / "server.log"
    with ServerProcess(env=_env(home), log_path=log) as server:
        docs = f"{server.url}/api/v1/docs"
        assert httpx.get(docs).status_code == 200
    assert f"API docs at {docs}" in log.read_text()


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_root_and_docs_lead_to_the_api_docs_without_a_token(platform: Platform, path: str) -> None:
    answer = httpx.get(platform.url + path)
    assert answer.status_code == 307
    assert answer.headers["location"] == "/api/v1/docs"
    followed = httpx.get(platform.url + path, follow_redirects=True)
    assert followed.status_code == 200 and "swagger" in followed.text.lower()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:////tmp/ghaf.db", "SQLite (WAL)"),
        ("postgresql+psycopg://u:p@127.0.0.1:5432/ghaf", "PostgreSQL"),
        ("postgresql://127.0.0.1/ghaf", "PostgreSQL"),
    ],
)
def test_the_demo_names_the_database_it_runs_on(url: str, kind: str) -> None:
    assert database_kind(url) == kind
