"""Attacks on the trail's end: whoever can write the database deletes recent history.

Signed checkpoints also go to a witness the database's writer cannot rewrite (append-only
objects in the artifact store, S3 Object Lock, an optional webhook or syslog), so every
truncation below is named by ``verify``; an anchor kept elsewhere checks it too.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from ghaf.client import Client
from ghaf.core.errors import InvalidInput, ObjectExists
from ghaf.security.audit.chain import GENESIS_HASH, row_hash
from ghaf.security.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from ghaf.security.audit.service import AuditWriter, event_dict, verify_export
from ghaf.security.audit.witness import PREFIX, witness_key
from ghaf.storage.backends.local import LocalBackend
from tests.conftest import Platform, S3Server, unique

MakePlatform = Callable[..., Platform]


def _busy(fresh_platform: MakePlatform, **overrides: object) -> Platform:
    live = fresh_platform(audit_checkpoint_every=4, **overrides)
    for _ in range(10):
        live.admin.projects.create(unique("p"))
    report = live.admin.audit.verify()
    assert report.ok, report.problem
    assert report.witnessed is not None
    return live


def _tamper(live: Platform, *statements: Any) -> None:
    with live.runtime.database.transaction() as session:
        for statement in statements:
            session.execute(statement)


def _broken(client: Client, *words: str) -> str:
    report = client.audit.verify()
    assert not report.ok, "verify passed a tampered trail"
    problem = report.problem or ""
    for word in words:
        assert word in problem, problem
    return problem


def _witness_dir(live: Platform) -> Path:
    return live.settings.artifacts_dir / PREFIX


# --- the six truncations ---------------------------------------------------------------


def test_deleting_the_tail_with_its_checkpoints_and_head(fresh_platform: MakePlatform) -> None:
    live = _busy(fresh_platform)
    last = live.admin.audit.list()[-1].seq
    keep = last - 5
    _tamper(
        live,
        delete(AuditEvent).where(AuditEvent.seq > keep),
        delete(AuditCheckpoint).where(AuditCheckpoint.seq > keep),
        delete(AuditHead),
    )
    problem = _broken(live.admin, "deleted", "witness")
    assert f"rows {keep + 1}-" in problem


def test_deleting_the_head_row_only(fresh_platform: MakePlatform) -> None:
    live = _busy(fresh_platform)
    _tamper(live, delete(AuditHead))
    _broken(live.admin, "head", "missing")


def test_deleting_every_checkpoint(fresh_platform: MakePlatform) -> None:
    live = _busy(fresh_platform)
    _tamper(live, delete(AuditCheckpoint))
    _broken(live.admin, "checkpoint", "missing from the database")


def test_deleting_everything(fresh_platform: MakePlatform) -> None:
    live = _busy(fresh_platform)
    _tamper(live, delete(AuditEvent), delete(AuditCheckpoint), delete(AuditHead))
    report = live.admin.audit.verify()
    assert not report.ok and report.rows == 0
    assert "empty" in (report.problem or "") and "missing" in (report.problem or "")


def test_rewriting_a_row_and_rechaining_without_the_key(fresh_platform: MakePlatform) -> None:
    live = _busy(fresh_platform)
    with live.runtime.database.transaction() as session:
        rows = [event_dict(r) for r in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]
        prev = GENESIS_HASH
        for row in rows:
            if row["seq"] == 5:
                row["outcome"] = "denied"
            row["prev_hash"] = prev
            row["hash"] = prev = row_hash(prev, row)
            session.execute(
                update(AuditEvent)
                .where(AuditEvent.seq == row["seq"])
                .values(outcome=row["outcome"], prev_hash=row["prev_hash"], hash=row["hash"])
            )
        session.execute(delete(AuditCheckpoint))
        session.execute(delete(AuditHead))
    _broken(live.admin, "rewritten", "witnessed checkpoint")


def test_truncating_and_replaying_an_earlier_signed_head(fresh_platform: MakePlatform) -> None:
    live = _busy(fresh_platform)
    with live.runtime.database.transaction(write=False) as session:
        head = session.get(AuditHead, 1)
        assert head is not None
        old = {"seq": head.seq, "hash": head.hash, "key_version": head.key_version, "mac": head.mac}
    for _ in range(6):  # passes at least one checkpoint, which the witness holds
        live.admin.projects.create(unique("p"))
    live.runtime.audit.witness.flush()  # type: ignore[union-attr]
    _tamper(
        live,
        delete(AuditEvent).where(AuditEvent.seq > old["seq"]),
        delete(AuditCheckpoint).where(AuditCheckpoint.seq > old["seq"]),
        update(AuditHead).values(**old),
    )
    problem = _broken(live.admin, "deleted", "truncated", "witness")
    assert f"rows {old['seq'] + 1}-" in problem


def test_cli_names_the_missing_rows_and_prints_the_anchor(
    fresh_platform: MakePlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ghaf.cli.main import app

    live = _busy(fresh_platform)
    monkeypatch.setenv("GHAF_URL", live.url)
    monkeypatch.setenv("GHAF_TOKEN", live.admin_token)
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    witnessed = live.admin.audit.verify().witnessed
    assert witnessed is not None and f"latest witnessed checkpoint: {witnessed}" in ok.output
    _tamper(live, delete(AuditHead))
    broken = runner.invoke(app, ["audit", "verify"])
    assert broken.exit_code == 1 and "head" in broken.output and "missing" in broken.output


# --- anchors ---------------------------------------------------------------------------


def test_anchor_kept_elsewhere(fresh_platform: MakePlatform) -> None:
    live = _busy(fresh_platform)
    anchor = live.admin.audit.verify().witnessed
    assert anchor is not None
    seq, chain_hash = anchor.split(":")
    good = live.admin.audit.verify(anchor=anchor)
    assert good.ok and good.anchor == anchor
    wrong = live.admin.audit.verify(anchor=f"{seq}:{'f' * 64}")
    assert not wrong.ok and "anchor" in (wrong.problem or "")
    beyond = live.admin.audit.verify(anchor=f"{int(seq) + 1000}:{chain_hash}")
    assert not beyond.ok and "truncated" in (beyond.problem or "")
    with pytest.raises(InvalidInput):
        live.admin.audit.verify(anchor="five:abc")
    # After a truncation that also emptied the witness, the anchor still catches it.
    for path in _witness_dir(live).iterdir():
        path.unlink()
    _tamper(
        live,
        delete(AuditEvent).where(AuditEvent.seq > 3),
        delete(AuditCheckpoint).where(AuditCheckpoint.seq > 3),
    )
    assert "anchor" in (live.admin.audit.verify(anchor=anchor).problem or "")


def test_export_verified_offline_with_an_anchor(
    fresh_platform: MakePlatform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from ghaf.cli.main import app

    live = _busy(fresh_platform)
    anchor = live.admin.audit.verify().witnessed
    assert anchor is not None
    seq = int(anchor.split(":")[0])
    lines = list(live.admin.audit.export())
    assert verify_export(iter(lines), lambda v: None, anchor=(seq, anchor.split(":")[1])).ok
    # the export of a truncated trail: rows from the anchor on, their checkpoints and head gone
    cut = [
        line
        for line in lines
        if json.loads(line)["type"] in ("format", "event", "checkpoint")
        and json.loads(line).get("seq", 0) < seq
    ]
    export = tmp_path / "cut.jsonl"
    export.write_text("\n".join(cut) + "\n")
    monkeypatch.setenv("GHAF_URL", live.url)
    monkeypatch.setenv("GHAF_TOKEN", live.admin_token)
    runner = CliRunner()
    plain = runner.invoke(app, ["audit", "verify", "--file", str(export), "--json"])
    assert plain.exit_code == 1 and "head" in json.loads(plain.stdout)["problem"]
    anchored = runner.invoke(
        app, ["audit", "verify", "--file", str(export), "--anchor", anchor, "--json"]
    )
    assert anchored.exit_code == 1
    assert not verify_export(iter(cut), lambda v: None, anchor=(seq, "0" * 64)).ok
    empty = verify_export(iter(lines[:1]), lambda v: None)
    assert not empty.ok and "empty" in (empty.problem or "")


# --- the witness itself ------------------------------------------------------------------


def test_local_witness_objects_are_create_once_and_read_only(fresh_platform: MakePlatform) -> None:
    live = _busy(fresh_platform)
    files = sorted(_witness_dir(live).iterdir())
    assert files and all(oct(f.stat().st_mode & 0o777) == "0o444" for f in files)
    backend = live.runtime.store.backend
    seq = int(files[-1].stem)
    before = files[-1].read_bytes()
    with pytest.raises(ObjectExists):
        backend.put_immutable(witness_key(seq), b"forged", retain_days=1)
    assert files[-1].read_bytes() == before
    record = json.loads(before)
    assert record["format"] == "ghaf-audit-witness" and record["seq"] == seq
    assert len(record["mac"]) == 64


def test_forged_or_unreadable_or_emptied_witness_fails(fresh_platform: MakePlatform) -> None:
    live = _busy(fresh_platform)
    latest = sorted(_witness_dir(live).iterdir())[-1]
    original = latest.read_bytes()
    os.chmod(latest, 0o644)  # an attacker who owns the disk
    record = json.loads(original)
    latest.write_text(json.dumps({**record, "mac": "0" * 64}))
    _broken(live.admin, "bad signature", "forged")
    latest.write_text("not json")
    _broken(live.admin, "unreadable")
    latest.write_text(json.dumps({**record, "seq": record["seq"] - 1}))
    _broken(live.admin, "forged")
    for path in _witness_dir(live).iterdir():
        path.unlink()
    _broken(live.admin, "holds no checkpoint")


def test_rolled_back_checkpoint_is_never_witnessed(platform: Platform) -> None:
    seen: list[tuple[list[int], bool]] = []

    class Recorder:
        def record(self, checkpoints: list[dict[str, Any]]) -> None:
            # runs after the commit: another connection already sees the checkpoint, so
            # the transaction and its locks are gone
            with database.transaction(write=False) as other:
                visible = other.get(AuditCheckpoint, checkpoints[0]["seq"]) is not None
            seen.append(([c["seq"] for c in checkpoints], visible))

    writer = AuditWriter(platform.runtime.keyring, checkpoint_every=1, witness=Recorder())  # type: ignore[arg-type]
    database = platform.runtime.database

    def append(session: Any) -> None:
        writer.append(
            session, action="test:x", resource="r", outcome="success", actor="t",
            actor_id=None, project=None, request_id=None, client=None,
        )  # fmt: skip

    with pytest.raises(RuntimeError), database.transaction() as session:
        append(session)
        raise RuntimeError("rolled back")
    assert seen == []
    with database.transaction() as session:
        append(session)
    assert len(seen) == 1 and seen[0][1] is True


def test_a_failing_witness_never_fails_requests_and_is_retried(
    fresh_platform: MakePlatform,
) -> None:
    live = _busy(fresh_platform)
    witness = live.runtime.audit.witness
    assert witness is not None
    before = witness.witnessed_seq
    real = witness.store.send

    def down(checkpoint: dict[str, Any]) -> None:
        raise ConnectionError("store unreachable")

    witness.store.send = down  # type: ignore[method-assign]
    for _ in range(8):
        live.admin.projects.create(unique("p"))  # crosses two checkpoints
    report = live.admin.audit.verify()
    assert report.ok and any("not yet witnessed" in n for n in report.notes)
    assert witness.witnessed_seq == before
    witness.store.send = real  # type: ignore[method-assign]
    report = live.admin.audit.verify()
    assert report.ok and not report.notes
    assert witness.witnessed_seq > before


def test_periodic_checkpoint_bounds_the_unwitnessed_tail(fresh_platform: MakePlatform) -> None:
    live = fresh_platform(audit_witness_interval_s=0.2)  # every 100 rows otherwise
    live.admin.projects.create(unique("p"))
    tip = live.admin.audit.list()[-1].seq
    deadline = time.monotonic() + 10
    while not (_witness_dir(live) / f"{tip:020d}.json").exists():
        assert time.monotonic() < deadline, "no time-based checkpoint was witnessed"
        time.sleep(0.05)


# --- S3 Object Lock ----------------------------------------------------------------------


def _s3(s3_server: S3Server) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def test_s3_object_lock_witness(fresh_platform: MakePlatform, s3_server: S3Server) -> None:
    s3 = _s3(s3_server)
    bucket = unique("witness-")
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    live = _busy(
        fresh_platform,
        audit_witness_url=f"s3://{bucket}/trail",
        audit_witness_retention_days=1,
        s3_endpoint_url=s3_server.endpoint,
        s3_region="us-east-1",
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )
    anchor = live.admin.audit.verify().witnessed
    assert anchor is not None
    seq = int(anchor.split(":")[0])
    key = f"trail/{witness_key(seq)}"
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE" and head["ObjectLockRetainUntilDate"]
    version = head["VersionId"]
    # In compliance mode the version cannot be deleted, by anyone.
    with pytest.raises(s3.exceptions.ClientError):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    # An overwrite only adds a version, and a plain delete only hides the key: verify
    # reads the first, locked version.
    s3.put_object(Bucket=bucket, Key=key, Body=b'{"format": "forged"}')
    s3.delete_object(Bucket=bucket, Key=key)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=key)
    report = live.admin.audit.verify()
    assert report.ok and report.witnessed == anchor, report.problem
    _tamper(
        live,
        delete(AuditEvent).where(AuditEvent.seq > 3),
        delete(AuditCheckpoint).where(AuditCheckpoint.seq > 3),
        delete(AuditHead),
    )
    _broken(live.admin, "deleted", "witness")


# --- external sinks ------------------------------------------------------------------------


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/checkpoints", received
    server.shutdown()
    server.server_close()


def test_webhook_and_syslog_sinks_receive_checkpoints(
    fresh_platform: MakePlatform, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    syslog.bind(("127.0.0.1", 0))
    syslog.settimeout(5)
    try:
        live = _busy(
            fresh_platform,
            audit_webhook_url=url,
            audit_syslog_address=f"127.0.0.1:{syslog.getsockname()[1]}",
        )
        live.runtime.audit.witness.flush()  # type: ignore[union-attr]
        seqs = [r["seq"] for r in received]
        assert seqs == sorted(seqs) and len(seqs) >= 3
        assert all(r["format"] == "ghaf-audit-witness" and len(r["mac"]) == 64 for r in received)
        assert live.admin.audit.verify().witnessed == f"{seqs[-1]}:{received[-1]['hash']}"
        message = syslog.recv(4096).decode()
        assert message.startswith("<133>1 ") and "audit-checkpoint" in message
        assert '"format":"ghaf-audit-witness"' in message
    finally:
        syslog.close()


# --- rows name projects by id ----------------------------------------------------------


def test_a_reused_project_name_does_not_read_the_old_projects_audit(
    fresh_platform: MakePlatform,
) -> None:
    live = fresh_platform(project_retention_days=0)
    admin = live.admin
    _, owner = live.new_user()
    name = unique("x")
    old_id = owner.projects.create(name).id
    owner.artifacts.upload(name, "confidential/merger-plan.txt", b"secret")
    owner.projects.update(name, description="old")
    old_rows = owner.audit.list(project=name)
    assert len(old_rows) >= 2 and all(e.project_id == old_id for e in old_rows)
    owner.projects.delete(name)
    assert name in admin.projects.purge()
    new_id = owner.projects.create(name).id
    assert new_id != old_id
    rows = owner.audit.list(project=name)
    assert rows and all(e.project_id == new_id and e.project == name for e in rows)
    assert not {e.seq for e in rows} & {e.seq for e in old_rows}
    assert not any("merger-plan" in e.resource for e in rows)
    # the platform admin still sees the old project's rows, by its id
    purged = [e for e in admin.audit.list() if e.project_id == old_id]
    assert {e.seq for e in old_rows} <= {e.seq for e in purged}
    assert all(e.project is None for e in purged)


def test_local_backend_put_immutable_is_atomic(tmp_path: Path) -> None:
    backend = LocalBackend(f"file://{tmp_path}", region="local")
    backend.put_immutable("audit-witness/a.json", b"one", retain_days=1)
    with pytest.raises(ObjectExists):
        backend.put_immutable("audit-witness/a.json", b"two", retain_days=1)
    assert backend.read_immutable("audit-witness/a.json") == b"one"
    assert list(backend.immutable_keys("audit-witness/")) == ["audit-witness/a.json"]
    assert not list((tmp_path / "tmp").iterdir())
