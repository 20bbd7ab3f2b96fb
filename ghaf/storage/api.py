"""REST routes of the artifact store: streaming uploads and downloads, with HTTP Range."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from ghaf.core.errors import GhafError, IntegrityFailure
from ghaf.core.paging import Page
from ghaf.platform.calls import (
    DEFAULT_PAGE,
    Call,
    Cursor,
    PageSize,
    ReadCall,
    ServiceCall,
    bytes_response,
)
from ghaf.platform.uploads import allow_upload
from ghaf.storage import flows, packs, schemas, service
from ghaf.storage.streaming import count_sent, refuse_in_stream, stream_stored

router = APIRouter(tags=["artifacts"])
log = logging.getLogger("ghaf.storage")
PIECE_BYTES = 1 << 20
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(GhafError):
    status = 416
    code = "range-not-satisfiable"
    title = "Range not satisfiable"


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives, under the upload limit (not the JSON one)."""
    allow_upload(request)
    async for data in request.stream():
        yield data


def _binary_body(media_type: str, description: str) -> dict[str, Any]:
    """OpenAPI for a streamed body the route reads itself."""
    schema = {"type": "string", "format": "binary", "description": description}
    return {"requestBody": {"required": True, "content": {media_type: {"schema": schema}}}}


@router.put(
    "/projects/{project}/artifacts/{path:path}",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_binary_body("application/octet-stream", "The content, streamed."),
)
async def put_artifact(
    call: Call,
    request: Request,
    project: str,
    path: str,
    overwrite: bool = False,
    x_ghaf_sha256: Annotated[str | None, Header(description="SHA-256 of the content.")] = None,
) -> schemas.ArtifactOut:
    """Upload the request body (streamed) to ``path``; visible only once verified."""
    return await call.flow(
        flows.upload_artifact,
        project,
        path,
        _body(request),
        sha256=x_ghaf_sha256,
        overwrite=overwrite,
    )


@router.put(
    "/projects/{project}/blobs/{sha256}",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_binary_body("application/octet-stream", "The content, streamed."),
)
async def put_blob(call: Call, request: Request, project: str, sha256: str) -> schemas.BlobOut:
    """Upload content addressed only by its SHA-256 (for manifests such as datasets)."""
    return await call.flow(flows.upload_blob, project, sha256, _body(request))


@router.post(
    "/projects/{project}/blobs:pack",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_binary_body(
        packs.MEDIA_TYPE,
        "Frames of 32-byte SHA-256, 8-byte big-endian size, then the bytes (docs/storage.md).",
    ),
)
async def put_pack(call: Call, request: Request, project: str) -> schemas.PackOut:
    """Upload many small contents in one body of ``application/x-ghaf-pack`` frames
    (see docs/storage.md); each is checked against its declared SHA-256."""
    return await call.flow(flows.upload_pack, project, _body(request))


@router.post(
    "/projects/{project}/blobs:fetch",
    responses={200: bytes_response("Pack frames (docs/storage.md).", packs.MEDIA_TYPE)},
)
async def fetch_blobs(call: ReadCall, project: str, body: schemas.BlobQuery) -> Response:
    """Many contents by SHA-256 as one stream of pack frames (in storage order)."""
    opened = await call(service.open_blobs, project, body.sha256)

    def frames() -> Iterator[bytes]:
        for found in opened:
            members = found.contents()
            for sha256, where in zip(found.hashes, found.slices, strict=True):
                try:
                    # Whole members only: a failure is then reported in-band, never
                    # as a response cut off halfway through a member.
                    content = next(members)
                except GhafError as exc:
                    log.error("fetch of %s failed: %s", sha256, exc.detail)
                    if isinstance(exc, IntegrityFailure):
                        resource = f"project/{project}/blob/{sha256}"
                        exc = refuse_in_stream(call, project, resource, f"blob {sha256}", exc)
                    yield packs.error_frame(exc)
                    return
                yield packs.frame_header(sha256, where.size) + content

    return StreamingResponse(count_sent(_regroup(frames())), media_type=packs.MEDIA_TYPE)


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


