"""Appending to, reading, verifying and exporting the audit trail."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.orm.util import identity_key

from ghaf.core.clock import as_utc, isoformat, utcnow
from ghaf.core.ids import new_id
from ghaf.core.paging import paginate
from ghaf.security.audit.chain import (
    EVENT_FIELDS,
    GENESIS_HASH,
    VerifyReport,
    checkpoint_payload,
    head_payload,
    mac,
    parse_anchor,
    row_hash,
    verify_chain,
)
from ghaf.security.audit.models import AuditCheckpoint, AuditEvent, AuditHead
from ghaf.security.audit.schemas import AuditEventOut
from ghaf.security.keyring import Keyring

if TYPE_CHECKING:
    from ghaf.security.audit.witness import AuditWitness
    from ghaf.security.context import Context

AUDIT_KEY = "audit"
SUCCESS = "success"
DENIED = "denied"
_BATCH = 1000
_EVENTS = cast(Table, AuditEvent.__table__)
_HEAD = cast(Table, AuditHead.__table__)
# Every audited write runs these three statements. Built once, against the tables rather
# than the mapped classes: an ORM-enabled UPDATE costs a bulk-update compile state, an
# identity-map evaluator and an autoflush each time, several times the statement itself
# (py-spy, bench/tracking.py (e): a third of a write request's server CPU).
_BUMP_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(seq=_HEAD.c.seq + 1)
    .returning(_HEAD.c.seq, _HEAD.c.hash)
)
_INSERT_EVENT = insert(_EVENTS)
_HEAD_IDENTITY = identity_key(AuditHead, 1)
_SEAL_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(hash=bindparam("new_hash"), key_version=bindparam("new_key"), mac=bindparam("new_mac"))
)
_STASH = "ghaf_audit_witness"  # session.info: checkpoints to witness once committed
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
log = logging.getLogger("ghaf.audit")


class AuditWriter:
    """Appends hash-chained rows inside the caller's transaction."""

    def __init__(
        self,
        keyring: Keyring,
        *,
        checkpoint_every: int = 100,
        witness: AuditWitness | None = None,
    ) -> None:
        self.keyring = keyring
        self.checkpoint_every = checkpoint_every
        self.witness = witness
        self._key = keyring.get(AUDIT_KEY)

    def key_for(self, version: int) -> bytes | None:
        return self.keyring.get(AUDIT_KEY, version).material

    def append(
        self,
        session: Session,
        *,
        action: str,
        resource: str,
        outcome: str,
        actor: str | None,
        actor_id: str | None,
        project: str | None,
        request_id: str | None,
        client: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        # Bumping the head row first takes its row lock (PostgreSQL) or the write lock
        # (SQLite), so concurrent appenders, in any process, queue here in seq order.
        # Core statements on the session's own connection: the same transaction, with
        # no ORM work (what the session holds is flushed at commit, as before).
        if session.autoflush:
            session.flush()  # as an ORM statement would: pending rows go first, in order
        connection = session.connection()
        seq, prev_hash = connection.execute(_BUMP_HEAD).one()
        ts = utcnow()
        event = {
            "seq": seq, "id": new_id(), "ts": isoformat(ts), "actor": actor,
            "actor_id": actor_id, "project": project, "action": action,
            "resource": resource, "outcome": outcome, "request_id": request_id,
            "client": client, "detail": _plain(detail or {}),
        }  # fmt: skip
        chain_hash = row_hash(prev_hash, event)
        row = {**event, "ts": ts, "prev_hash": prev_hash, "hash": chain_hash}
        connection.execute(_INSERT_EVENT, row)
        connection.execute(
            _SEAL_HEAD,
            {
                "new_hash": chain_hash,
                "new_key": self._key.version,
                "new_mac": mac(self._key.material, head_payload(seq, chain_hash)),
            },
        )
        loaded = session.identity_map.get(_HEAD_IDENTITY)
        if loaded is not None:
            session.expire(loaded)  # a head this session read before is stale now
        if seq % self.checkpoint_every == 0:
            self._add_checkpoint(session, seq, chain_hash)

    def checkpoint(self, session: Session) -> int | None:
        """Sign the current tip (on shutdown, periodically, at init) unless a checkpoint
        is there already; either way the tip's checkpoint is witnessed once the session
        commits. Returns its seq, or None if the chain is empty."""
        head = session.execute(
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(seq=AuditHead.seq)
            .returning(AuditHead.seq, AuditHead.hash)
        ).one()
        seq, chain_hash = head
        if seq == 0:
            return None
        existing = session.get(AuditCheckpoint, seq)
        if existing is None:
            self._add_checkpoint(session, seq, chain_hash)
        else:
            self._stash(session, checkpoint_dict(existing))
        return int(seq)

    def _add_checkpoint(self, session: Session, seq: int, chain_hash: str) -> None:
        ts = isoformat(utcnow())
        payload = checkpoint_payload(seq, chain_hash, ts, self._key.version)
        row = {
            "seq": seq,
            "hash": chain_hash,
            "ts": ts,
            "key_version": self._key.version,
            "mac": mac(self._key.material, payload),
        }
        session.add(AuditCheckpoint(**{**row, "ts": datetime.fromisoformat(ts)}))
        self._stash(session, row)

    def _stash(self, session: Session, checkpoint: dict[str, Any]) -> None:
        """Hand ``checkpoint`` to the witness after the session commits (never for a
        rolled-back one, and never while the transaction holds its locks)."""
        if self.witness is None:
            return
        stash = session.info.get(_STASH)
        if stash is None:
            stash = session.info[_STASH] = []
            if not session.info.get(_STASH + ".hooked"):
                session.info[_STASH + ".hooked"] = True
                orm_event.listen(session, "after_commit", self._after_commit)
                orm_event.listen(session, "after_transaction_end", _discard_stash)
        stash.append(checkpoint)

    def _after_commit(self, session: Session) -> None:
        checkpoints = session.info.pop(_STASH, None)
        if checkpoints and self.witness is not None:
            try:
                self.witness.record(checkpoints)
            except Exception:  # the commit stands; the next checkpoint retries
                log.exception("queueing audit checkpoints for the witness failed")


def _discard_stash(session: Session, transaction: SessionTransaction) -> None:
    """A transaction that ended without a commit takes its checkpoints with it."""
    if transaction.parent is None:
        session.info.pop(_STASH, None)


def initialise_head(session: Session, keyring: Keyring) -> None:
    """Create the empty chain's signed head (idempotent)."""
    if session.get(AuditHead, 1) is not None:
        return
    key = keyring.ensure(AUDIT_KEY)
    session.add(
        AuditHead(
            id=1,
            seq=0,
            hash=GENESIS_HASH,
            key_version=key.version,
            mac=mac(key.material, head_payload(0, GENESIS_HASH)),
        )
    )


def _plain(detail: dict[str, Any]) -> dict[str, Any]:
    """Detail values restricted to what canonical JSON renders the same everywhere."""
    out: dict[str, Any] = {}
    for key, value in detail.items():
        if value is None or isinstance(value, bool | int | str):
            out[str(key)] = value
        elif isinstance(value, list | tuple):
            out[str(key)] = [v if isinstance(v, bool | int | str) else str(v) for v in value]
        else:
            out[str(key)] = str(value)
    return out


def event_dict(row: AuditEvent) -> dict[str, Any]:
    """A row as the chain sees it (canonical field values)."""
    out = {name: getattr(row, name) for name in EVENT_FIELDS}
    out["ts"] = isoformat(row.ts)
    out["prev_hash"] = row.prev_hash
    out["hash"] = row.hash
    return out


def checkpoint_dict(row: AuditCheckpoint) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "hash": row.hash,
        "ts": isoformat(row.ts),
        "key_version": row.key_version,
        "mac": row.mac,
    }


