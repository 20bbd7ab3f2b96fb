"""Artifact store logic: authorisation, residency, metadata, dedup, verify and rotation.

Uploads have three steps so that no database transaction stays open while bytes stream:
``plan_put`` (authorise and check residency), the upload itself, then ``commit_put``
(authorise again, verify the hash, record metadata atomically); ghaf/storage/flows.py
runs them as one action. An upload that fails or dies leaves no metadata; its bytes are
removed, or, if the process died, reported by ``verify`` as an orphan.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import among, insert_new, insert_unique
from ghaf.core.errors import (
    Conflict,
    GhafError,
    IntegrityFailure,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StoredObjectCorrupt,
)
from ghaf.core.ids import new_id
from ghaf.core.metrics import ARTIFACT_BYTES
from ghaf.core.paging import DEFAULT_LIMIT, check_page_size, decode_cursor, encode_cursor, paginate
from ghaf.security.context import Context
from ghaf.storage import packs, references, schemas
from ghaf.storage.backends.base import INCOMPLETE
from ghaf.storage.models import Artifact, Blob
from ghaf.storage.paths import normalise_path
from ghaf.storage.store import (
    Member,
    PackUpload,
    Sealing,
    Slice,
    Store,
    Upload,
    project_prefix,
)

log = logging.getLogger("ghaf.storage")
REWRAP_BATCH = 500


class ResidencyViolation(PermissionDenied):
    code = "residency-violation"
    title = "Data residency policy violated"


def _artifact_out(artifact: Artifact, blob: Blob, project: str) -> schemas.ArtifactOut:
    return schemas.ArtifactOut(
        id=artifact.id,
        project=project,
        path=artifact.path,
        size=artifact.size,
        sha256=artifact.sha256,
        region=blob.region,
        created_at=as_utc(artifact.created_at),
        created_by=artifact.created_by,
    )


def _check_residency(pctx: Context, path: str) -> None:
    project = pctx.project
    assert project is not None
    region = pctx.store.backend.region
    if region not in project.allowed_regions:
        pctx.deny(
            "artifact:write",
            f"project/{project.name}/artifact/{path}",
            ResidencyViolation(
                f"the artifact store is in region {region!r}, but project {project.name!r} "
                f"only allows {', '.join(project.allowed_regions)} (its allowed_regions policy)",
                field="region",
                region=region,
                allowed_regions=list(project.allowed_regions),
            ),
        )


def _check_sha256(sha256: str | None) -> str:
    # The client states what it sends; the bytes are checked against it before they
    # become visible, so corruption in transit can never be stored.
    if sha256 is None:
        raise InvalidInput(
            "the X-Ghaf-SHA256 header (SHA-256 of the content) is required", field="X-Ghaf-SHA256"
        )
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise InvalidInput(
            "X-Ghaf-SHA256 must be 64 lowercase hex characters", field="X-Ghaf-SHA256"
        )
    return sha256


@dataclass(frozen=True)
class PutPlan:
    project: str
    project_id: str
    path: str | None  # None: content addressed only by its hash
    overwrite: bool
    declared_sha256: str


def plan_put(
    ctx: Context, project: str, path: str, *, sha256: str | None, overwrite: bool
) -> PutPlan:
    """Authorise an upload to ``path`` and check residency; nothing is written."""
    pctx = ctx.in_project(project)
    path = normalise_path(path)
    pctx.require("artifact:write", resource=f"project/{project}/artifact/{path}")
    _check_residency(pctx, path)
    sha256 = _check_sha256(sha256)
    assert pctx.project is not None
    if not overwrite:
        _refuse_existing(pctx, pctx.project.id, path)
    return PutPlan(project, pctx.project.id, path, overwrite, sha256)


def _refuse_existing(pctx: Context, project_id: str, path: str) -> None:
    exists = pctx.session.scalar(
        select(Artifact.id).where(Artifact.project_id == project_id, Artifact.path == path)
    )
    if exists is not None:
        raise Conflict(
            f"artifact {path!r} already exists; pass overwrite to replace it", field="path"
        )


def commit_put(ctx: Context, plan: PutPlan, done: Upload) -> schemas.ArtifactOut:
    """Record the uploaded object under its path; content the project has is kept once."""
    assert plan.path is not None
    blob, artifact = _commit(
        ctx,
        plan,
        done,
        action="artifact:put",
        resource=f"project/{plan.project}/artifact/{plan.path}",
    )
    assert artifact is not None
    return _artifact_out(artifact, blob, plan.project)


def commit_blob(ctx: Context, plan: PutPlan, done: Upload) -> schemas.BlobOut:
    """Record uploaded content without a path (datasets name it in their manifests)."""
    blob, _ = _commit(
        ctx,
        plan,
        done,
        action="blob:put",
        resource=f"project/{plan.project}/blob/{plan.declared_sha256}",
    )
    return schemas.BlobOut(sha256=blob.sha256, size=blob.size, region=blob.region)


def _commit(
    ctx: Context, plan: PutPlan, done: Upload, *, action: str, resource: str
) -> tuple[Blob, Artifact | None]:
    store = ctx.store
    try:
        pctx = ctx.in_project(plan.project)
        pctx.require("artifact:write", resource=resource)
        assert done.sha256 is not None and pctx.project is not None
        blob = _blob_by_hash(pctx, plan.project_id, done.sha256)
        duplicate = blob is not None
        if blob is None:
            blob = Blob(
                **_blob_row(
                    store, plan.project_id, done, Member(done.sha256, 0, done.size), done.object_id
                )
            )
            insert_unique(
                pctx.session,
                blob,
                field="sha256",
                conflict="the same content was stored concurrently; retry",
            )
        artifact = _bind_path(pctx, plan, blob) if plan.path is not None else None
        pctx.audit(
            action,
            resource,
            detail={
                "sha256": blob.sha256,
                "size": blob.size,
                "dedup": duplicate,
                "region": blob.region,
            },
        )
        pctx.commit()
    except BaseException:
        store.backend.delete(done.key)
        raise
    if duplicate:
        store.backend.delete(done.key)  # the project already stores these bytes
    ARTIFACT_BYTES.inc(done.size, value="in")
    return blob, artifact


@dataclass(frozen=True)
class PackPlan:
    project: str
    project_id: str


def plan_pack(ctx: Context, project: str) -> PackPlan:
    """Authorise an upload of many small contents in one pack."""
    pctx = ctx.in_project(project)
    pctx.require("artifact:write", resource=f"project/{project}/blobs")
    _check_residency(pctx, "blobs")
    assert pctx.project is not None
    return PackPlan(project, pctx.project.id)


def commit_pack(ctx: Context, plan: PackPlan, done: PackUpload) -> schemas.PackOut:
    """Record the members the project did not already hold; all in one transaction."""
    store = ctx.store
    try:
        pctx = ctx.in_project(plan.project)
        pctx.require("artifact:write", resource=f"project/{plan.project}/blobs")
        first = {m.sha256: m for m in reversed(done.members)}
        held = _held(pctx, plan.project_id, sorted(first))
        now = utcnow()
        insert_new(
            pctx.session,
            Blob,
            [
                {**_blob_row(store, plan.project_id, done, m, new_id()), "created_at": now}
                for m in first.values()
                if m.sha256 not in held
            ],
        )
        stored = int(
            pctx.session.scalar(
                select(func.count()).select_from(Blob).where(Blob.object_id == done.object_id)
            )
            or 0
        )
        out = schemas.PackOut(
            members=len(done.members),
            stored=stored,
            deduplicated=len(done.members) - stored,
            bytes=done.size,
            region=store.backend.region,
        )
        # One row for the pack: its members are the blobs whose object_id it names.
        pctx.audit(
            "blob:put",
            f"project/{plan.project}/blobs",
            detail={"object": done.object_id, **out.model_dump()},
        )
        pctx.commit()
    except BaseException:
        store.backend.delete(done.key)
        raise
    if stored == 0:
        store.backend.delete(done.key)  # every member was already stored
    ARTIFACT_BYTES.inc(done.size, value="in")
    return out


def _blob_row(
    store: Store, project_id: str, done: Sealing, member: Member, blob_id: str
) -> dict[str, Any]:
    """The ``blobs`` columns for content ``member`` inside the object ``done`` wrote."""
    return {
        "id": blob_id,
        "project_id": project_id,
        "sha256": member.sha256,
        "size": member.size,
        "object_key": done.key,
        "object_id": done.object_id,
        "object_offset": member.offset,
        "object_size": done.size,
        "backend_url": store.backend.url,
        "region": store.backend.region,
        "chunk_size": done.chunk_size,
        "kek_version": done.kek_version,
        "wrapped_key": done.wrapped_key,
    }


def _held(pctx: Context, project_id: str, hashes: list[str]) -> set[str]:
    return set(
        pctx.session.scalars(
            select(Blob.sha256).where(
                Blob.project_id == project_id, among(pctx.session, Blob.sha256, hashes)
            )
        )
    )


def plan_blob_put(ctx: Context, project: str, sha256: str) -> PutPlan:
    """Authorise an upload of content addressed only by its SHA-256."""
    pctx = ctx.in_project(project)
    pctx.require("artifact:write", resource=f"project/{project}/blob/{sha256}")
    _check_residency(pctx, f"blob/{sha256}")
    _check_sha256(sha256)
    assert pctx.project is not None
    return PutPlan(project, pctx.project.id, None, False, sha256)


def _blob_by_hash(pctx: Context, project_id: str, sha256: str) -> Blob | None:
    return pctx.session.scalar(
        select(Blob).where(Blob.project_id == project_id, Blob.sha256 == sha256)
    )


def _bind_path(pctx: Context, plan: PutPlan, blob: Blob) -> Artifact:
    existing = pctx.session.scalar(
        select(Artifact).where(Artifact.project_id == plan.project_id, Artifact.path == plan.path)
    )
    if existing is not None:
        if not plan.overwrite:
            raise Conflict(
                f"artifact {plan.path!r} already exists; pass overwrite to replace it", field="path"
            )
        old_blob = existing.blob_id
        existing.blob_id, existing.size, existing.sha256 = blob.id, blob.size, blob.sha256
        existing.created_by = pctx.actor
        pctx.session.flush()
        _forget_if_unused(pctx, old_blob)
        return existing
    artifact = Artifact(
        project_id=plan.project_id,
        path=plan.path,
        blob_id=blob.id,
        size=blob.size,
        sha256=blob.sha256,
        created_by=pctx.actor,
    )
    insert_unique(
        pctx.session,
        artifact,
        field="path",
        conflict=f"artifact {plan.path!r} was created concurrently; retry",
    )
    return artifact


def _forget_if_unused(pctx: Context, blob_id: str) -> None:
    """Drop a blob nothing references; its object is deleted after commit."""
    still_used = pctx.session.scalar(
        select(func.count()).select_from(Artifact).where(Artifact.blob_id == blob_id)
    ) or references.is_referenced(pctx.session, blob_id)
    if not still_used:
        blob = pctx.session.get(Blob, blob_id)
        if blob is not None:
            pctx.session.delete(blob)
            pctx.session.flush()
            # A pack's object goes only with its last member (no repacking: ADR 0009).
            if pctx.session.scalar(select(Blob.id).where(Blob.object_id == blob.object_id)) is None:
                pctx.session.info.setdefault("ghaf_deleted_keys", []).append(blob.object_key)


def _delete_forgotten(pctx: Context) -> None:
    for key in pctx.session.info.pop("ghaf_deleted_keys", []):
        try:
            pctx.store.backend.delete(key)
        except Exception:  # an undeleted object is an orphan that verify reports
            log.warning("could not delete object %s; verify will report it", key)


def link(ctx: Context, project: str, request: schemas.ArtifactLink) -> schemas.ArtifactOut:
    """Name content the project already stores, without uploading it again (dedup)."""
    pctx = ctx.in_project(project)
    path = normalise_path(request.path)
    pctx.require("artifact:write", resource=f"project/{project}/artifact/{path}")
    _check_residency(pctx, path)
    assert pctx.project is not None
    blob = _blob_by_hash(pctx, pctx.project.id, request.sha256)
    if blob is None:
        raise NotFound(
            f"project {project!r} stores no content with sha256 {request.sha256}; "
            "upload it instead",
            field="sha256",
        )
    plan = PutPlan(project, pctx.project.id, path, request.overwrite, request.sha256)
    artifact = _bind_path(pctx, plan, blob)
    pctx.audit(
        "artifact:put",
        f"project/{project}/artifact/{path}",
        detail={"sha256": blob.sha256, "size": blob.size, "dedup": True, "region": blob.region},
    )
    pctx.commit()
    _delete_forgotten(pctx)
    return _artifact_out(artifact, blob, project)


def present_blobs(ctx: Context, project: str, hashes: list[str]) -> schemas.BlobPresence:
    """Which of these contents the project already stores (for incremental uploads)."""
    pctx = ctx.in_project(project)
    pctx.require("artifact:read", resource=f"project/{project}/blobs")
    assert pctx.project is not None
    wanted = sorted(set(hashes))
    present = _held(pctx, pctx.project.id, wanted)
    return schemas.BlobPresence(
        present=sorted(present), missing=[h for h in wanted if h not in present]
    )


def held_blob(ctx: Context, sha256: str, *, size: int, field: str = "sha256") -> Blob:
    """For domains above (runs, models): the content the project of ``ctx`` (narrowed
    to one) already stores with this SHA-256 and size, or NotFound telling the caller to
    upload it first. Naming content needs the right to read it."""
    assert ctx.project is not None
    ctx.require("artifact:read", resource=f"project/{ctx.project.name}/blob/{sha256}")
    blob = _blob_by_hash(ctx, ctx.project.id, sha256)
    if blob is None or blob.size != size:
        raise NotFound(
            f"project {ctx.project.name!r} holds no content {sha256} of {size} bytes; "
            "upload it (PUT .../blobs/{sha256}) first",
            field=field,
        )
    return blob


def store_content(ctx: Context, data: bytes) -> Blob:
    """Content ghaf made itself (a converted model), stored encrypted in the project of
    ``ctx`` (narrowed to one) within the caller's transaction; the object is removed if
    that fails."""
    assert ctx.project is not None
    ctx.require("artifact:write", resource=f"project/{ctx.project.name}/blob/generated")
    pctx, store, project_id = ctx, ctx.store, ctx.project.id
    _check_residency(pctx, "blob/generated")
    existing = _blob_by_hash(pctx, project_id, hashlib.sha256(data).hexdigest())
    if existing is not None:
        return existing
    handle = store.start_upload(project_id=project_id)
    try:
        handle.write(data)
        handle.finish()
        handle.commit()
        assert handle.sha256 is not None
        blob = Blob(
            **_blob_row(
                store, project_id, handle, Member(handle.sha256, 0, handle.size), handle.object_id
            )
        )
        pctx.session.add(blob)
        pctx.session.flush()
    except BaseException:
        store.backend.delete(handle.key)
        raise
    return blob


def read_content(ctx: Context, blob: Blob) -> Iterator[bytes]:
    """The plaintext of ``blob`` (of the project ``ctx`` is narrowed to), authenticated
    chunk by chunk."""
    assert ctx.project is not None and blob.project_id == ctx.project.id
    ctx.require("artifact:read", resource=f"project/{ctx.project.name}/blob/{blob.sha256}")
    return ctx.store.read(_slice(blob), data_key=_data_key(ctx.store, blob))


def corrupt(what: str, error: IntegrityFailure) -> StoredObjectCorrupt:
    """The problem a download answers when its stored object fails authentication."""
    if isinstance(error, StoredObjectCorrupt):
        return error
    return StoredObjectCorrupt(
        f"the stored object of {what} failed its integrity check, so it was not sent: "
        f"{error.detail}. The attempt is recorded in the audit trail; restore the object "
        "from a backup ('ghaf artifacts verify' lists every damaged object)",
        **error.extra,
    )


def blob_row(ctx: Context, blob_id: str, what: str) -> Blob:
    """The blob row metadata of the project ``ctx`` is narrowed to points at; a row that
    is gone (the database was damaged or tampered with) is an integrity failure naming
    ``what``, never a crash."""
    assert ctx.project is not None
    ctx.require("artifact:read", resource=f"project/{ctx.project.name}/blob-id/{blob_id}")
    return _blob_row_of(ctx.session, blob_id, what)


def _blob_row_of(session: Session, blob_id: str, what: str) -> Blob:
    blob = session.get(Blob, blob_id)
    if blob is None:
        raise StoredObjectCorrupt(
            f"the stored object of {what} is missing from the metadata (its blob row "
            f"{blob_id} is gone): the database was damaged or tampered with; restore it "
            "from a backup ('ghaf artifacts verify' lists what is damaged)",
            blob_id=blob_id,
        )
    return blob


def refuse_corrupt(
    ctx: Context, project: str, action: str, resource: str, what: str, error: IntegrityFailure
) -> NoReturn:
    """Audit a download whose stored object failed its integrity check (outcome denied,
    with the reason), then raise :class:`StoredObjectCorrupt`: tampering is evidence."""
    log.error("download of %s refused: %s", what, error.detail)
    ctx.in_project(project).deny(action, resource, corrupt(what, error))


@dataclass(frozen=True)
class OpenArtifact:
    """What a download needs, resolved and authorised; reading needs no database."""

    artifact: schemas.ArtifactOut
    where: Slice
    data_key: bytes
    store: Store

    def read(self, *, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Authenticated plaintext of bytes ``start``..``end`` (inclusive)."""
        return self.store.read(self.where, data_key=self.data_key, start=start, end=end)


