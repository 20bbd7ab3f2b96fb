"""Uploads as one action each: plan, stream the bytes into an encrypted object, commit.

A router, a job runner, the UI or a scheduled task uploads through the same function,
with a :class:`Context` and the content as pieces (``bytes`` from an iterable, or from an
async iterable such as a request body). Nothing is buffered whole:

- the plan authorises and checks residency, then ends its transaction, so none stays
  open while bytes stream (``ctx``'s session is closed and reopened by the commit);
- pieces are regrouped into ~1 MiB (each costs one worker-thread hop); from an async
  source one piece is encrypted and written on a worker thread while the next arrives,
  and a plain iterable is written on one worker thread from start to end;
- the last step seals the object, checks the declared SHA-256 and commits the metadata
  in one hop. Any failure or a disconnect aborts the object: no metadata, no bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from functools import partial
from typing import TypeVar

import anyio.to_thread

from ghaf.core.errors import InvalidInput
from ghaf.security.context import Context
from ghaf.storage import packs, schemas, service
from ghaf.storage.store import PackUpload, Sealing, Upload

PIECE_BYTES = 1 << 20
Chunks = AsyncIterable[bytes] | Iterable[bytes]
"""Content in pieces of any size, in order."""
R = TypeVar("R")


async def upload_artifact(
    ctx: Context,
    project: str,
    path: str,
    chunks: Chunks,
    *,
    sha256: str | None,
    overwrite: bool = False,
) -> schemas.ArtifactOut:
    """Store ``chunks`` at ``path``: visible only once their SHA-256 equals ``sha256``."""
    plan = await _plan(
        ctx, lambda: service.plan_put(ctx, project, path, sha256=sha256, overwrite=overwrite)
    )
    handle = ctx.store.start_upload(project_id=plan.project_id)
    return await _receive(
        handle,
        chunks,
        handle.write,
        seal=partial(_finish_upload, handle, plan.declared_sha256),
        commit=lambda: service.commit_put(ctx, plan, handle),
    )


async def upload_blob(ctx: Context, project: str, sha256: str, chunks: Chunks) -> schemas.BlobOut:
    """Store content addressed only by its SHA-256 (datasets name it in manifests)."""
    plan = await _plan(ctx, lambda: service.plan_blob_put(ctx, project, sha256))
    handle = ctx.store.start_upload(project_id=plan.project_id)
    return await _receive(
        handle,
        chunks,
        handle.write,
        seal=partial(_finish_upload, handle, plan.declared_sha256),
        commit=lambda: service.commit_blob(ctx, plan, handle),
    )


async def upload_pack(ctx: Context, project: str, chunks: Chunks) -> schemas.PackOut:
    """Store many small contents sent as ``application/x-ghaf-pack`` frames
    (docs/storage.md), each checked against its declared SHA-256."""
    plan = await _plan(ctx, lambda: service.plan_pack(ctx, project))
    pack = ctx.store.start_pack(project_id=plan.project_id)
    frames = packs.FrameReader()
    return await _receive(
        pack,
        chunks,
        partial(_add_frames, pack, frames),
        seal=partial(_finish_pack, pack, frames),
        commit=lambda: service.commit_pack(ctx, plan, pack),
    )


async def _plan(ctx: Context, step: Callable[[], R]) -> R:
    """Run ``step`` on a worker thread, then end ``ctx``'s transaction before bytes stream."""

    def run() -> R:
        try:
            return step()
        finally:
            ctx.close()

    return await anyio.to_thread.run_sync(run)


async def _receive(
    sealing: Sealing,
    chunks: Chunks,
    write: Callable[[bytearray], None],
    *,
    seal: Callable[[], None],
    commit: Callable[[], R],
) -> R:
    """Write every piece, ``seal`` the object, then ``commit`` (which cleans up after
    itself); the object is aborted if anything before the commit fails."""
    if not isinstance(chunks, AsyncIterable):
        return await anyio.to_thread.run_sync(
            _receive_in_thread, sealing, _regrouped(chunks), write, seal, commit
        )
    writing: asyncio.Future[None] | None = None
    try:
        async for piece in _regrouped_async(chunks):
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(anyio.to_thread.run_sync(write, piece))
        if writing is not None:
            await writing
    except BaseException:
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
        await anyio.to_thread.run_sync(sealing.abort)
        raise
    return await anyio.to_thread.run_sync(_seal_then_commit, sealing, seal, commit)


def _receive_in_thread(
    sealing: Sealing,
    pieces: Iterator[bytearray],
    write: Callable[[bytearray], None],
    seal: Callable[[], None],
    commit: Callable[[], R],
) -> R:
    try:
        for piece in pieces:
            write(piece)
    except BaseException:
        sealing.abort()
        raise
    return _seal_then_commit(sealing, seal, commit)


def _seal_then_commit(sealing: Sealing, seal: Callable[[], None], commit: Callable[[], R]) -> R:
    try:
        seal()
    except BaseException:
        sealing.abort()
        raise
    return commit()


def _regrouped(chunks: Iterable[bytes]) -> Iterator[bytearray]:
    """~1 MiB pieces; each full piece is handed over as is and a new buffer started."""
    buffer = bytearray()
    for data in chunks:
        buffer += data
        if len(buffer) >= PIECE_BYTES:
            yield buffer
            buffer = bytearray()
    if buffer:
        yield buffer


async def _regrouped_async(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytearray]:
    buffer = bytearray()
    async for data in chunks:
        buffer += data
        if len(buffer) >= PIECE_BYTES:
            yield buffer
            buffer = bytearray()
    if buffer:
        yield buffer


def _finish_upload(handle: Upload, declared_sha256: str) -> None:
    """Seal the last chunk, check the declared hash, make the bytes durable (no DB)."""
    digest = handle.finish()
    if digest != declared_sha256:
        raise InvalidInput(
            f"content does not match the declared sha256: declared {declared_sha256}, "
            f"received {digest} ({handle.size} bytes)",
            field="X-Ghaf-SHA256",
        )
    handle.commit()


def _add_frames(pack: PackUpload, frames: packs.FrameReader, piece: bytes) -> None:
    """Seal each complete frame of ``piece`` into the pack, checking its declared hash."""
    for declared, content in frames.feed(piece):
        member = pack.add(content)
        if member.sha256 != declared:
            raise InvalidInput(
                f"pack member {frames.count - 1} does not match its declared sha256: "
                f"declared {declared}, received {member.sha256} ({member.size} bytes)",
                field="body",
            )


def _finish_pack(pack: PackUpload, frames: packs.FrameReader) -> None:
    """The body is complete and well formed: seal and make the bytes durable (no DB)."""
    frames.close()
    pack.finish()
    pack.commit()
