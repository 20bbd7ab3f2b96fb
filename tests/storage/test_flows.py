"""Uploads called in-process, as a job runner or the UI would: a Context, no HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ghaf.client import Client
from ghaf.core.errors import InvalidInput, PermissionDenied
from ghaf.storage import flows, packs
from tests.conftest import Platform, unique


def _object_files(platform: Platform) -> set[Path]:
    root = platform.settings.artifacts_dir
    return {p for p in root.rglob("*") if p.is_file() and "audit-witness" not in p.parts}


def _stored_nothing(platform: Platform, before: set[Path]) -> None:
    """No file is new, and no stored object is gone. (A temporary file of a concurrent
    writer, such as the audit witness's, may come and go meanwhile.)"""
    after = _object_files(platform)
    assert after - before == set()
    assert {p for p in before if "objects" in p.parts} <= after


def _pieces(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def test_upload_artifact_from_an_iterable(platform: Platform, admin: Client, project: str) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # several pieces, sent in odd-sized chunks
    with platform.context_as(admin) as ctx:
        stored = asyncio.run(
            flows.upload_artifact(
                ctx,
                project,
                "flows/model.bin",
                _pieces(data, 70_001),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    assert (stored.path, stored.size) == ("flows/model.bin", len(data))
    assert admin.artifacts.read(project, "flows/model.bin") == data
    assert admin.artifacts.get(project, "flows/model.bin").created_by == stored.created_by


def test_upload_artifact_from_an_async_source(
    platform: Platform, admin: Client, project: str
) -> None:
    data = os.urandom(2 * (1 << 20) + 5)

    async def source() -> AsyncIterator[bytes]:
        for piece in _pieces(data, 300_000):
            await asyncio.sleep(0)
            yield piece

    with platform.context_as(admin) as ctx:
        stored = asyncio.run(
            flows.upload_artifact(
                ctx, project, "a.bin", source(), sha256=hashlib.sha256(data).hexdigest()
            )
        )
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert admin.artifacts.read(project, "a.bin") == data


def test_a_wrong_hash_stores_nothing(platform: Platform, admin: Client, project: str) -> None:
    before = _object_files(platform)
    with platform.context_as(admin) as ctx, pytest.raises(InvalidInput) as info:
        asyncio.run(
            flows.upload_artifact(ctx, project, "bad.bin", [b"abc", b"def"], sha256="0" * 64)
        )
    assert info.value.field == "X-Ghaf-SHA256"
    _stored_nothing(platform, before)
    assert admin.artifacts.list(project) == []


def test_the_flow_authorises(platform: Platform, admin: Client, project: str) -> None:
    viewer, client = platform.new_user()
    admin.members.add(project, principal=viewer.name, role="viewer")
    before = _object_files(platform)
    with platform.context_as(client) as ctx, pytest.raises(PermissionDenied):
        asyncio.run(
            flows.upload_artifact(
                ctx, project, "v.bin", [b"v"], sha256=hashlib.sha256(b"v").hexdigest()
            )
        )
    _stored_nothing(platform, before)
    refused = [e for e in admin.audit.list(project=project) if e.outcome == "denied"]
    assert any(e.action == "artifact:write" and e.actor == viewer.name for e in refused)


def test_no_transaction_stays_open_while_bytes_stream(
    platform: Platform, admin: Client, project: str
) -> None:
    """Between the plan and the commit another writer gets through at once (on SQLite a
    held write transaction would make it wait for the whole upload)."""
    data = b"slow upload"
    other = unique("p")

    async def slow() -> AsyncIterator[bytes]:
        yield data[:4]
        # Bounded: a writer waiting on a held lock would block past this.
        await asyncio.wait_for(asyncio.to_thread(admin.projects.create, other), 10)
        yield data[4:]

    with platform.context_as(admin) as ctx:
        asyncio.run(
            flows.upload_artifact(
                ctx, project, "slow.bin", slow(), sha256=hashlib.sha256(data).hexdigest()
            )
        )
    assert admin.projects.get(other).name == other
    assert admin.artifacts.read(project, "slow.bin") == data


def test_upload_blob_and_pack(platform: Platform, admin: Client, project: str) -> None:
    blob = os.urandom(4096)
    small = [os.urandom(n) for n in (1, 100, 5000)]
    body = b"".join(packs.frame_header(hashlib.sha256(c).hexdigest(), len(c)) + c for c in small)
    with platform.context_as(admin) as ctx:
        out = asyncio.run(flows.upload_blob(ctx, project, hashlib.sha256(blob).hexdigest(), [blob]))
        pack = asyncio.run(flows.upload_pack(ctx, project, _pieces(body, 333)))
    assert (out.sha256, out.size) == (hashlib.sha256(blob).hexdigest(), len(blob))
    assert (pack.members, pack.stored) == (3, 3)
    hashes = [hashlib.sha256(c).hexdigest() for c in small]
    assert dict(admin.artifacts.fetch_pack(project, hashes)) == dict(zip(hashes, small))


def test_a_truncated_pack_stores_nothing(platform: Platform, admin: Client, project: str) -> None:
    content = b"x" * 100
    frame = packs.frame_header(hashlib.sha256(content).hexdigest(), len(content)) + content
    before = _object_files(platform)
    with platform.context_as(admin) as ctx, pytest.raises(InvalidInput):
        asyncio.run(flows.upload_pack(ctx, project, [frame[:-1]]))
    _stored_nothing(platform, before)
    assert admin.artifacts.present(project, [hashlib.sha256(content).hexdigest()]) == set()