def _slice(blob: Blob) -> Slice:
    return Slice(blob.object_key, blob.object_id, blob.object_size, blob.object_offset, blob.size)


def _data_key(store: Store, blob: Blob) -> bytes:
    return store.data_key(
        project_id=blob.project_id,
        object_id=blob.object_id,
        kek_version=blob.kek_version,
        wrapped_key=blob.wrapped_key,
    )


def _find(pctx: Context, path: str) -> tuple[Artifact, Blob]:
    assert pctx.project is not None
    row = pctx.session.execute(
        select(Artifact, Blob)
        .join(Blob, Blob.id == Artifact.blob_id)
        .where(Artifact.project_id == pctx.project.id, Artifact.path == path)
    ).first()
    if row is None:
        raise NotFound(f"project {pctx.project.name!r} has no artifact {path!r}", field="path")
    return row[0], row[1]


def open_artifact(ctx: Context, project: str, path: str) -> OpenArtifact:
    pctx = ctx.in_project(project)
    path = normalise_path(path)
    pctx.require("artifact:read", resource=f"project/{project}/artifact/{path}")
    artifact, blob = _find(pctx, path)
    return OpenArtifact(
        _artifact_out(artifact, blob, project),
        _slice(blob),
        _data_key(pctx.store, blob),
        pctx.store,
    )


