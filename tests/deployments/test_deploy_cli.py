"""``ghaf deploy`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.client import Client
from ghaf.deployments.cli import parse_variant
from tests.conftest import TrainedModel

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, list(args))


def test_create_update_history_rollback_rm(
    admin: Client, project: str, admin_cli: Path, trained: TrainedModel, tmp_path: Path
) -> None:
    for _ in range(2):
        admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    admin.models.set_alias(project, "churn", "champion", 1)
    made = _cli(
        "deploy", "create", "api", "-p", project,
        "--variant", "champion=churn@champion:50",
        "--variant", "challenger=churn:2:50",
        "--variant", "shadow=churn:2:shadow",
        "--sticky", "header:x-user-id",
        "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    out = json.loads(made.output)
    assert out["revision"] == 1
    assert out["resolved"]["champion"] == {
        "model": "churn",
        "version": 1,
        "sha256": out["resolved"]["champion"]["sha256"],
        "follows": "champion",
    }
    assert out["spec"]["variants"][2]["shadow"] is True
    shown = _cli("deploy", "show", "api", "-p", project)
    assert shown.exit_code == 0, shown.output
    assert "champion: churn v1 (follows @champion) 50%" in shown.output
    assert "shadow: churn v2 shadow" in shown.output
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "variants:\n  - {name: champion, model: churn, version: 2, weight: 100}\n",
        encoding="utf-8",
    )
    updated = _cli("deploy", "update", "api", "-p", project, "--spec", str(spec), "-m", "all in")
    assert updated.exit_code == 0, updated.output
    history = _cli("deploy", "history", "api", "-p", project)
    assert history.exit_code == 0 and "all in" in history.output, history.output
    assert "champion=churn:2" in history.output
    back = _cli("deploy", "rollback", "api", "1", "-p", project, "--json")
    assert back.exit_code == 0, back.output
    assert json.loads(back.output)["revision"] == 3
    listed = json.loads(_cli("deploy", "ls", "-p", project, "--json").output)
    assert [d["name"] for d in listed["items"]] == ["api"]
    missing = _cli("deploy", "rollback", "api", "7", "-p", project)
    assert missing.exit_code != 0 and "no revision 7" in missing.output
    assert _cli("deploy", "rm", "api", "-p", project).exit_code == 0
    assert "no deployment 'api'" in _cli("deploy", "show", "api", "-p", project).output


def test_bad_weights_exit_with_one_line(
    admin: Client, project: str, admin_cli: Path, trained: TrainedModel
) -> None:
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    result = _cli("deploy", "create", "api", "-p", project, "--variant", "a=churn:1:70")
    assert result.exit_code != 0
    assert "must sum to 100, not 70" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a=churn@champion:50",
            {"name": "a", "model": "churn", "version": "@champion", "weight": 50},
        ),
        ("b=churn:3:12.5", {"name": "b", "model": "churn", "version": "3", "weight": 12.5}),
        ("s=churn:3:shadow", {"name": "s", "model": "churn", "version": "3", "shadow": True}),
    ],
)
def test_variant_syntax(text: str, expected: dict) -> None:
    assert parse_variant(text) == expected


@pytest.mark.parametrize("text", ["churn:1:50", "a=churn:50", "a=churn:1:lots", "a=", "a=:1:5"])
def test_bad_variant_syntax_names_it(text: str, admin_cli: Path) -> None:
    result = _cli("deploy", "create", "api", "-p", "p", "--variant", text)
    assert result.exit_code == 2
    assert f"--variant {text!r}" in result.output
