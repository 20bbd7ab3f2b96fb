"""REST routes of the artifact store: streaming uploads and downloads, with HTTP Range."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ghaf.core.errors import GhafError, IntegrityFailure
from ghaf.core.paging import Page
from ghaf.platform.calls import DEFAULT_PAGE, Call, Cursor, Limit, ReadCall, ServiceCall
from ghaf.platform.uploads import allow_upload
from ghaf.storage import packs, schemas, service
from ghaf.storage.store import Sealing, Store, Upload
from ghaf.storage.streaming import refuse_in_stream, stream_stored

router = APIRouter(tags=["artifacts"])
log = logging.getLogger("ghaf.storage")
PIECE_BYTES = 1 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(GhafError):
    status = 416
    code = "range-not-satisfiable"
    title = "Range not satisfiable"


async def _pieces(request: Request) -> AsyncIterator[bytearray]:
    """The request body regrouped into ~1 MiB pieces (one worker-thread hop each).

    Each piece is handed over as is and a new buffer started, rather than copied.
    """
    allow_upload(request)  # streamed: max_upload_bytes, not the JSON body limit
    buffer = bytearray()
    async for data in request.stream():
        buffer += data
        if len(buffer) >= PIECE_BYTES:
            yield buffer
            buffer = bytearray()
    if buffer:
        yield buffer


async def _receive(
    request: Request,
    handle: Sealing,
    write: Callable[[bytearray], None],
    finish: Callable[[], None],
) -> None:
    """Stream the body into an encrypted object; abort it on any failure or disconnect.

    One piece is written on a worker thread while the next is received, so the network
    and the disk work at the same time; pieces are still written in order.
    """
    writing: asyncio.Future[None] | None = None
    try:
        async for piece in _pieces(request):
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(run_in_threadpool(write, piece))
        if writing is not None:
            await writing
        await run_in_threadpool(finish)
    except BaseException:
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
        await run_in_threadpool(handle.abort)
        raise


async def _receive_one(request: Request, store: Store, plan: service.PutPlan) -> Upload:
    handle = store.start_upload(project_id=plan.project_id)
    await _receive(request, handle, handle.write, partial(service.finish_upload, handle, plan))
    return handle


def _binary_body(media_type: str, description: str) -> dict[str, Any]:
    """OpenAPI for a streamed body the route reads itself."""
    schema = {"type": "string", "format": "binary", "description": description}
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


@router.put(
    "/projects/{name}/artifacts/{path:path}",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_binary_body("application/octet-stream", "The content, streamed."),
)
async def put_artifact(
    call: Call,
    request: Request,
    name: str,
    path: str,
    overwrite: bool = False,
    x_ghaf_sha256: Annotated[str | None, Header(description="SHA-256 of the content.")] = None,
) -> schemas.ArtifactOut:
    """Upload the request body (streamed) to ``path``; visible only once verified."""
    store = call.store
    plan = await call(
        service.plan_put, store, name, path, sha256=x_ghaf_sha256, overwrite=overwrite
    )
    handle = await _receive_one(request, store, plan)
    return await call(service.commit_put, store, plan, handle)


@router.put(
    "/projects/{name}/blobs/{sha256}",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_binary_body("application/octet-stream", "The content, streamed."),
)
async def put_blob(call: Call, request: Request, name: str, sha256: str) -> schemas.BlobOut:
    """Upload content addressed only by its SHA-256 (for manifests such as datasets)."""
    store = call.store
    plan = await call(service.plan_blob_put, store, name, sha256)
    handle = await _receive_one(request, store, plan)
    return await call(service.commit_blob, store, plan, handle)


@router.post(
    "/projects/{name}/blobs:pack",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_binary_body(
        packs.MEDIA_TYPE,
        "Frames of 32-byte SHA-256, 8-byte big-endian size, then the bytes (docs/storage.md).",
    ),
)
async def put_pack(call: Call, request: Request, name: str) -> schemas.PackOut:
    """Upload many small contents in one body of ``application/x-ghaf-pack`` frames
    (see docs/storage.md); each is checked against its declared SHA-256."""
    store = call.store
    plan = await call(service.plan_pack, store, name)
    pack = store.start_pack(project_id=plan.project_id)
    frames = packs.FrameReader()
    await _receive(
        request,
        pack,
        partial(service.add_frames, pack, frames),
        partial(service.finish_pack, pack, frames),
    )
    return await call(service.commit_pack, store, plan, pack)


@router.post("/projects/{name}/blobs:fetch")
async def fetch_blobs(call: ReadCall, name: str, body: schemas.BlobQuery) -> Response:
    """Many contents by SHA-256 as one stream of pack frames (in storage order)."""
    store = call.store
    opened = await call(service.open_blobs, store, name, body.sha256)

    def frames() -> Iterator[bytes]:
        for found in opened:
            members = store.read_many(found.slices, data_key=found.data_key)
            for sha256, where in zip(found.hashes, found.slices, strict=True):
                try:
                    # Whole members only: a failure is then reported in-band, never
                    # as a response cut off halfway through a member.
                    content = next(members)
                except GhafError as exc:
                    log.error("fetch of %s failed: %s", sha256, exc.detail)
                    if isinstance(exc, IntegrityFailure):
                        resource = f"project/{name}/blob/{sha256}"
                        exc = refuse_in_stream(call, name, resource, f"blob {sha256}", exc)
                    yield packs.error_frame(exc)
                    return
                yield packs.frame_header(sha256, where.size) + content

    return StreamingResponse(_regroup(frames()), media_type=packs.MEDIA_TYPE)


def _regroup(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """~1 MiB pieces: each one the server sends costs a worker-thread hop."""
    buffer = bytearray()
    for piece in pieces:
        buffer += piece
        if len(buffer) >= PIECE_BYTES:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


@router.get("/projects/{name}/blobs/{sha256}")
async def get_blob(call: Call, name: str, sha256: str) -> Response:
    """Content by SHA-256, streamed and authenticated chunk by chunk."""
    opened = await call(service.open_blob, call.store, name, sha256)
    return await _stream(call, opened, None, project=name, resource=f"blob/{sha256}")


@router.post("/projects/{name}/artifacts:link", status_code=status.HTTP_201_CREATED)
async def link_artifact(call: Call, name: str, body: schemas.ArtifactLink) -> schemas.ArtifactOut:
    """Name content the project already stores (dedup: no bytes are sent)."""
    return await call(service.link, call.store, name, body)


@router.post("/projects/{name}/blobs:query")
async def query_blobs(call: ReadCall, name: str, body: schemas.BlobQuery) -> schemas.BlobPresence:
    """Which of these SHA-256s the project already stores."""
    return await call(service.present_blobs, name, body.sha256)


@router.get("/projects/{name}/artifacts")
async def list_artifacts(
    call: Call,
    name: str,
    prefix: str | None = None,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> Page[schemas.ArtifactOut]:
    items, next_cursor = await call(
        service.list_artifacts, name, prefix=prefix, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/projects/{name}/artifact-ids/{artifact_id}")
async def get_artifact_by_id(call: Call, name: str, artifact_id: str) -> schemas.ArtifactOut:
    return await call(service.get_artifact_by_id, name, artifact_id)


@router.get("/projects/{name}/artifacts/{path:path}")
async def get_artifact(
    call: Call,
    name: str,
    path: str,
    metadata: Annotated[bool, Query(description="Return metadata instead of content.")] = False,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """The decrypted content, streamed; honours a single ``Range: bytes=a-b``."""
    if metadata:
        out = await call(service.get_artifact, name, path)
        return Response(out.model_dump_json(), media_type="application/json")
    opened = await call(service.open_artifact, call.store, name, path)
    resource = f"artifact/{opened.artifact.path}"
    return await _stream(call, opened, range_header, project=name, resource=resource)


async def _stream(
    call: ServiceCall,
    opened: service.OpenArtifact,
    range_header: str | None,
    *,
    project: str,
    resource: str,
) -> Response:
    size = opened.artifact.size
    start, end = _parse_range(range_header, size)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{opened.artifact.sha256}"',
        "X-Ghaf-SHA256": opened.artifact.sha256,
    }
    partial = range_header is not None and (start, end) != (0, size - 1)
    if partial:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    # The first chunk is authenticated before any header is sent (ghaf/storage/streaming.py).
    return await stream_stored(
        call,
        lambda: call.store.read(
            opened.where, data_key=opened.data_key, start=start, end=end if size else None
        ),
        project=project,
        action="artifact:read",
        resource=f"project/{project}/{resource}",
        what=resource.replace("/", " ", 1),
        headers=headers,
        status_code=206 if partial else 200,
    )


def _parse_range(header: str | None, size: int) -> tuple[int, int]:
    if header is None or size == 0:
        return 0, max(size - 1, 0)
    match = _RANGE.fullmatch(header.strip())
    if match is None or (not match.group(1) and not match.group(2)):
        raise RangeNotSatisfiable(
            f"unsupported Range {header!r}: use one 'bytes=a-b'", field="Range"
        )
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(
            f"Range {header!r} is outside the {size}-byte artifact", field="Range", size=size
        )
    return start, end


@router.delete("/projects/{name}/artifacts/{path:path}", status_code=204)
async def delete_artifact(call: Call, name: str, path: str) -> None:
    await call(service.delete_artifact, call.store, name, path)


@router.post("/projects/{name}/artifacts:verify")
async def verify_artifacts(call: Call, name: str) -> schemas.StorageVerifyResult:
    """Re-read every object, check hashes and tags; report missing/corrupt/orphaned."""
    return await call(service.verify, call.store, name)


@router.get("/projects/{name}/keys")
async def list_keys(call: Call, name: str) -> schemas.KeysOut:
    return await call(service.list_keys, call.store, name)


@router.post("/projects/{name}/keys:rotate")
async def rotate_key(call: Call, name: str) -> schemas.RotationResult:
    """New KEK version; re-wraps every data key (resumes an interrupted rotation)."""
    return await call(service.rotate_key, call.store, name)