def open_blob(ctx: Context, project: str, sha256: str) -> OpenArtifact:
    """Content by hash, for readers of manifests (datasets)."""
    pctx = ctx.in_project(project)
    pctx.require("artifact:read", resource=f"project/{project}/blob/{sha256}")
    _check_sha256(sha256)
    assert pctx.project is not None
    blob = _blob_by_hash(pctx, pctx.project.id, sha256)
    if blob is None:
        raise NotFound(
            f"project {project!r} stores no content with sha256 {sha256}", field="sha256"
        )
    info = schemas.ArtifactOut(
        id=blob.id,
        project=project,
        path="",
        size=blob.size,
        sha256=blob.sha256,
        region=blob.region,
        created_at=as_utc(blob.created_at),
    )
    return OpenArtifact(info, _slice(blob), _data_key(pctx.store, blob), pctx.store)


@dataclass(frozen=True)
class OpenObject:
    """Members of one stored object to stream, in offset order, and its data key."""

    data_key: bytes
    hashes: list[str]
    slices: list[Slice]
    store: Store

    def contents(self) -> Iterator[bytes]:
        """The whole content of each member, in order, authenticated."""
        return self.store.read_many(self.slices, data_key=self.data_key)


def open_blobs(ctx: Context, project: str, hashes: list[str]) -> list[OpenObject]:
    """Many contents by hash, for one streamed pack; all must exist (none is skipped)."""
    pctx = ctx.in_project(project)
    pctx.require("artifact:read", resource=f"project/{project}/blobs")
    assert pctx.project is not None
    wanted = list(dict.fromkeys(hashes))
    # Plain rows, not ORM objects: a version may name 100,000 small files.
    rows = pctx.session.execute(
        select(
            Blob.sha256,
            Blob.size,
            Blob.object_key,
            Blob.object_id,
            Blob.object_size,
            Blob.object_offset,
            Blob.kek_version,
            Blob.wrapped_key,
        )
        .where(Blob.project_id == pctx.project.id, among(pctx.session, Blob.sha256, wanted))
        .order_by(Blob.object_id, Blob.object_offset)
    ).all()
    found = {row.sha256 for row in rows}
    missing = [h for h in wanted if h not in found]
    if missing:
        raise NotFound(
            f"project {project!r} stores no content with sha256 {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            field="sha256",
            missing=missing[:100],
        )
    large = [row.sha256 for row in rows if row.size > packs.MEMBER_MAX]
    if large:
        raise InvalidInput(
            f"content {large[0]} is over {packs.MEMBER_MAX} bytes; fetch it on its own "
            "with GET blobs/{sha256}",
            field="sha256",
        )
    objects: dict[str, OpenObject] = {}
    for row in rows:
        opened = objects.get(row.object_id)
        if opened is None:  # a pack's members share one data key: unwrap it once
            data_key = pctx.store.data_key(
                project_id=pctx.project.id,
                object_id=row.object_id,
                kek_version=row.kek_version,
                wrapped_key=row.wrapped_key,
            )
            opened = objects[row.object_id] = OpenObject(data_key, [], [], pctx.store)
        opened.hashes.append(row.sha256)
        opened.slices.append(
            Slice(row.object_key, row.object_id, row.object_size, row.object_offset, row.size)
        )
    return list(objects.values())


