"""The audit trail through the API: recording, reading, verifying, tampering, export."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import delete, select, text, update

from ghaf.client import Client
from ghaf.core.errors import NotFound, PermissionDenied
from ghaf.security.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from ghaf.security.audit.service import verify_export
from ghaf.tasks.models import ScheduledTask
from tests.conftest import Platform, unique

MakePlatform = Callable[..., Platform]


def test_mutations_and_denials_are_recorded(platform: Platform, admin: Client) -> None:
    user, client = platform.new_user()
    project = client.projects.create(unique("p")).name
    with pytest.raises(NotFound):
        client.projects.get(admin.projects.create(unique("p")).name)
    events = admin.audit.list(actor=user.name)
    actions = [(e.action, e.outcome) for e in events]
    assert ("project:create", "success") in actions
    assert ("project:access", "denied") in actions
    created = next(e for e in events if e.action == "project:create")
    assert created.project == project and created.client == "127.0.0.1"
    assert created.request_id and created.ts.tzinfo is not None


def test_request_id_links_response_and_audit_row(platform: Platform, admin: Client) -> None:
    name = unique("p")
    response = admin.request(
        "POST", "/api/v1/projects", json={"name": name}, headers={"X-Request-ID": "trace-123"}
    )
    assert response.headers["x-request-id"] == "trace-123"
    event = admin.audit.list(project=name)[0]
    assert event.request_id == "trace-123"


def test_failed_authentication_is_audited(platform: Platform, admin: Client) -> None:
    import httpx

    httpx.get(f"{platform.url}/api/v1/whoami", headers={"Authorization": "Bearer ghaf_" + "B" * 43})
    last = admin.audit.list()[-1]
    assert (last.action, last.outcome) == ("auth:token", "denied")
    assert "B" * 10 not in json.dumps(last.model_dump(mode="json"))


def test_project_audit_is_for_maintainers(project: str, member_in, admin: Client) -> None:  # type: ignore[no-untyped-def]
    _, maintainer = member_in(project, "maintainer")
    _, member = member_in(project, "member")
    assert all(e.project == project for e in maintainer.audit.list(project=project))
    with pytest.raises(PermissionDenied):
        member.audit.list(project=project)
    with pytest.raises(PermissionDenied):
        maintainer.audit.list()
    with pytest.raises(PermissionDenied):
        maintainer.audit.verify()


def test_since_filter(admin: Client) -> None:
    events = admin.audit.list()
    cut = events[len(events) // 2].ts
    later = admin.audit.list(since=cut)
    assert later and all(e.ts >= cut for e in later)


def test_checkpoints_every_n_rows(fresh_platform: MakePlatform) -> None:
    live = fresh_platform(audit_checkpoint_every=5)
    # The witness signs the tip once at start-up, as a scheduled task among others: wait
    # for that run, or its checkpoint may land among the rows below (an extra one).
    deadline = time.monotonic() + 30
    while True:
        with live.runtime.database.transaction(write=False) as session:
            row = session.get(ScheduledTask, "audit.witness")
            if row is not None and row.last_finished_at is not None:
                break
        assert time.monotonic() < deadline, "the start-up witness did not run"
        time.sleep(0.05)
    for _ in range(12):
        live.admin.projects.create(unique("p"))
    report = live.admin.audit.verify()
    # every 5 rows, plus the genesis checkpoint `admin init` signs at its own last row
    assert report.ok and report.rows >= 14 and report.checkpoints == report.rows // 5 + 1


def _tamper(live: Platform, statement: object) -> None:
    with live.runtime.database.transaction() as session:
        session.execute(statement)  # type: ignore[call-overload]


def _busy_platform(fresh_platform: MakePlatform) -> Platform:
    live = fresh_platform(audit_checkpoint_every=4)
    for _ in range(10):
        live.admin.projects.create(unique("p"))
    assert live.admin.audit.verify().ok
    return live


def test_verify_names_a_changed_row(fresh_platform: MakePlatform) -> None:
    live = _busy_platform(fresh_platform)
    _tamper(live, update(AuditEvent).where(AuditEvent.seq == 5).values(outcome="denied"))
    report = live.admin.audit.verify()
    assert not report.ok and report.first_bad_seq == 5 and "changed" in report.problem


def test_verify_names_a_deleted_row(fresh_platform: MakePlatform) -> None:
    live = _busy_platform(fresh_platform)
    _tamper(live, delete(AuditEvent).where(AuditEvent.seq == 6))
    report = live.admin.audit.verify()
    assert report.first_bad_seq == 6 and "deleted" in report.problem


def test_verify_names_a_truncated_tail(fresh_platform: MakePlatform) -> None:
    live = _busy_platform(fresh_platform)
    last = live.admin.audit.list()[-1].seq
    _tamper(live, delete(AuditEvent).where(AuditEvent.seq > last - 3))
    report = live.admin.audit.verify()
    assert report.first_bad_seq == last - 2 and "truncated" in report.problem


def test_truncation_with_rewound_head_is_caught(fresh_platform: MakePlatform) -> None:
    live = _busy_platform(fresh_platform)
    with live.runtime.database.transaction() as session:
        keep = 5
        row = session.scalar(select(AuditEvent).where(AuditEvent.seq == keep))
        assert row is not None
        session.execute(delete(AuditEvent).where(AuditEvent.seq > keep))
        session.execute(update(AuditHead).values(seq=keep, hash=row.hash))
    report = live.admin.audit.verify()
    assert not report.ok and report.first_bad_seq is not None


def test_verify_names_an_inserted_row(fresh_platform: MakePlatform) -> None:
    live = _busy_platform(fresh_platform)
    with live.runtime.database.transaction() as session:
        # Shift rows 7.. up by one and slip a forged row in at 7.
        session.execute(text("UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 7"))
        session.execute(text("UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1000"))
        src = session.scalar(select(AuditEvent).where(AuditEvent.seq == 6))
        assert src is not None
        session.add(
            AuditEvent(
                seq=7,
                id="forged",
                ts=src.ts,
                actor="mallory",
                actor_id=None,
                project=None,
                action="user:create",
                resource="user/mallory",
                outcome="success",
                request_id=None,
                client=None,
                detail={},
                prev_hash=src.hash,
                hash=src.hash,
            )
        )
    report = live.admin.audit.verify()
    assert report.first_bad_seq == 7 and not report.ok


def test_verify_names_reordered_rows(fresh_platform: MakePlatform) -> None:
    live = _busy_platform(fresh_platform)
    with live.runtime.database.transaction() as session:
        session.execute(text("UPDATE audit_events SET seq = -1 WHERE seq = 3"))
        session.execute(text("UPDATE audit_events SET seq = 3 WHERE seq = 4"))
        session.execute(text("UPDATE audit_events SET seq = 4 WHERE seq = -1"))
    report = live.admin.audit.verify()
    assert report.first_bad_seq == 3 and not report.ok


def test_forged_checkpoint_is_caught(fresh_platform: MakePlatform) -> None:
    live = _busy_platform(fresh_platform)
    _tamper(live, update(AuditCheckpoint).values(mac="0" * 64))
    report = live.admin.audit.verify()
    assert "bad signature" in (report.problem or "")


def test_cli_verify_exit_codes(
    fresh_platform: MakePlatform, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from ghaf.cli.main import app

    live = _busy_platform(fresh_platform)
    monkeypatch.setenv("GHAF_URL", live.url)
    monkeypatch.setenv("GHAF_TOKEN", live.admin_token)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    _tamper(live, update(AuditEvent).where(AuditEvent.seq == 2).values(actor="mallory"))
    broken = runner.invoke(app, ["audit", "verify", "--json"])
    assert broken.exit_code == 1
    assert json.loads(broken.stdout)["first_bad_seq"] == 2


def test_export_verifies_offline_with_key(
    fresh_platform: MakePlatform, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from ghaf.cli.main import app

    live = _busy_platform(fresh_platform)
    monkeypatch.setenv("GHAF_URL", live.url)
    monkeypatch.setenv("GHAF_TOKEN", live.admin_token)
    monkeypatch.setenv("GHAF_HOME", str(live.settings.home))
    monkeypatch.setenv("GHAF_DATABASE_URL", live.settings.resolved_database_url)
    runner = CliRunner()
    export = tmp_path / "trail.jsonl"
    assert (
        runner.invoke(app, ["audit", "export", "--format", "jsonl", "-o", str(export)]).exit_code
        == 0
    )
    lines = export.read_text().splitlines()
    kinds = {json.loads(line)["type"] for line in lines}
    assert kinds == {"format", "event", "checkpoint", "head"}
    keys = tmp_path / "audit.key"
    assert runner.invoke(app, ["admin", "audit-key", "-o", str(keys)]).exit_code == 0
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    result = runner.invoke(
        app, ["audit", "verify", "--file", str(export), "--key-file", str(keys), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["signatures_checked"] is True
    # one changed byte in the export is caught offline too
    at = next(i for i, line in enumerate(lines) if i >= 3 and '"type": "event"' in line)
    record = json.loads(lines[at])
    record["actor"] = "mallory"
    lines[at] = json.dumps(record)
    assert not verify_export(iter(lines), lambda v: None).ok
    assert runner.invoke(app, ["audit", "export", "--format", "csv"]).exit_code == 2


def test_audit_pages_and_custom_methods(platform: Platform, admin: Client) -> None:
    for _ in range(3):  # rows enough for two pages, whichever tests ran before
        admin.projects.create(unique("paged"))
    first = admin.audit.page(page_size=2)
    assert len(first.items) == 2 and first.next_cursor
    second = admin.audit.page(page_size=2, cursor=first.next_cursor)
    assert second.items[0].seq > first.items[-1].seq
    headers = {"Authorization": f"Bearer {platform.admin_token}"}
    api = f"{platform.url}/api/v1"
    assert httpx.post(f"{api}/audit:verify", headers=headers).json()["ok"] is True
    exported = httpx.get(f"{api}/audit:export", headers=headers)
    assert json.loads(exported.text.splitlines()[0])["name"] == "ghaf-audit"
    for old in ("verify", "export"):
        assert httpx.request("POST", f"{api}/audit/{old}", headers=headers).status_code in (
            404,
            405,
        )
    bad = httpx.get(f"{api}/audit", params={"page_size": 1001}, headers=headers)
    assert bad.status_code == 422 and bad.json()["field"] == "page_size"