def _iter_events(session: Session) -> Iterator[dict[str, Any]]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(_BATCH)
        ).all()
        if not rows:
            return
        for row in rows:
            yield event_dict(row)
        last = rows[-1].seq
        session.expunge_all()


def _head_dict(session: Session) -> dict[str, Any] | None:
    head = session.get(AuditHead, 1)
    if head is None:
        return None
    return {"seq": head.seq, "hash": head.hash, "key_version": head.key_version, "mac": head.mac}


def verify_database(
    session: Session, writer: AuditWriter, *, anchor: tuple[int, str] | None = None
) -> VerifyReport:
    """Recompute the whole chain stored in the database, against the witness (read
    first, so that checkpoints committed meanwhile are in the rows read after) and an
    optional anchor."""
    view = writer.witness.view() if writer.witness is not None else None
    if view is not None and view.problem is not None:
        report = VerifyReport(witness=view.location)
        return report.fail(None, view.problem)
    checkpoints = [
        checkpoint_dict(c)
        for c in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))
    ]
    head = _head_dict(session)
    report = verify_chain(
        _iter_events(session),
        checkpoints,
        head,
        writer.key_for,
        initialised=True,
        witness=view.latest if view else None,
        witnessed_seqs=view.seqs if view else (),
        anchor=anchor,
    )
    if view is not None:
        report.witness = view.location
        if report.ok and view.latest is None:
            return report.fail(
                None,
                f"the witness at {view.location} holds no checkpoint: it was emptied, or "
                "never written (see the server log)",
            )
        if view.unsent:
            report.notes.append(f"checkpoints not yet witnessed (will retry): {view.unsent}")
    return report