def get_artifact(ctx: Context, project: str, path: str) -> schemas.ArtifactOut:
    pctx = ctx.in_project(project)
    path = normalise_path(path)
    pctx.require("artifact:read", resource=f"project/{project}/artifact/{path}")
    artifact, blob = _find(pctx, path)
    return _artifact_out(artifact, blob, project)


def get_artifact_by_id(ctx: Context, project: str, artifact_id: str) -> schemas.ArtifactOut:
    """By id, but only inside the project: another project's id is simply not found."""
    pctx = ctx.in_project(project)
    pctx.require("artifact:read", resource=f"project/{project}/artifact-id/{artifact_id}")
    assert pctx.project is not None
    row = pctx.session.execute(
        select(Artifact, Blob)
        .join(Blob, Blob.id == Artifact.blob_id)
        .where(Artifact.project_id == pctx.project.id, Artifact.id == artifact_id)
    ).first()
    if row is None:
        raise NotFound(f"project {project!r} has no artifact with id {artifact_id!r}", field="id")
    return _artifact_out(row[0], row[1], project)


def list_artifacts(
    ctx: Context, project: str, *, prefix: str | None, limit: int, cursor: str | None
) -> tuple[list[schemas.ArtifactOut], str | None]:
    pctx = ctx.in_project(project)
    pctx.require("artifact:read", resource=f"project/{project}/artifacts")
    assert pctx.project is not None
    statement = select(Artifact).where(Artifact.project_id == pctx.project.id)
    if prefix:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(Artifact.path.like(escaped + "%", escape="\\"))
    rows, next_cursor = paginate(
        pctx.session, statement, key=Artifact.path, limit=limit, cursor=cursor
    )
    blobs = {
        b.id: b
        for b in pctx.session.scalars(select(Blob).where(Blob.id.in_({a.blob_id for a in rows})))
    }
    return [
        _artifact_out(
            a,
            blobs.get(a.blob_id) or _blob_row_of(pctx.session, a.blob_id, f"artifact {a.path!r}"),
            project,
        )
        for a in rows
    ], next_cursor


