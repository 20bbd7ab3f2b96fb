"""The CLI: login file permissions, env overrides, --json, exit codes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ghaf.cli.main import app
from tests.conftest import Platform, unique

runner = CliRunner()


def test_login_stores_0600_credentials_and_whoami(platform: Platform, cli_env: Path) -> None:
    result = runner.invoke(app, ["login", "--url", platform.url, "--token", platform.admin_token])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(cli_env.stat().st_mode) == 0o600
    me = runner.invoke(app, ["whoami", "--json"])
    assert me.exit_code == 0
    assert json.loads(me.stdout)["name"] == "admin"


def test_env_overrides_the_file(
    platform: Platform, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner.invoke(app, ["login", "--url", platform.url, "--token", platform.admin_token])
    user, client = platform.new_user()
    monkeypatch.setenv("GHAF_TOKEN", client.tokens.create("env").token)
    assert json.loads(runner.invoke(app, ["whoami", "--json"]).stdout)["name"] == user.name


def test_login_with_bad_token_stores_nothing(platform: Platform, cli_env: Path) -> None:
    result = runner.invoke(app, ["login", "--url", platform.url, "--token", "ghaf_" + "x" * 43])
    assert result.exit_code == 2
    assert "unknown token" in result.output
    assert not cli_env.exists()


def test_not_logged_in(cli_env: Path) -> None:
    result = runner.invoke(app, ["projects", "ls"])
    assert result.exit_code == 2 and "not logged in" in result.output


def test_unreachable_server_exits_1(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHAF_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("GHAF_TOKEN", "ghaf_" + "x" * 43)
    result = runner.invoke(app, ["projects", "ls"])
    assert result.exit_code == 1 and "cannot reach" in result.output


def test_project_and_member_commands(
    platform: Platform, admin_cli: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique("p")
    created = runner.invoke(app, ["projects", "create", name, "--json"])
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["name"] == name
    listed = runner.invoke(app, ["projects", "ls", "--page-size", "1000", "--json"]).stdout
    assert name in [p["name"] for p in json.loads(listed)["items"]]
    user, _ = platform.new_user()
    added = runner.invoke(
        app, ["members", "add", "-p", name, "--principal", user.name, "--role", "viewer", "--json"]
    )
    assert added.exit_code == 0 and json.loads(added.stdout)["role"] == "viewer"
    assert (
        runner.invoke(
            app, ["members", "update", "-p", name, user.name, "--role", "member"]
        ).exit_code
        == 0
    )
    members = json.loads(runner.invoke(app, ["members", "ls", "-p", name, "--json"]).stdout)[
        "items"
    ]
    assert {"subject": user.name, "role": "member"}.items() <= {
        k: v for m in members if m["subject"] == user.name for k, v in m.items()
    }.items()
    bad = runner.invoke(app, ["projects", "create", "a/b"])
    assert bad.exit_code == 2 and "'/'" in bad.output
    audit = json.loads(runner.invoke(app, ["audit", "ls", "--project", name, "--json"]).stdout)
    assert [e["action"] for e in audit["items"]][:2] == ["project:create", "member:add"]
    assert runner.invoke(app, ["audit", "ls", "--since", "yesterday"]).exit_code == 2
    assert runner.invoke(app, ["projects", "rm", name]).exit_code == 0
    assert runner.invoke(app, ["projects", "show", name]).exit_code == 2


def test_permission_denied_exits_2(
    platform: Platform, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = platform.new_user()
    monkeypatch.setenv("GHAF_URL", platform.url)
    monkeypatch.setenv("GHAF_TOKEN", client.tokens.create("cli").token)
    result = runner.invoke(app, ["users", "ls"])
    assert result.exit_code == 2 and "user:read" in result.output


def test_token_commands_show_secret_once(
    platform: Platform, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = platform.new_user()
    monkeypatch.setenv("GHAF_URL", platform.url)
    monkeypatch.setenv("GHAF_TOKEN", client.tokens.create("cli").token)
    created = json.loads(runner.invoke(app, ["tokens", "create", "ci", "--json"]).stdout)
    assert created["token"].startswith("ghaf_")
    listed = runner.invoke(app, ["tokens", "ls", "--json"]).stdout
    assert created["token"] not in listed
    assert runner.invoke(app, ["tokens", "revoke", "ci"]).exit_code == 0


def test_usage_error_exits_2() -> None:
    assert runner.invoke(app, ["projects", "create"]).exit_code == 2


def test_set_password_then_login(
    platform: Platform, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ghaf.client import Client

    user, client = platform.new_user()
    monkeypatch.setenv("GHAF_URL", platform.url)
    monkeypatch.setenv("GHAF_TOKEN", client.tokens.create("cli").token)
    secret = "a long enough password"
    result = runner.invoke(app, ["users", "set-password", user.name], input=f"{secret}\n{secret}\n")
    assert result.exit_code == 0, result.output
    assert Client.login(platform.url, user.name, secret).token.startswith("ghaf_")
    short = runner.invoke(app, ["users", "set-password", user.name], input="short\nshort\n")
    assert short.exit_code == 2 and "at least 12" in short.output


def test_users_create_refuses_a_taken_name_before_asking_for_a_password(
    platform: Platform, admin_cli: Path
) -> None:
    from ghaf.client import Client

    name = unique("u")
    secret = "a long enough password"
    made = runner.invoke(app, ["users", "create", name, "--password-stdin"], input=f"{secret}\n")
    assert made.exit_code == 0, made.output
    assert Client.login(platform.url, name, secret).token.startswith("ghaf_")
    again = runner.invoke(app, ["users", "create", name, "--password"], input="")
    assert again.exit_code != 0
    assert "already exists" in again.output and "password:" not in again.output
    empty = runner.invoke(app, ["users", "set-password", name, "--password-stdin"], input="\n")
    assert empty.exit_code == 2 and "held no password" in empty.output


def test_service_account_commands(
    platform: Platform,
    admin,
    admin_cli: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = admin.projects.create(unique("p")).name
    assert (
        runner.invoke(
            app, ["service-accounts", "create", "-p", project, "ci-bot", "--role", "viewer"]
        ).exit_code
        == 0
    )
    made = runner.invoke(
        app, ["service-accounts", "token", "-p", project, "ci-bot", "--name", "deploy", "--json"]
    )
    secret = json.loads(made.stdout)["token"]
    listed = runner.invoke(app, ["service-accounts", "tokens", "-p", project, "ci-bot", "--json"])
    assert [t["name"] for t in json.loads(listed.stdout)] == ["deploy"]
    assert secret not in listed.stdout
    assert (
        runner.invoke(
            app, ["service-accounts", "revoke-token", "-p", project, "ci-bot", "--name", "deploy"]
        ).exit_code
        == 0
    )
    monkeypatch.setenv("GHAF_TOKEN", secret)
    assert runner.invoke(app, ["whoami"]).exit_code == 2


def test_artifact_and_key_commands(
    platform: Platform,
    admin,
    admin_cli: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    project = admin.projects.create(unique("p")).name
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights" * 1000)
    put = runner.invoke(
        app, ["artifacts", "upload", str(source), "models/m.bin", "-p", project, "--json"]
    )
    assert put.exit_code == 0, put.output
    assert json.loads(put.stdout)["size"] == 7000
    assert (
        runner.invoke(
            app, ["artifacts", "upload", str(tmp_path / "nope"), "x", "-p", project]
        ).exit_code
        == 2
    )
    target = tmp_path / "back.bin"
    got = runner.invoke(
        app, ["artifacts", "download", "models/m.bin", "-p", project, "-o", str(target), "--json"]
    )
    assert got.exit_code == 0, got.output
    assert target.read_bytes() == source.read_bytes()
    listed = json.loads(runner.invoke(app, ["artifacts", "ls", "-p", project, "--json"]).stdout)
    assert [a["path"] for a in listed["items"]] == ["models/m.bin"]
    assert runner.invoke(app, ["artifacts", "verify", "-p", project]).exit_code == 0
    rotated = json.loads(runner.invoke(app, ["keys", "rotate", "-p", project, "--json"]).stdout)
    assert rotated["version"] == 2 and rotated["rewrapped"] == 1
    keys = json.loads(runner.invoke(app, ["keys", "ls", "-p", project, "--json"]).stdout)
    assert [(v["version"], v["objects"]) for v in keys["items"]] == [(1, 0), (2, 1)]
    assert runner.invoke(app, ["artifacts", "rm", "models/m.bin", "-p", project]).exit_code == 0
    gone = runner.invoke(app, ["artifacts", "download", "models/m.bin", "-p", project])
    assert gone.exit_code == 2
    bad = runner.invoke(app, ["artifacts", "upload", str(source), "../x", "-p", project])
    assert bad.exit_code == 2 and "'..'" in bad.output


def test_data_commands(
    platform: Platform,
    admin,
    admin_cli: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    project = admin.projects.create(unique("p")).name
    folder = tmp_path / "imgs"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "1.txt").write_text("one")
    (folder / "2.txt").write_text("two")
    assert runner.invoke(app, ["datasets", "create", "imgs", "-p", project]).exit_code == 0
    added = runner.invoke(
        app, ["datasets", "add", "imgs", str(folder), "-p", project, "-m", "first", "--json"]
    )
    assert added.exit_code == 0, added.output
    version = json.loads(added.stdout)
    assert (version["version"], version["file_count"]) == (1, 2)
    assert "datasets add imgs" in version["provenance"]["command"] or version["provenance"]
    shown = json.loads(
        runner.invoke(app, ["datasets", "show", "imgs", "-p", project, "--json"]).stdout
    )
    assert shown[0]["aliases"] == ["latest"]
    aliased = runner.invoke(
        app, ["datasets", "alias", "imgs", "prod", "1", "-p", project, "--json"]
    )
    assert aliased.exit_code == 0 and json.loads(aliased.stdout)["alias"] == "prod"
    out = tmp_path / "out"
    got = runner.invoke(
        app, ["datasets", "download", "imgs", "prod", "-p", project, "-o", str(out)]
    )
    assert got.exit_code == 0, got.output
    assert (out / "a" / "1.txt").read_text() == "one"
    listed = json.loads(runner.invoke(app, ["datasets", "ls", "-p", project, "--json"]).stdout)
    assert [(d["name"], d["latest"]) for d in listed["items"]] == [("imgs", 1)]
    removed = runner.invoke(app, ["datasets", "alias", "imgs", "prod", "--delete", "-p", project])
    assert removed.exit_code == 0, removed.output
    missing = runner.invoke(app, ["datasets", "add", "imgs", str(tmp_path / "nope"), "-p", project])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_data_diff_classify_lineage_commands(
    platform: Platform,
    admin,
    admin_cli: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    project = admin.projects.create(unique("p")).name
    first, second = tmp_path / "v1.parquet", tmp_path / "v2.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "email": ["a", "b", "c"]}), first)
    pq.write_table(pa.table({"id": [1, 2, 3, 4]}), second)
    runner.invoke(app, ["datasets", "create", "people", "-p", project])
    assert (
        runner.invoke(app, ["datasets", "add", "people", str(first), "-p", project]).exit_code == 0
    )
    classified = runner.invoke(
        app, ["datasets", "classify", "people", "email", "pii", "-p", project]
    )
    assert classified.exit_code == 0, classified.output
    runner.invoke(app, ["datasets", "add", "people", str(second), "-p", project])
    diffed = runner.invoke(app, ["datasets", "diff", "people", "1", "2", "-p", project])
    assert diffed.exit_code == 0 and "email: removed" in diffed.output
    assert "rows: 3 -> 4" in diffed.output
    as_json = json.loads(
        runner.invoke(
            app, ["datasets", "diff", "people", "1", "latest", "-p", project, "--json"]
        ).stdout
    )
    assert as_json["removed"] == ["v1.parquet"] and as_json["added"] == ["v2.parquet"]
    shown = json.loads(
        runner.invoke(app, ["datasets", "show", "people", "1", "-p", project, "--json"]).stdout
    )
    assert shown["classifications"] == {"email": "pii"}
    lineage = runner.invoke(app, ["datasets", "lineage", "people", "-p", project])
    assert "v2 <- v1" in lineage.output
    assert (
        runner.invoke(
            app, ["datasets", "classify", "people", "id", "secret", "-p", project]
        ).exit_code
        == 2
    )


def test_data_add_reference(
    platform: Platform,
    admin,
    admin_cli: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    project = admin.projects.create(unique("p")).name
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "x.csv").write_text("a\n1\n")
    runner.invoke(app, ["datasets", "create", "ext", "-p", project])
    added = runner.invoke(
        app, ["datasets", "add", "ext", str(shared), "-p", project, "--reference", "--json"]
    )
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["external"] is True


def test_identity_ls_pages_and_group_members(platform: Platform, admin_cli: Path) -> None:
    platform.new_user()
    platform.new_user()
    page = json.loads(runner.invoke(app, ["users", "ls", "--page-size", "1", "--json"]).stdout)
    assert len(page["items"]) == 1 and page["next_cursor"]
    table = runner.invoke(app, ["users", "ls", "--page-size", "1"], env={"COLUMNS": "200"})
    assert f"next page: --cursor {page['next_cursor']}" in table.output
    after = runner.invoke(app, ["users", "ls", "--cursor", page["next_cursor"], "--json"])
    assert page["items"][0]["name"] not in [u["name"] for u in json.loads(after.stdout)["items"]]
    assert runner.invoke(app, ["users", "ls", "--page-size", "0"]).exit_code == 2
    assert runner.invoke(app, ["audit", "ls", "--page-size", "2"]).exit_code == 0
    tokens = json.loads(runner.invoke(app, ["tokens", "ls", "--json"]).stdout)
    assert tokens["items"] and "next_cursor" in tokens
    user, _ = platform.new_user()
    group = unique("g")
    assert runner.invoke(app, ["groups", "create", group]).exit_code == 0
    added = runner.invoke(app, ["groups", "members", "add", group, user.name, "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["members"] == [user.name]
    removed = runner.invoke(app, ["groups", "members", "rm", group, user.name])
    assert removed.exit_code == 0 and f"{user.name} removed from {group}" in removed.output
    again = runner.invoke(app, ["groups", "members", "rm", group, user.name])
    assert again.exit_code == 2 and "[member]" in again.output
