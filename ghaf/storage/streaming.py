"""Streaming stored objects out: the one way every download leaves the server.

Stored objects are authenticated chunk by chunk as they are decrypted (see
ghaf/security/envelope.py), so nothing unauthenticated is ever sent. The first chunk is
opened before any header goes out: a tampered small file, or a tampered first chunk, is
then a proper problem response (``StoredObjectCorrupt``, 502) and an audited refusal.
A chunk that fails further in can no longer change the status: the failure is audited
and the connection aborted, so the response ends short of its ``Content-Length``; the
SDK reports the cut-short download and keeps no partial file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import NoReturn
from urllib.parse import quote

import anyio.from_thread
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from ghaf.core.errors import IntegrityFailure, StoredObjectCorrupt
from ghaf.core.metrics import ARTIFACT_BYTES
from ghaf.platform.calls import ServiceCall
from ghaf.security.context import Context
from ghaf.storage import service as storage

log = logging.getLogger("ghaf.server")


async def stream_stored(
    call: ServiceCall,
    open_pieces: Callable[[], Iterable[bytes]],
    *,
    project: str,
    action: str,
    resource: str,
    what: str,
    headers: Mapping[str, str],
    status_code: int = 200,
    media_type: str = "application/octet-stream",
) -> StreamingResponse:
    """A response streaming ``open_pieces()``, whose first piece is authenticated before
    the response starts. An integrity failure is audited as ``action`` on ``resource``
    (outcome denied, with the reason); ``what`` names the object to the caller."""

    def refuse(ctx: Context, error: IntegrityFailure) -> NoReturn:
        storage.refuse_corrupt(ctx, project, action, resource, what, error)

    def start() -> tuple[Iterator[bytes], bytes]:
        pieces = iter(open_pieces())  # unwraps the data key: may fail too
        return pieces, next(pieces, b"")

    try:
        pieces, first = await run_in_threadpool(start)
    except IntegrityFailure as exc:
        await call(refuse, exc)
        raise  # refuse always raises; for the type checker

    def body() -> Iterator[bytes]:
        yield first
        try:
            yield from pieces
        except IntegrityFailure as exc:
            # Headers are out: audit, then abort the connection (never wrong bytes).
            try:
                anyio.from_thread.run(partial(call, refuse, exc))
            except StoredObjectCorrupt as corrupt:
                log.error("aborting the response: %s", corrupt.detail)
            raise

    return StreamingResponse(
        count_sent(body()), status_code=status_code, headers=dict(headers), media_type=media_type
    )


def count_sent(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``pieces``, counting what the client was sent as artifact bytes out (once, when
    the body ends: completed, cut short or abandoned by the client)."""
    iterator = iter(pieces)
    sent = 0
    try:
        for piece in iterator:
            yield piece
            sent += len(piece)
    finally:
        ARTIFACT_BYTES.inc(sent, value="out")
        close = getattr(iterator, "close", None)
        if close is not None:
            close()  # as ``yield from`` would: the source's own cleanup runs now


def content_disposition(filename: str) -> str:
    """``attachment`` naming ``filename`` safely: an ASCII fallback in quotes (nothing
    that could end the quoted string or the header) and the exact name as RFC 5987
    ``filename*``. The SDK does not trust either: it checks the name itself."""
    fallback = "".join(
        ch if (ch.isascii() and ch.isalnum()) or ch in "._-" else "_" for ch in filename
    )
    exact = quote(filename, safe="")
    return f"attachment; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{exact}"


def refuse_in_stream(
    call: ServiceCall, project: str, resource: str, what: str, error: IntegrityFailure
) -> StoredObjectCorrupt:
    """From inside a streamed body (a worker thread): audit an integrity failure of an
    object of ``project``'s store, and return the problem for the body to report in-band."""
    try:
        anyio.from_thread.run(
            partial(call, storage.refuse_corrupt, project, "artifact:read", resource, what, error)
        )
    except StoredObjectCorrupt as corrupt:
        return corrupt
    return storage.corrupt(what, error)  # pragma: no cover - refuse_corrupt always raises
