"""The audit chain format: canonical JSON, row hashes, signed checkpoints, verification.

Pure functions over plain dicts, so the same code verifies the database and an exported
JSONL file. docs/security.md specifies the format for independent verifiers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

GENESIS_HASH = "0" * 64
EVENT_FIELDS = (
    "seq", "id", "ts", "actor", "actor_id", "project", "action", "resource", "outcome",
    "request_id", "client", "detail",
)  # fmt: skip


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, no NaN: one byte string per value."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def row_hash(prev_hash: str, event: dict[str, Any]) -> str:
    """SHA-256 over the previous row's hex hash followed by this row's canonical JSON."""
    body = {name: event[name] for name in EVENT_FIELDS}
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(body)).hexdigest()


def checkpoint_payload(seq: int, chain_hash: str, ts: str, key_version: int) -> bytes:
    return canonical_json(
        {"kind": "checkpoint", "seq": seq, "hash": chain_hash, "ts": ts, "key_version": key_version}
    )


def head_payload(seq: int, chain_hash: str) -> bytes:
    return canonical_json({"kind": "head", "seq": seq, "hash": chain_hash})


def mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


KeyLookup = Callable[[int], bytes | None]
"""Returns the audit key of a version, or None when the verifier has no keys."""


@dataclass
class VerifyReport:
    """The outcome of a verification. ``first_bad_seq`` names the first broken row."""

    ok: bool = True
    rows: int = 0
    checkpoints: int = 0
    last_seq: int = 0
    first_bad_seq: int | None = None
    problem: str | None = None
    signatures_checked: bool = True
    notes: list[str] = field(default_factory=list)
    witnessed: str | None = None
    """``SEQ:HASH`` of the newest witnessed checkpoint: keep it elsewhere as an anchor."""
    witness: str | None = None
    anchor: str | None = None

    def fail(self, seq: int | None, problem: str) -> VerifyReport:
        self.ok = False
        self.first_bad_seq = seq
        self.problem = problem
        return self


def _rows(first: int, last: int) -> str:
    return f"row {first}" if first == last else f"rows {first}-{last}"


def parse_anchor(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` (as verify prints it) -> (seq, hash); raises ValueError."""
    seq, sep, chain_hash = text.strip().partition(":")
    if not (sep and seq.isdigit() and int(seq) >= 1 and re.fullmatch(r"[0-9a-f]{64}", chain_hash)):
        raise ValueError(f"anchor {text!r} is not SEQ:HASH (a row number and 64 hex digits)")
    return int(seq), chain_hash