@router.get(
    "/projects/{project}/blobs/{sha256}",
    responses={200: bytes_response("The content.", "application/octet-stream")},
)
async def get_blob(call: Call, project: str, sha256: str) -> Response:
    """Content by SHA-256, streamed and authenticated chunk by chunk."""
    opened = await call(service.open_blob, project, sha256)
    return await _stream(call, opened, None, project=project, resource=f"blob/{sha256}")


@router.post("/projects/{project}/artifacts:link", status_code=status.HTTP_201_CREATED)
async def link_artifact(
    call: Call, project: str, body: schemas.ArtifactLink
) -> schemas.ArtifactOut:
    """Name content the project already stores (dedup: no bytes are sent)."""
    return await call(service.link, project, body)


@router.post("/projects/{project}/blobs:query")
async def query_blobs(
    call: ReadCall, project: str, body: schemas.BlobQuery
) -> schemas.BlobPresence:
    """Which of these SHA-256s the project already stores."""
    return await call(service.present_blobs, project, body.sha256)


@router.get("/projects/{project}/artifacts")
async def list_artifacts(
    call: Call,
    project: str,
    prefix: str | None = None,
    page_size: PageSize = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> Page[schemas.ArtifactOut]:
    items, next_cursor = await call(
        service.list_artifacts, project, prefix=prefix, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/projects/{project}/artifact-ids/{artifact_id}")
async def get_artifact_by_id(call: Call, project: str, artifact_id: str) -> schemas.ArtifactOut:
    return await call(service.get_artifact_by_id, project, artifact_id)


_CONTENT = "application/octet-stream"


@router.get(
    "/projects/{project}/artifacts/{path:path}",
    responses={
        200: {
            "description": "The content; its metadata with ``metadata=true``.",
            "model": schemas.ArtifactOut,
            "content": {_CONTENT: {"schema": {"type": "string", "format": "binary"}}},
        },
        206: bytes_response("The part the Range header asked for.", _CONTENT),
        416: {"description": "The Range header cannot be satisfied."},
    },
)
async def get_artifact(
    call: Call,
    project: str,
    path: str,
    metadata: Annotated[bool, Query(description="Return metadata instead of content.")] = False,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """The decrypted content, streamed; honours a single ``Range: bytes=a-b``."""
    if metadata:
        out = await call(service.get_artifact, project, path)
        return Response(out.model_dump_json(), media_type="application/json")
    opened = await call(service.open_artifact, project, path)
    resource = f"artifact/{opened.artifact.path}"
    return await _stream(call, opened, range_header, project=project, resource=resource)


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
        lambda: opened.read(start=start, end=end if size else None),
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


@router.delete("/projects/{project}/artifacts/{path:path}", status_code=204)
async def delete_artifact(call: Call, project: str, path: str) -> None:
    await call(service.delete_artifact, project, path)


@router.post("/projects/{project}/artifacts:verify")
async def verify_artifacts(call: Call, project: str) -> schemas.StorageVerifyResult:
    """Re-read every object, check hashes and tags; report missing/corrupt/orphaned."""
    return await call(service.verify, project)


@router.get("/projects/{project}/keys")
async def list_keys(
    call: Call, project: str, page_size: PageSize = DEFAULT_PAGE, cursor: Cursor = None
) -> schemas.KeysOut:
    """Key versions, oldest first, with how many objects each still wraps."""
    return await call(service.list_keys, project, limit=page_size, cursor=cursor)


@router.post("/projects/{project}/keys:rotate")
async def rotate_key(call: Call, project: str) -> schemas.RotationResult:
    """New KEK version; re-wraps every data key (resumes an interrupted rotation)."""
    return await call(service.rotate_key, project)
