"""The chain format on plain dicts: every kind of tampering names the first bad row."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ghaf.security.audit.chain import (
    GENESIS_HASH,
    checkpoint_payload,
    head_payload,
    mac,
    parse_anchor,
    row_hash,
    verify_chain,
)

KEY = b"k" * 32


def _chain(
    n: int, *, every: int = 3
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    events, checkpoints, prev = [], [], GENESIS_HASH
    for seq in range(1, n + 1):
        event = {
            "seq": seq,
            "id": f"id{seq}",
            "ts": f"2026-01-01T00:00:{seq:02d}.000000Z",
            "actor": "alice",
            "actor_id": "a1",
            "project": "risk",
            "action": "x:y",
            "resource": f"r/{seq}",
            "outcome": "success",
            "request_id": "rq",
            "client": "127.0.0.1",
            "detail": {"n": seq, "ünï": "✓"},
        }
        event["prev_hash"] = prev
        event["hash"] = prev = row_hash(prev, event)
        events.append(event)
        if seq % every == 0:
            ts = "2026-01-01T00:01:00.000000Z"
            checkpoints.append(
                {
                    "seq": seq,
                    "hash": prev,
                    "ts": ts,
                    "key_version": 1,
                    "mac": mac(KEY, checkpoint_payload(seq, prev, ts, 1)),
                }
            )
    head = {"seq": n, "hash": prev, "key_version": 1, "mac": mac(KEY, head_payload(n, prev))}
    return events, checkpoints, head


def _verify(events: Any, checkpoints: Any, head: Any) -> Any:
    return verify_chain(events, checkpoints, head, lambda v: KEY)


def test_intact_chain_verifies() -> None:
    report = _verify(*_chain(10))
    assert report.ok and report.rows == 10 and report.checkpoints == 3


def test_changed_row() -> None:
    events, checkpoints, head = _chain(10)
    events[4]["resource"] = "forged"
    report = _verify(events, checkpoints, head)
    assert not report.ok and report.first_bad_seq == 5 and "changed" in report.problem


def test_changed_row_with_recomputed_hash_breaks_the_link() -> None:
    events, checkpoints, head = _chain(10)
    events[4]["outcome"] = "denied"
    events[4]["hash"] = row_hash(events[4]["prev_hash"], events[4])
    report = _verify(events, checkpoints, head)
    assert report.first_bad_seq == 6 and "does not follow row 5" in report.problem


def test_deleted_row() -> None:
    events, checkpoints, head = _chain(10)
    del events[3]
    report = _verify(events, checkpoints, head)
    assert report.first_bad_seq == 4 and "deleted" in report.problem


def test_inserted_row() -> None:
    events, checkpoints, head = _chain(10)
    forged = copy.deepcopy(events[2])
    forged["resource"] = "inserted"
    events.insert(3, forged)
    report = _verify(events, checkpoints, head)
    assert report.first_bad_seq == 3 and "inserted" in report.problem


def test_reordered_rows() -> None:
    events, checkpoints, head = _chain(10)
    a, b = events[5], events[6]
    events[5], events[6] = {**b, "seq": 6}, {**a, "seq": 7}
    report = _verify(events, checkpoints, head)
    assert report.first_bad_seq == 6 and not report.ok


def test_truncated_tail_is_caught_by_the_signed_head() -> None:
    events, checkpoints, head = _chain(10)
    report = _verify(events[:8], checkpoints, head)
    assert report.first_bad_seq == 9 and "truncated" in report.problem


def test_truncated_tail_with_forged_head_is_caught_by_checkpoints() -> None:
    events, checkpoints, _ = _chain(10)
    cut = events[:7]
    forged_head = {"seq": 7, "hash": cut[-1]["hash"], "key_version": 1, "mac": "0" * 64}
    report = _verify(cut, checkpoints, forged_head)
    assert not report.ok and "truncated" in report.problem and report.first_bad_seq == 8


def test_forged_checkpoint_signature() -> None:
    events, checkpoints, head = _chain(10)
    checkpoints[0]["mac"] = "f" * 64
    report = _verify(events, checkpoints, head)
    assert "bad signature" in report.problem


def test_without_key_signatures_are_reported_unchecked() -> None:
    report = verify_chain(*_chain(5), lambda v: None)
    assert report.ok and not report.signatures_checked


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_canonical_json_refuses_nan(value: float) -> None:
    from ghaf.security.audit.chain import canonical_json

    with pytest.raises(ValueError):
        canonical_json({"x": value})


# --- the witness, anchors and an initialised trail ---------------------------------------


def _verify_against(events: Any, checkpoints: Any, head: Any, **kwargs: Any) -> Any:
    return verify_chain(events, checkpoints, head, lambda v: KEY, initialised=True, **kwargs)


def test_witness_past_the_end_names_the_deleted_rows() -> None:
    events, checkpoints, _ = _chain(9)
    witness = checkpoints[-1]  # row 9
    kept = [c for c in checkpoints if c["seq"] <= 5]
    cut_head = {"seq": 5, "hash": events[4]["hash"], "key_version": 1}
    cut_head["mac"] = mac(KEY, head_payload(5, events[4]["hash"]))
    report = _verify_against(events[:5], kept, cut_head, witness=witness, witnessed_seqs=[3, 6, 9])
    assert report.first_bad_seq == 6 and "rows 6-9 deleted" in report.problem
    assert report.witnessed == f"9:{witness['hash']}"


def test_witness_checks() -> None:
    events, checkpoints, head = _chain(9)
    assert _verify_against(
        events, checkpoints, head, witness=checkpoints[1], witnessed_seqs=[3, 6]
    ).ok
    forged = {**checkpoints[1], "mac": "0" * 64}
    assert "forged" in _verify_against(events, checkpoints, head, witness=forged).problem
    gone = _verify_against(events, checkpoints[1:], head, witnessed_seqs=[3, 6])
    assert gone.first_bad_seq == 3 and "missing from the database" in gone.problem
    old_head = {"seq": 3, "hash": events[2]["hash"], "key_version": 1}
    old_head["mac"] = mac(KEY, head_payload(3, events[2]["hash"]))
    behind = _verify_against(events, checkpoints, old_head, witness=checkpoints[1])
    assert "older head" in behind.problem


def test_anchor_and_initialised_trail() -> None:
    events, checkpoints, head = _chain(9)
    assert _verify_against(events, checkpoints, head, anchor=(4, events[3]["hash"])).ok
    assert "anchor" in _verify_against(events, checkpoints, head, anchor=(4, "f" * 64)).problem
    assert "truncated" in _verify_against(events, checkpoints, head, anchor=(12, "f" * 64)).problem
    assert "empty" in _verify_against([], [], None).problem
    assert "head" in _verify_against(events, checkpoints, None).problem
    assert verify_chain(events, checkpoints, None, lambda v: KEY).ok  # not an installation's
    with pytest.raises(ValueError):
        parse_anchor("0:" + "a" * 64)
    assert parse_anchor(f" 7:{'a' * 64} ") == (7, "a" * 64)