# --- entry points used by the API (authorised through the context) -----------------


def list_events(
    ctx: Context,
    *,
    project: str | None,
    since: datetime | None,
    actor: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[AuditEventOut], str | None]:
    """Events in chain order. Project maintainers read their project's events;
    platform admins read everything."""
    statement = select(AuditEvent)
    if project is not None:
        # Rows name projects by id: a new project reusing a purged one's name sees none
        # of the old project's rows.
        pctx = ctx.in_project(project)
        pctx.require("audit:read", resource=f"project/{project}/audit")
        assert pctx.project is not None
        statement = statement.where(AuditEvent.project == pctx.project.id)
    else:
        ctx.require("audit:read", resource="audit")
    if since is not None:
        statement = statement.where(AuditEvent.ts >= since)
    if actor is not None:
        statement = statement.where(AuditEvent.actor == actor)
    rows, next_cursor = paginate(
        ctx.session, statement, key=AuditEvent.seq, limit=limit, cursor=cursor
    )
    names = _project_names(ctx.session, {r.project for r in rows if r.project})
    return [event_out(r, names) for r in rows], next_cursor


def _project_names(session: Session, ids: set[str]) -> dict[str, str]:
    from ghaf.security.tenancy import Project

    ids = {i for i in ids if _UUID.fullmatch(i)}
    if not ids:
        return {}
    return dict(session.execute(select(Project.id, Project.name).where(Project.id.in_(ids))).all())


def event_out(row: AuditEvent, names: dict[str, str] | None = None) -> AuditEventOut:
    """``project_id`` as recorded; ``project`` the project's current name where it still
    exists (rows written before ids were recorded hold the name itself)."""
    value = row.project
    is_id = value is not None and _UUID.fullmatch(value) is not None
    return AuditEventOut(
        seq=row.seq,
        id=row.id,
        ts=as_utc(row.ts),
        actor=row.actor,
        project=(names or {}).get(value) if is_id and value else value,
        project_id=value if is_id else None,
        action=row.action,
        resource=row.resource,
        outcome=row.outcome,
        request_id=row.request_id,
        client=row.client,
        detail=row.detail,
        hash=row.hash,
    )


def anchor_of(text: str | None) -> tuple[int, str] | None:
    from ghaf.core.errors import InvalidInput

    if text is None or not text.strip():
        return None
    try:
        return parse_anchor(text)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="anchor") from None


def verify(ctx: Context, *, anchor: str | None = None) -> VerifyReport:
    ctx.require("audit:verify", resource="audit")
    return verify_database(ctx.session, ctx.audit_writer, anchor=anchor_of(anchor))


def export_lines(ctx: Context) -> Iterator[str]:
    """The whole trail as JSONL: events, each checkpoint after the row it covers, head."""
    ctx.require("audit:verify", resource="audit")
    session = ctx.session
    checkpoints = {c.seq: checkpoint_dict(c) for c in session.scalars(select(AuditCheckpoint))}
    head = _head_dict(session)

    def lines() -> Iterator[str]:
        yield json.dumps({"type": "format", "name": "ghaf-audit", "version": 1})
        for event in _iter_events(session):
            yield json.dumps({"type": "event", **event}, ensure_ascii=False)
            if event["seq"] in checkpoints:
                yield json.dumps({"type": "checkpoint", **checkpoints.pop(event["seq"])})
        # Checkpoints whose row is gone still go out, so the verifier sees the gap.
        for seq in sorted(checkpoints):
            yield json.dumps({"type": "checkpoint", **checkpoints[seq]})
        if head is not None:
            yield json.dumps({"type": "head", **head})

    return lines()


def verify_export(
    lines: Iterator[str], key_for: Any, *, anchor: tuple[int, str] | None = None
) -> VerifyReport:
    """Verify an exported JSONL trail (outside the server); an export always holds its
    head and at least the installation's own init. ``anchor``: a (seq, hash) kept
    elsewhere, e.g. the ``witnessed`` value an earlier verify printed."""
    events: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []
    head: dict[str, Any] | None = None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind = record.pop("type")
        except (ValueError, KeyError, AttributeError):
            return VerifyReport().fail(None, f"line {number} is not an audit export record")
        if kind == "event":
            events.append(record)
        elif kind == "checkpoint":
            checkpoints.append(record)
        elif kind == "head":
            head = record
    return verify_chain(events, checkpoints, head, key_for, initialised=True, anchor=anchor)
