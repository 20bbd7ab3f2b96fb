"""Schemathesis against a live server: the OpenAPI document is a contract the server keeps.

Every operation of ``/api/v1/openapi.json`` is fuzzed in all of schemathesis's phases
(explicit examples, coverage of boundary and invalid values, random fuzzing, and stateful
sequences that follow the document's links), valid and invalid data alike, with the
checks ``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance``
and ``response_schema_conformance`` (error responses included): any failure fails the
test with schemathesis's report, including a ``curl`` line to reproduce it.

The fuzzer's identity. A fuzzer holding an admin token once revoked that token 46 s into
a run, having read its name from ``GET /tokens``, and spent the rest of the run on 401s.
Here the main run authenticates as a platform admin created for it, on its own
installation, and leaves out the three operations that can take away its own identity
(``DELETE /tokens/{token}``, ``DELETE /users/{user}``, ``PUT /users/{user}/password``,
which revokes the user's tokens); after the run the test proves the token still works.
Those three are then fuzzed in a short run of their own, with a throwaway admin whose
loss ends nothing.

Bounded for a 2-core machine (``make test`` runs it twice, on SQLite and PostgreSQL):
``MAX_EXAMPLES`` per operation and phase. A run on SQLite on the development machine
(2 cores, nothing else running): 104 operations (101 in the main run, 3 in the second),
4,710 requests (4,620 + 90), 0 failures, 89 s in all. The counts of each run are printed
(``pytest -s``) from schemathesis's HAR report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ghaf.server.app import API_PREFIX
from tests.conftest import Databases, Platform, start_platform, unique

MAX_EXAMPLES = 8
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
# The operations that can revoke the fuzzer's own token: fuzzed apart (module docstring).
# DELETE /tokens/{token}, DELETE /users/{user}, PUT /users/{user}/password, by id.
OWN_IDENTITY = ("revoke_token", "delete_user", "set_password")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def target(databases: Databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """An installation of its own: the fuzzer creates, changes and deletes at random."""
    live = start_platform(tmp_path_factory.mktemp("fuzz-home"), databases.new_url())
    yield live
    live.stop()


def _admin_token(platform: Platform, prefix: str) -> tuple[str, str]:
    """A new platform admin and its token: (user name, secret)."""
    admin = platform.client()
    name = unique(prefix)
    admin.users.create(name, platform_admin=True)
    return name, admin.users.create_token(name, token_name=unique("fuzz")).token


def _fuzz(
    platform: Platform, token: str, report: Path, *selection: str, max_examples: int
) -> tuple[int, str, dict[str, int]]:
    """Run schemathesis's CLI (its stable interface) on the live server; returns its exit
    status, its output and the counts from its HAR report."""
    report.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{platform.url}{API_PREFIX}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(max_examples),
        "--workers",
        "2",
        "--seed",
        "14",  # reproducible: a failure seen once is seen again
        "--no-color",
        "--report",
        "har",
        "--report-dir",
        str(report),
        *selection,
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.security.fuzz_hooks",
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        # In the report folder: schemathesis keeps a cache (.schemathesis/) where it runs.
        command,
        cwd=report,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = done.stdout + done.stderr
    entries = [
        entry
        for har in report.glob("har-*")
        for entry in json.loads(har.read_text())["log"]["entries"]
    ]
    operations = {(e["request"]["method"], e["request"]["url"].split("?", 1)[0]) for e in entries}
    counts = {"requests": len(entries), "urls": len(operations)}
    print(f"schemathesis {' '.join(selection) or 'all'}: {counts}\n{output[-2000:]}")
    return done.returncode, output, counts


@pytest.mark.timeout(900)
def test_the_server_keeps_its_contract(target: Platform, tmp_path: Path) -> None:
    name, token = _admin_token(target, "fuzzer")
    excluded = [arg for op in OWN_IDENTITY for arg in ("--exclude-operation-id", op)]
    status, output, counts = _fuzz(
        target, token, tmp_path / "main", *excluded, max_examples=MAX_EXAMPLES
    )
    assert status == 0, output[-20_000:]
    assert counts["requests"] > 1000
    operations = sum(
        method in ("get", "put", "post", "patch", "delete")
        for item in target.app.openapi()["paths"].values()
        for method in item
    )
    assert f"Tested: {operations - len(OWN_IDENTITY)}\n" in output, output[-3000:]
    # The run could not take away its own identity: its token works, as the same user.
    me = httpx.get(f"{target.url}{API_PREFIX}/whoami", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["name"] == name

    _, throwaway = _admin_token(target, "fuzzer-own")
    included = [arg for op in OWN_IDENTITY for arg in ("--include-operation-id", op)]
    included += ["--phases", "examples,coverage,fuzzing"]  # no links among the three
    status, output, counts = _fuzz(
        target, throwaway, tmp_path / "own", *included, max_examples=MAX_EXAMPLES
    )
    assert status == 0, output[-20_000:]
    assert f"Tested: {len(OWN_IDENTITY)}\n" in output, output[-3000:]
