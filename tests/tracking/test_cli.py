"""``ghaf experiments`` and ``ghaf runs`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.client import Client
from ghaf.tracking.batches import LogBatch, metrics_table

runner = CliRunner()


def _run(admin: Client, project: str, name: str, auc: float, model: str) -> str:
    run = admin.runs.create(project, "cli", name=name)
    admin.runs.log(
        project,
        run.id,
        LogBatch(
            metrics=metrics_table(["auc"], [auc], [0], [1]),
            params={"model": model, "seed": "1"},
            status="finished",
        ),
    )
    return run.id


def test_runs_ls_show_compare_delete_restore(
    admin: Client, project: str, admin_cli: Path, tmp_path: Path
) -> None:
    a = _run(admin, project, "first", 0.91, "rf")
    b = _run(admin, project, "second", 0.95, "gbm")
    admin.runs.log_artifact(project, b, b"weights", path="model.bin")
    listed = runner.invoke(
        app,
        [
            "runs",
            "ls",
            "cli",
            "-p",
            project,
            "--filter",
            "metrics.auc > 0.9",
            "--order-by",
            "metrics.auc desc",
        ],
    )
    assert listed.exit_code == 0, listed.output
    assert listed.output.index("second") < listed.output.index("first")
    as_json = json.loads(runner.invoke(app, ["runs", "ls", "-p", project, "--json"]).stdout)
    assert {r["id"] for r in as_json["items"]} == {a, b}
    shown = runner.invoke(app, ["runs", "show", b[:13], "-p", project])
    assert shown.exit_code == 0 and "gbm" in shown.output and "model.bin" in shown.output
    compared = runner.invoke(app, ["runs", "compare", a, b, "-p", project])
    assert compared.exit_code == 0, compared.output
    assert "params.model" in compared.output and "params.seed" not in compared.output
    assert "0.91" in compared.output and "0.95" in compared.output
    fetched = runner.invoke(
        app, ["runs", "download", b, "model.bin", "-p", project, "-o", str(tmp_path)]
    )
    assert fetched.exit_code == 0 and (tmp_path / "model.bin").read_bytes() == b"weights"
    assert runner.invoke(app, ["runs", "rm", a, "-p", project]).exit_code == 0
    remaining = json.loads(runner.invoke(app, ["runs", "ls", "-p", project, "--json"]).stdout)
    assert [r["id"] for r in remaining["items"]] == [b]
    assert runner.invoke(app, ["runs", "restore", a, "-p", project]).exit_code == 0
    experiments = runner.invoke(app, ["experiments", "ls", "-p", project, "--json"])
    assert [e["name"] for e in json.loads(experiments.stdout)["items"]] == ["cli"]
    first = runner.invoke(app, ["runs", "ls", "-p", project, "--page-size", "1"])
    assert first.exit_code == 0 and "next page: --cursor " in first.output
    cursor = first.output.split("next page: --cursor ")[1].split()[0]
    second = json.loads(
        runner.invoke(
            app, ["runs", "ls", "-p", project, "--page-size", "1", "--cursor", cursor, "--json"]
        ).stdout
    )
    assert len(second["items"]) == 1 and second["next_cursor"] is None


def test_cli_errors_are_one_line_with_exit_code_2(admin_cli: Path, project: str) -> None:
    bad = runner.invoke(app, ["runs", "ls", "-p", project, "--filter", "metrics.auc >> 1"])
    assert bad.exit_code == 2
    assert "syntax error at position 14" in bad.output
    missing = runner.invoke(app, ["runs", "show", "0123456789", "-p", project])
    assert missing.exit_code == 2 and "no run" in missing.output
    synced = runner.invoke(app, ["runs", "sync"])
    assert synced.exit_code == 0 and "sent 0 spooled run(s)" in synced.output