def verify_chain(
    events: Iterable[dict[str, Any]],
    checkpoints: Iterable[dict[str, Any]],
    head: dict[str, Any] | None,
    key_for: KeyLookup,
    *,
    initialised: bool = False,
    witness: dict[str, Any] | None = None,
    witnessed_seqs: Sequence[int] = (),
    anchor: tuple[int, str] | None = None,
) -> VerifyReport:
    """Check every row links to the one before, then the witness, the anchor, the
    checkpoints and the signed head.

    ``events`` must come in ascending ``seq`` order, each with ``prev_hash`` and ``hash``.
    ``initialised``: the trail is an installation's, which always records its own init,
    so an empty trail or a missing head is a failure. ``witness``: the newest checkpoint
    read back from the witness, ``witnessed_seqs`` every seq the witness holds.
    ``anchor``: a (seq, hash) kept elsewhere; that row must exist with that hash.
    """
    report = VerifyReport()
    hashes: dict[int, str] = {}
    checkpoints = list(checkpoints)
    wanted = {int(c["seq"]) for c in checkpoints}
    if witness is not None:
        wanted.add(int(witness["seq"]))
        report.witnessed = f"{int(witness['seq'])}:{witness['hash']}"
    if anchor is not None:
        wanted.add(anchor[0])
        report.anchor = f"{anchor[0]}:{anchor[1]}"
    expected_seq, expected_prev = 1, GENESIS_HASH
    for event in events:
        seq = int(event["seq"])
        if seq > expected_seq:
            missing = (
                f"row {expected_seq}"
                if seq == expected_seq + 1
                else (f"rows {expected_seq}-{seq - 1}")
            )
            return report.fail(expected_seq, f"{missing} deleted: the chain jumps to row {seq}")
        if seq < expected_seq:
            return report.fail(seq, f"row {seq} appears twice or out of order (inserted)")
        if event["prev_hash"] != expected_prev:
            return report.fail(
                seq,
                f"row {seq} does not follow row {seq - 1}: a row was inserted, deleted or "
                "reordered here, or the row before was rewritten",
            )
        if row_hash(event["prev_hash"], event) != event["hash"]:
            return report.fail(
                seq, f"row {seq} was changed: its content no longer matches its hash"
            )
        if seq in wanted:
            hashes[seq] = event["hash"]
        expected_prev, expected_seq = event["hash"], seq + 1
        report.rows += 1
        report.last_seq = seq

    last = report.last_seq
    if initialised and last == 0:
        return report.fail(
            1,
            "the trail is empty: every row is missing (an initialised installation always "
            "records its own init)",
        )
    if witness is not None:
        seq, version = int(witness["seq"]), int(witness["key_version"])
        key = key_for(version)
        if key is None:
            report.signatures_checked = False
        elif not hmac.compare_digest(
            mac(key, checkpoint_payload(seq, witness["hash"], witness["ts"], version)),
            str(witness["mac"]),
        ):
            return report.fail(
                seq, f"the witnessed checkpoint at row {seq} has a bad signature (forged)"
            )
        if seq > last:
            return report.fail(
                last + 1,
                f"{_rows(last + 1, seq)} deleted (truncated): the trail ends at row {last} "
                f"but the witness holds a signed checkpoint at row {seq}",
            )
        if hashes.get(seq) != witness["hash"]:
            return report.fail(
                seq,
                f"row {seq} differs from the witnessed checkpoint: the trail up to row {seq} "
                "was rewritten",
            )
    stored = {int(c["seq"]) for c in checkpoints}
    gone = [seq for seq in witnessed_seqs if seq <= last and seq not in stored]
    if gone:
        shown = ", ".join(str(s) for s in gone[:10]) + (", ..." if len(gone) > 10 else "")
        return report.fail(
            gone[0],
            f"{len(gone)} checkpoint(s) the witness holds are missing from the database "
            f"(deleted): at rows {shown}",
        )
    if anchor is not None:
        seq, anchor_hash = anchor
        if seq > last:
            return report.fail(
                last + 1,
                f"{_rows(last + 1, seq)} deleted (truncated): the anchor names row {seq} but "
                f"the trail ends at row {last}",
            )
        if hashes.get(seq) != anchor_hash:
            return report.fail(
                seq,
                f"row {seq} does not match the anchor: the trail up to row {seq} was "
                "rewritten, or the anchor is wrong",
            )

    for checkpoint in sorted(checkpoints, key=lambda c: int(c["seq"])):
        seq = int(checkpoint["seq"])
        key = key_for(int(checkpoint["key_version"]))
        if key is None:
            report.signatures_checked = False
        elif not hmac.compare_digest(
            mac(
                key,
                checkpoint_payload(
                    seq, checkpoint["hash"], checkpoint["ts"], int(checkpoint["key_version"])
                ),
            ),
            checkpoint["mac"],
        ):
            return report.fail(
                seq, f"checkpoint at row {seq} has a bad signature (forged or altered)"
            )
        if seq > report.last_seq:
            return report.fail(
                report.last_seq + 1,
                f"the trail ends at row {report.last_seq} but a signed checkpoint covers row "
                f"{seq}: rows {report.last_seq + 1}-{seq} were deleted (truncated)",
            )
        if hashes.get(seq) != checkpoint["hash"]:
            return report.fail(seq, f"row {seq} differs from its signed checkpoint (rewritten)")
        report.checkpoints += 1

    if head is None and initialised:
        return report.fail(
            None,
            "the chain head (the signed audit_head row) is missing: it was deleted, so the "
            "trail's end cannot be checked",
        )
    if head is not None:
        seq = int(head["seq"])
        key = key_for(int(head.get("key_version", 1)))
        if key is None:
            report.signatures_checked = False
        elif not hmac.compare_digest(mac(key, head_payload(seq, head["hash"])), head["mac"]):
            return report.fail(None, "the chain head has a bad signature (forged or altered)")
        if seq > report.last_seq:
            return report.fail(
                report.last_seq + 1,
                f"the trail ends at row {report.last_seq} but the signed head says row {seq} "
                f"exists: rows {report.last_seq + 1}-{seq} were deleted (truncated)",
            )
        if witness is not None and seq < int(witness["seq"]):
            return report.fail(
                seq + 1,
                f"the signed head is at row {seq}, behind the witnessed checkpoint at row "
                f"{int(witness['seq'])}: an older head was put back",
            )
        if seq < report.last_seq:
            return report.fail(seq + 1, f"rows after {seq} were appended outside ghaf (inserted)")
        if seq and head["hash"] != expected_prev:
            return report.fail(seq, f"row {seq} differs from the signed head (rewritten)")
    if not report.signatures_checked:
        report.notes.append("no audit key given: signatures were not checked")
    return report
