"""The secrets-in-logs detector (tests/secrets_in_logs.py) sees a planted secret, and its
hooks are live in this session: it cannot pass for want of looking."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ghaf.client import Client
from ghaf.security.tokens import generate_token
from tests import secrets_in_logs
from tests.conftest import Platform, unique
from tests.secrets_in_logs import Leak, Recorder, find_leaks, scan


def _planted(folder: Path) -> tuple[str, str]:
    """A recorder in ``folder`` that saw one token and one password, and logged both."""
    recorder = Recorder(folder, "self-test")
    token, password = generate_token(), "planted-" + unique("pw")
    recorder.secret("token", token)
    recorder.secret("password", password)
    logger = logging.getLogger("ghaf.self-test")
    logger.propagate = False
    logger.addHandler(recorder.handler)
    try:
        recorder.test = "test_a"
        logger.info("nothing secret here")
        recorder.test = "test_b"
        logger.warning("sent Authorization: Bearer %s", token)
        recorder.test = "test_c"
        try:
            raise ValueError(f"bad password {password!r}")
        except ValueError:
            logger.exception("login failed")  # only in the traceback
        recorder.test = "test_d"
        logger.info("token body only", extra={"auth": token[len("ghaf_") :]})
        recorder.logged("ghaf server output", f"INFO login with {password}")
    finally:
        logger.removeHandler(recorder.handler)
        logger.propagate = True
        recorder.close()
    return token, password


def test_the_detector_finds_planted_secrets_and_never_prints_them(tmp_path: Path) -> None:
    token, password = _planted(tmp_path)
    leaks = scan(tmp_path)
    assert set(leaks) == {
        Leak("token", "log ghaf.self-test", "test_b"),
        Leak("password", "log ghaf.self-test", "test_c"),
        Leak("token", "log ghaf.self-test", "test_d"),
        Leak("password", "ghaf server output", "test_d"),
    }
    report = "\n".join(map(str, leaks))
    assert token not in report and password not in report and token[5:] not in report


def test_an_unknown_token_shaped_string_is_a_leak_too() -> None:
    lines = [{"test": "t", "source": "ghaf server output", "text": f"x {generate_token()} y"}]
    assert find_leaks(lines, {}) == [Leak("token-shaped string", "ghaf server output", "t")]
    clean = [{"test": "t", "source": "log ghaf", "text": "token ghaf_abcd... (a hint)"}]
    assert find_leaks(clean, {"short": "password"}) == []


def test_this_session_records_logs_and_secrets(
    platform: Platform, admin: Client, request: pytest.FixtureRequest
) -> None:
    """The hooks are live: a token the server mints, a password the SDK sends and a
    record logged now all reach this worker's files, under this test's id."""
    recorder = secrets_in_logs.current()
    assert recorder is not None, "the plugin is not registered (tests/conftest.py)"
    password = "correct-" + unique("horse")
    user = admin.users.create(unique("u"), password=password)
    token = admin.users.create_token(user.name, token_name="t").token
    marker = unique("marker")
    logging.getLogger("ghaf.self-test.live").info("%s", marker)
    recorder.flush()
    secrets = {
        json.loads(line)["value"]
        for path in recorder.folder.glob("secrets-*.jsonl")
        for line in path.read_text().splitlines()
    }
    assert {token, password} <= secrets
    logged = [
        json.loads(line)
        for path in recorder.folder.glob("log-*.jsonl")
        for line in path.read_text().splitlines()
        if marker in line
    ]
    assert [entry["test"] for entry in logged] == [request.node.nodeid]