def delete_artifact(ctx: Context, project: str, path: str) -> None:
    pctx = ctx.in_project(project)
    path = normalise_path(path)
    pctx.require("artifact:delete", resource=f"project/{project}/artifact/{path}")
    artifact, blob = _find(pctx, path)
    pctx.session.delete(artifact)
    pctx.session.flush()
    _forget_if_unused(pctx, blob.id)
    pctx.audit(
        "artifact:delete", f"project/{project}/artifact/{path}", detail={"sha256": blob.sha256}
    )
    pctx.commit()
    _delete_forgotten(pctx)


# --- integrity ---------------------------------------------------------------------


def verify(
    ctx: Context, project: str, progress: Callable[[int], None] | None = None
) -> schemas.StorageVerifyResult:
    """Re-read and authenticate every object; report (never repair) what is wrong."""
    pctx = ctx.in_project(project)
    pctx.require("artifact:verify", resource=f"project/{project}/verify")
    assert pctx.project is not None
    project_id, store = pctx.project.id, pctx.store
    blobs = pctx.session.scalars(select(Blob).where(Blob.project_id == project_id)).all()
    paths: dict[str, list[str]] = {}
    for blob_id, path in pctx.session.execute(
        select(Artifact.blob_id, Artifact.path).where(Artifact.project_id == project_id)
    ):
        paths.setdefault(blob_id, []).append(path)
    result = schemas.StorageVerifyResult(ok=True, checked=0, bytes_checked=0)
    for blob in blobs:
        problem = schemas.VerifyProblem(
            object_id=blob.object_id,
            key=blob.object_key,
            paths=sorted(paths.get(blob.id, [])),
            problem="",
        )
        try:
            digest = hashlib.sha256()
            for piece in store.read(_slice(blob), data_key=_data_key(store, blob)):
                digest.update(piece)
            if digest.hexdigest() != blob.sha256:
                raise IntegrityFailure(
                    f"object {blob.object_id} decrypts, but its SHA-256 is "
                    f"{digest.hexdigest()}, not {blob.sha256}"
                )
        except IntegrityFailure as exc:
            problem.problem = exc.detail
            (result.missing if "missing" in exc.detail else result.corrupt).append(problem)
        except GhafError as exc:
            problem.problem = exc.detail
            result.corrupt.append(problem)
        result.checked += 1
        result.bytes_checked += blob.size
        if progress is not None:
            progress(blob.size)
    known = {b.object_key for b in blobs}
    for key in store.backend.keys(project_prefix(project_id)):
        if key not in known:
            what = (
                "an upload that never completed"
                if key.endswith(INCOMPLETE)
                else "no metadata refers to it"
            )
            result.orphaned.append(schemas.VerifyProblem(key=key, problem=what))
    result.ok = not (result.missing or result.corrupt or result.orphaned)
    pctx.audit(
        "artifact:verify",
        f"project/{project}/artifacts",
        outcome="success" if result.ok else "failure",
        detail={
            "checked": result.checked,
            "missing": len(result.missing),
            "corrupt": len(result.corrupt),
            "orphaned": len(result.orphaned),
        },
    )
    return result


