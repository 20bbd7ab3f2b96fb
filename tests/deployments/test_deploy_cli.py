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


def test_rollout_start_status_abort_and_metrics(
    admin: Client, project: str, admin_cli: Path, trained: TrainedModel
) -> None:
    for _ in range(2):
        admin.models.register(project, "churn", path=trained.path, sample=trained.X[:5])
    admin.deployments.create(
        project, "api", variants=[{"name": "a", "model": "churn", "version": 1, "weight": 100}]
    )
    started = _cli(
        "deploy", "rollout", "start", "api", "-p", project,
        "--canary", "b=churn:2", "--steps", "10,100", "--step-seconds", "30",
        "--step-requests", "5", "-m", "try v2",
    )  # fmt: skip
    assert started.exit_code == 0, started.output
    assert "running" in started.output and "1 of 2 (10%, 100%)" in started.output
    assert "this step" in started.output  # the evidence table
    status = _cli("deploy", "rollout", "status", "api", "-p", project, "--json")
    assert status.exit_code == 0, status.output
    out = json.loads(status.output)
    assert out["weight"] == 10 and out["steps"][0]["min_requests"] == 5
    assert "0 of 30 s" in out["outcome"] or "of 30 s" in out["outcome"]
    bad = _cli("deploy", "rollout", "start", "api", "-p", project, "--canary", "c=churn:2")
    assert bad.exit_code != 0 and "rolling out 'b'" in bad.output
    aborted = _cli("deploy", "rollout", "abort", "api", "-p", project, "-m", "enough")
    assert aborted.exit_code == 0, aborted.output
    assert "aborted" in aborted.output and "enough" in aborted.output
    steps = _cli("deploy", "rollout", "start", "api", "-p", project, "--canary", "c=churn:2",
                 "--steps", "x,100")  # fmt: skip
    assert steps.exit_code != 0 and "percentages separated by commas" in steps.output
    metrics = _cli("deploy", "metrics", "-p", project)
    assert metrics.exit_code == 0 and "ghaf_deployment_requests_total" in metrics.output
