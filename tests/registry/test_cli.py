"""``ghaf models`` and ``ghaf gates check`` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.client import Client
from tests.conftest import TrainedModel

runner = CliRunner()


def _cli(*args: str):
    return runner.invoke(app, list(args))


def test_register_show_alias_download_lineage(
    admin: Client, project: str, admin_cli: Path, trained: TrainedModel, tmp_path: Path
) -> None:
    sample = tmp_path / "sample.npy"
    np.save(sample, trained.X[:10])
    result = _cli(
        "models",
        "register",
        "churn",
        str(trained.path),
        "-p",
        project,
        "--sample",
        str(sample),
        "--tag",
        "team=risk",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["version"] == 1
    assert _cli("models", "alias", "churn", "challenger", "1", "-p", project).exit_code == 0
    shown = _cli("models", "show", "churn@challenger", "-p", project, "--json")
    assert json.loads(shown.output)["tags"] == {"team": "risk"}
    listed = _cli("models", "show", "churn", "-p", project)
    assert "challenger" in listed.output and "pending" in listed.output
    assert "churn" in _cli("models", "ls", "-p", project).output
    got = _cli("models", "download", "churn@challenger", "-p", project, "-o", str(tmp_path))
    assert got.exit_code == 0, got.output
    assert (tmp_path / "model.skops").read_bytes() == trained.path.read_bytes()
    lineage = _cli("models", "lineage", "churn", "1", "-p", project)
    assert "-> alias churn@challenger" in lineage.output
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"\x80\x04K\x01.")
    refused = _cli("models", "register", "churn", str(bad), "-p", project, "--sample", str(sample))
    assert refused.exit_code == 2 and "pickle" in refused.output


def test_policy_cards_reviews_and_gate_check_exit_codes(
    admin: Client,
    project: str,
    admin_cli: Path,
    trained: TrainedModel,
    tmp_path: Path,
    reviewer,
    monkeypatch,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "gates:\n  - card_fields: [owners]\n  - max_size_mb: 1\n  - saf_format: true\n"
    )
    typo = _cli("models", "policy", "set", str(policy), "-p", project)
    assert typo.exit_code == 2 and "line 4" in typo.output and "safe_format" in typo.output
    policy.write_text("protected_aliases: [champion]\ngates:\n  - card_fields: [owners]\n")
    assert _cli("models", "policy", "set", str(policy), "-p", project).exit_code == 0
    assert "card_fields" in _cli("models", "policy", "show", "-p", project).output
    admin.models.register(project, "churn", path=trained.path, sample=trained.X[:3])
    failing = _cli("gates", "check", "churn", "1", "-p", project)
    assert failing.exit_code == 1, failing.output
    assert "FAIL" in failing.output and "missing owners" in failing.output
    card = _cli(
        "models",
        "card",
        "churn",
        "1",
        "-p",
        project,
        "--set",
        "owners=risk, ml-platform",
        "--set",
        "intended_use=Churn triage",
    )
    assert card.exit_code == 0 and "- ml-platform" in card.output
    passing = _cli("gates", "check", "churn", "1", "-p", project, "--json")
    assert passing.exit_code == 0 and json.loads(passing.output)["passed"] is True
    html = tmp_path / "card.html"
    assert (
        _cli(
            "models", "card", "churn", "1", "-p", project, "--format", "html", "-o", str(html)
        ).exit_code
        == 0
    )
    assert "<h2>Owners</h2>" in html.read_text()
    # Approve as the reviewer (a second principal), then the protected alias is allowed.
    self_approve = _cli("models", "approve", "churn", "1", "-p", project, "-m", "mine")
    assert self_approve.exit_code == 2 and "four-eyes" in self_approve.output
    _, client = reviewer
    monkeypatch.setenv("GHAF_TOKEN", client._http.headers["Authorization"].split()[1])
    approved = _cli("models", "approve", "churn", "1", "-p", project, "-m", "ok")
    assert approved.exit_code == 0 and "approved" in approved.output
    assert _cli("models", "alias", "churn", "champion", "1", "-p", project).exit_code == 0


def test_ls_pages_with_page_size_and_cursor(admin: Client, project: str, admin_cli: Path) -> None:
    for name in ("a-model", "b-model", "c-model"):
        admin.models.create(project, name)
    first = _cli("models", "ls", "-p", project, "--page-size", "2", "--json")
    assert first.exit_code == 0, first.output
    page = json.loads(first.output)  # exactly what REST answers
    assert [m["name"] for m in page["items"]] == ["a-model", "b-model"]
    assert page["next_cursor"]
    shown = _cli("models", "ls", "-p", project, "--page-size", "2")
    assert f"--cursor {page['next_cursor']}" in shown.output.replace("\n", "")
    rest = _cli("models", "ls", "-p", project, "--cursor", page["next_cursor"], "--json")
    assert json.loads(rest.output) == {
        "items": [json.loads(rest.output)["items"][0]],
        "next_cursor": None,
    }
    assert json.loads(rest.output)["items"][0]["name"] == "c-model"
    bad = _cli("models", "ls", "-p", project, "--page-size", "0")
    assert bad.exit_code == 2 and "page-size" in bad.output