# --- keys --------------------------------------------------------------------------


def list_keys(
    ctx: Context, project: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> schemas.KeysOut:
    """Key versions, oldest first, one page at a time, and how many objects still wait
    for re-wrapping to the newest."""
    pctx = ctx.in_project(project)
    pctx.require("key:read", resource=f"project/{project}/keys")
    assert pctx.project is not None
    check_page_size(limit)
    after = _version_cursor(cursor)
    counts = dict(
        pctx.session.execute(
            # Objects, not blobs: the members of a pack share one wrapped data key.
            select(Blob.kek_version, func.count(func.distinct(Blob.object_id)))
            .where(Blob.project_id == pctx.project.id)
            .group_by(Blob.kek_version)
        ).all()
    )
    newest = pctx.store.kms.newest_version(pctx.project.id)
    page = range(after + 1, min(after + limit, newest) + 1)
    versions = [
        schemas.KeyVersionOut(version=v, objects=int(counts.get(v, 0)), current=v == newest)
        for v in page
    ]
    pending = sum(int(n) for v, n in counts.items() if v != newest)
    more = bool(versions) and versions[-1].version < newest
    return schemas.KeysOut(
        project=project,
        items=versions,
        next_cursor=encode_cursor(versions[-1].version) if more else None,
        pending_rewrap=pending,
    )


def _version_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    last = decode_cursor(cursor)
    if not isinstance(last, int) or last < 0:
        raise InvalidInput("cursor is not one this server issued", field="cursor")
    return last


def rotate_key(
    ctx: Context, project: str, *, max_batches: int | None = None
) -> schemas.RotationResult:
    """New KEK version, then re-wrap every data key to it in committed batches.

    Data is never re-encrypted. If a rotation was interrupted (objects still on an older
    version), this resumes it instead of starting another. ``max_batches`` exists so
    tests can interrupt a rotation on purpose.
    """
    pctx = ctx.in_project(project)
    pctx.require("key:rotate", resource=f"project/{project}/keys")
    assert pctx.project is not None
    project_id, store = pctx.project.id, pctx.store
    current = store.kms.newest_version(project_id)

    def pending() -> int:
        """Objects whose data key is not yet wrapped by the newest version."""
        statement = (
            select(func.count())
            .select_from(Blob)
            .where(Blob.project_id == project_id, Blob.kek_version != current)
        )
        return int(pctx.session.scalar(statement) or 0)

    resumed = pending() > 0
    if not resumed:
        current = store.kms.rotate(project_id)
        pctx.audit(
            "key:rotate",
            f"project/{project}/keys",
            detail={"version": current, "stage": "new-version"},
        )
        pctx.commit()
    rewrapped, batches = 0, 0
    while max_batches is None or batches < max_batches:
        batch = pctx.session.scalars(
            select(Blob)
            .where(Blob.project_id == project_id, Blob.kek_version != current)
            .order_by(Blob.id)
            .limit(REWRAP_BATCH)
        ).all()
        if not batch:
            break
        for blob in batch:
            # Each member of a pack holds its own copy of the pack's wrapped data key.
            version, wrapped = store.kms.wrap(project_id, blob.object_id, _data_key(store, blob))
            # Conditional on the old version, so a concurrent rotation can't be undone.
            pctx.session.execute(
                update(Blob)
                .where(Blob.id == blob.id, Blob.kek_version == blob.kek_version)
                .values(wrapped_key=wrapped, kek_version=version)
            )
        pctx.commit()
        rewrapped += len(batch)
        batches += 1
    complete = pending() == 0
    pctx.audit(
        "key:rotate",
        f"project/{project}/keys",
        detail={
            "version": current,
            "rewrapped": rewrapped,
            "complete": complete,
            "resumed": resumed,
        },
    )
    pctx.commit()
    return schemas.RotationResult(
        project=project,
        version=current,
        rewrapped=rewrapped,
        resumed=resumed,
        complete=complete,
    )


# --- lifecycle ---------------------------------------------------------------------


def delete_project_objects(ctx: Context, project_id: str) -> None:
    """Remove every stored byte of a purged project (its rows are gone already).

    Only for purges: ghaf's own work, or a platform admin's."""
    ctx.require("platform:admin", resource=f"project-id/{project_id}/objects")
    backend = ctx.store.backend
    for key in list(backend.keys(project_prefix(project_id))):
        if not key.endswith(INCOMPLETE):
            backend.delete(key)
