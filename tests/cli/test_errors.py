"""How the CLI reports errors: with ``--json`` one JSON object on stderr carrying the
problem's fields; without, one ``error:`` line, never wrapped and never read as markup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.console import output
from ghaf.core.errors import InvalidInput
from tests.conftest import Platform, unique

runner = CliRunner()
TOKEN = "ghaf_" + "x" * 43


def test_json_errors_are_the_problem_on_stderr(platform: Platform, admin_cli: Path) -> None:
    missing = unique("p")
    result = runner.invoke(app, ["projects", "show", missing, "--json"])
    assert result.exit_code == 2
    assert result.stdout == ""  # stdout is for results only
    problem = json.loads(result.stderr)
    assert problem["type"] == "urn:ghaf:problem:not-found"
    assert problem["title"] == "Not found" and problem["status"] == 404
    assert missing in problem["detail"]
    assert problem["request_id"]  # the server's, to find its log lines
    # The next command without --json prints plainly again.
    plain = runner.invoke(app, ["projects", "show", missing])
    assert plain.exit_code == 2 and plain.stderr.startswith("error: ")


def test_json_errors_name_the_field(platform: Platform, admin_cli: Path) -> None:
    result = runner.invoke(app, ["projects", "create", "a/b", "--json"])
    assert result.exit_code == 2
    problem = json.loads(result.stderr)
    assert problem["status"] == 422 and problem["field"] == "name"
    assert "'/'" in problem["detail"]


def test_json_errors_from_the_client_side(cli_env: Path) -> None:
    """An error raised before any request (no login) is a problem document too."""
    result = runner.invoke(app, ["projects", "ls", "--json"])
    assert result.exit_code == 2
    problem = json.loads(result.stderr)
    assert problem["type"] == "urn:ghaf:problem:unauthenticated"
    assert "not logged in" in problem["detail"]


def test_json_usage_errors(cli_env: Path) -> None:
    result = runner.invoke(app, ["login", "--url", "http://127.0.0.1:9", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stderr) == {
        "type": "urn:ghaf:problem:usage",
        "title": "Invalid usage",
        "detail": "give --token, or --user to log in with a password",
    }


def test_plain_errors_keep_markup_and_emoji_codes_literally(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    narrow = Console(stderr=True, markup=False, emoji=False, width=40)
    monkeypatch.setattr(output, "err_console", narrow)
    detail = (
        "the policy [red]refused[/red] it: rule [field] in ghaf[s3] :warning: failed "
        "while checking a very long name that runs well past forty columns"
    )
    with pytest.raises(typer.Exit) as exited, output.reporting_errors():
        raise InvalidInput(detail + "\nand a second line", field="policy")
    assert exited.value.exit_code == output.EXIT_USAGE
    printed = capsys.readouterr().err
    assert printed == f"error: {detail} and a second line [policy]\n"


def test_a_long_error_is_one_line_at_40_columns(tmp_path: Path) -> None:
    """The real command in a terminal 40 columns wide: one line, brackets intact."""
    env = {
        **os.environ,
        "COLUMNS": "40",
        "GHAF_URL": "http://127.0.0.1:9",
        "GHAF_TOKEN": TOKEN,
        "GHAF_CREDENTIALS": str(tmp_path / "none.json"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "ghaf", "projects", "ls"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot reach the ghaf server at http://127.0.0.1:9")
    assert "[Errno 111]" in lines[0] and len(lines[0]) > 40
    json_run = subprocess.run(
        [sys.executable, "-m", "ghaf", "projects", "ls", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert json_run.returncode == 1 and json_run.stdout == ""
    assert json.loads(json_run.stderr)["type"] == "urn:ghaf:problem:unavailable"
