"""Dataset logic: versions are immutable manifests over the project's content-addressed
blobs, so a new version that changes 10 of 10,000 files stores 10 files."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import insert_unique
from ghaf.core.errors import Conflict, InvalidInput, NotFound
from ghaf.core.names import validate_name
from ghaf.core.paging import paginate
from ghaf.datasets import schemas
from ghaf.datasets.models import Dataset, DatasetFile, DatasetTag, DatasetVersion
from ghaf.security.context import Context
from ghaf.storage import references
from ghaf.storage.models import Blob
from ghaf.storage.paths import normalise_path

LATEST = "latest"
_BATCH = 1000


@references.register
def _names_blob(session: Session, blob_id: str) -> bool:
    return (
        session.scalar(select(DatasetFile.blob_id).where(DatasetFile.blob_id == blob_id).limit(1))
        is not None
    )


def _dataset_out(dataset: Dataset, project: str, latest: int | None) -> schemas.DatasetOut:
    return schemas.DatasetOut(
        id=dataset.id,
        project=project,
        name=dataset.name,
        description=dataset.description,
        latest=latest,
        created_at=as_utc(dataset.created_at),
        created_by=dataset.created_by,
    )


def _latest(session: Session, dataset_id: str) -> int | None:
    return session.scalar(
        select(func.max(DatasetVersion.version)).where(DatasetVersion.dataset_id == dataset_id)
    )


def _dataset(pctx: Context, name: str) -> Dataset:
    validate_name(name, field="dataset")
    assert pctx.project is not None
    dataset = pctx.session.scalar(
        select(Dataset).where(Dataset.project_id == pctx.project.id, Dataset.name == name)
    )
    if dataset is None:
        raise NotFound(f"project {pctx.project.name!r} has no dataset {name!r}", field="dataset")
    return dataset


def create_dataset(
    ctx: Context, project: str, request: schemas.DatasetCreate
) -> schemas.DatasetOut:
    pctx = ctx.in_project(project)
    pctx.require("dataset:write", resource=f"project/{project}/dataset/{request.name}")
    assert pctx.project is not None
    dataset = Dataset(
        project_id=pctx.project.id,
        name=request.name,
        description=request.description,
        created_by=pctx.actor,
    )
    insert_unique(
        pctx.session,
        dataset,
        field="name",
        conflict=f"dataset {request.name!r} already exists in {project!r}",
    )
    pctx.audit("dataset:create", f"project/{project}/dataset/{request.name}")
    pctx.commit()
    return _dataset_out(dataset, project, None)


def list_datasets(
    ctx: Context, project: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.DatasetOut], str | None]:
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/datasets")
    assert pctx.project is not None
    rows, next_cursor = paginate(
        pctx.session,
        select(Dataset).where(Dataset.project_id == pctx.project.id),
        key=Dataset.name,
        limit=limit,
        cursor=cursor,
    )
    return [_dataset_out(d, project, _latest(pctx.session, d.id)) for d in rows], next_cursor


def get_dataset(ctx: Context, project: str, name: str) -> schemas.DatasetOut:
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/dataset/{name}")
    dataset = _dataset(pctx, name)
    return _dataset_out(dataset, project, _latest(pctx.session, dataset.id))


def manifest_sha256(files: Sequence[schemas.ManifestEntry]) -> str:
    """SHA-256 over ``path\\tsize\\tsha256\\n`` lines in path order: the version's identity."""
    digest = hashlib.sha256()
    for entry in sorted(files, key=lambda e: e.path):
        digest.update(f"{entry.path}\t{entry.size}\t{entry.sha256}\n".encode())
    return digest.hexdigest()


def _checked_manifest(files: list[schemas.ManifestEntry]) -> list[schemas.ManifestEntry]:
    seen: set[str] = set()
    checked = []
    for index, entry in enumerate(files):
        path = normalise_path(entry.path, field=f"files.{index}.path")
        if path in seen:
            raise InvalidInput(
                f"files.{index}.path {path!r} appears twice", field=f"files.{index}.path"
            )
        seen.add(path)
        checked.append(entry.model_copy(update={"path": path}))
    return checked


def _blobs_for(pctx: Context, files: list[schemas.ManifestEntry]) -> dict[str, str]:
    """sha256 -> blob id, refusing content the project does not hold or of another size."""
    assert pctx.project is not None
    wanted = sorted({f.sha256 for f in files})
    found: dict[str, tuple[str, int]] = {}
    for start in range(0, len(wanted), _BATCH):
        for blob_id, sha, size in pctx.session.execute(
            select(Blob.id, Blob.sha256, Blob.size).where(
                Blob.project_id == pctx.project.id, Blob.sha256.in_(wanted[start : start + _BATCH])
            )
        ):
            found[sha] = (blob_id, size)
    missing = [f for f in files if f.sha256 not in found]
    if missing:
        raise Conflict(
            f"{len(missing)} file(s) were not uploaded before the version was created, "
            f"e.g. {missing[0].path!r} (sha256 {missing[0].sha256}); upload them first",
            field="files",
            missing=[f.sha256 for f in missing[:100]],
        )
    for index, entry in enumerate(files):
        if found[entry.sha256][1] != entry.size:
            raise InvalidInput(
                f"files.{index}.size says {entry.size} bytes but the stored content with "
                f"that sha256 is {found[entry.sha256][1]} bytes",
                field=f"files.{index}.size",
            )
    return {sha: blob_id for sha, (blob_id, _) in found.items()}


def create_version(
    ctx: Context, project: str, name: str, request: schemas.VersionCreate
) -> schemas.VersionOut:
    """A new immutable version; concurrent adds get distinct numbers."""
    pctx = ctx.in_project(project)
    pctx.require("dataset:write", resource=f"project/{project}/dataset/{name}")
    files = _checked_manifest(request.files)
    for attempt in range(10):
        dataset = _dataset(pctx, name)
        blobs = _blobs_for(pctx, files)
        latest = _latest(pctx.session, dataset.id)
        number = (latest or 0) + 1
        version = DatasetVersion(
            dataset_id=dataset.id,
            version=number,
            parent=latest,
            description=request.description,
            file_count=len(files),
            total_bytes=sum(f.size for f in files),
            manifest_sha256=manifest_sha256(files),
            provenance=request.provenance,
            created_by=pctx.actor,
        )
        try:
            insert_unique(
                pctx.session,
                version,
                field="version",
                conflict="another version was added at the same moment",
            )
        except Conflict:
            if attempt == 9:
                raise
            continue
        pctx.session.execute(
            insert(DatasetFile),
            [
                {
                    "version_id": version.id,
                    "path": f.path,
                    "size": f.size,
                    "sha256": f.sha256,
                    "blob_id": blobs[f.sha256],
                }
                for f in files
            ],
        )
        pctx.audit(
            "dataset:add-version",
            f"project/{project}/dataset/{name}/v{number}",
            detail={
                "files": len(files),
                "bytes": version.total_bytes,
                "manifest_sha256": version.manifest_sha256,
            },
        )
        pctx.commit()
        return _version_out(version, name, [])
    raise AssertionError("unreachable")


def _version_out(version: DatasetVersion, dataset: str, tags: list[str]) -> schemas.VersionOut:
    return schemas.VersionOut(
        dataset=dataset,
        version=version.version,
        parent=version.parent,
        description=version.description,
        file_count=version.file_count,
        total_bytes=version.total_bytes,
        manifest_sha256=version.manifest_sha256,
        provenance=version.provenance,
        tags=tags,
        created_at=as_utc(version.created_at),
        created_by=version.created_by,
    )


def _tags(session: Session, dataset_id: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for tag in session.scalars(
        select(DatasetTag).where(DatasetTag.dataset_id == dataset_id).order_by(DatasetTag.name)
    ):
        out.setdefault(tag.version, []).append(tag.name)
    return out


def _resolve(pctx: Context, dataset: Dataset, ref: str) -> DatasetVersion:
    """A version number, ``latest``, or a tag."""
    number: int | None
    if ref == LATEST:
        number = _latest(pctx.session, dataset.id)
    elif ref.isdigit():
        number = int(ref)
    else:
        number = pctx.session.scalar(
            select(DatasetTag.version).where(
                DatasetTag.dataset_id == dataset.id, DatasetTag.name == ref
            )
        )
    version = (
        None
        if number is None
        else pctx.session.scalar(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == number
            )
        )
    )
    if version is None:
        raise NotFound(f"dataset {dataset.name!r} has no version or tag {ref!r}", field="version")
    return version


def list_versions(ctx: Context, project: str, name: str) -> list[schemas.VersionOut]:
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/dataset/{name}")
    dataset = _dataset(pctx, name)
    tags = _tags(pctx.session, dataset.id)
    latest = _latest(pctx.session, dataset.id)
    versions = pctx.session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset.id)
        .order_by(DatasetVersion.version)
    ).all()
    return [
        _version_out(v, name, tags.get(v.version, []) + ([LATEST] if v.version == latest else []))
        for v in versions
    ]


def get_version(ctx: Context, project: str, name: str, ref: str) -> schemas.VersionOut:
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/dataset/{name}")
    dataset = _dataset(pctx, name)
    version = _resolve(pctx, dataset, ref)
    tags = _tags(pctx.session, dataset.id).get(version.version, [])
    if version.version == _latest(pctx.session, dataset.id):
        tags = [*tags, LATEST]
    return _version_out(version, name, tags)


def list_files(
    ctx: Context, project: str, name: str, ref: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.ManifestEntry], str | None]:
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/dataset/{name}")
    version = _resolve(pctx, _dataset(pctx, name), ref)
    rows, next_cursor = paginate(
        pctx.session,
        select(DatasetFile).where(DatasetFile.version_id == version.id),
        key=DatasetFile.path,
        limit=limit,
        cursor=cursor,
    )
    return [
        schemas.ManifestEntry(path=f.path, size=f.size, sha256=f.sha256) for f in rows
    ], next_cursor


def set_tag(
    ctx: Context, project: str, name: str, tag: str, request: schemas.TagSet
) -> schemas.VersionOut:
    """Point ``tag`` at a version; moving it is audited with where it was before."""
    pctx = ctx.in_project(project)
    pctx.require("dataset:write", resource=f"project/{project}/dataset/{name}/tag/{tag}")
    validate_name(tag, field="tag")
    if tag == LATEST or tag.isdigit():
        raise InvalidInput(
            f"tag {tag!r} is reserved: 'latest' and numbers name versions", field="tag"
        )
    dataset = _dataset(pctx, name)
    version = _resolve(pctx, dataset, str(request.version))
    existing = pctx.session.get(DatasetTag, (dataset.id, tag))
    previous = existing.version if existing else None
    if existing is None:
        pctx.session.add(DatasetTag(dataset_id=dataset.id, name=tag, version=version.version))
    else:
        existing.version, existing.updated_at = version.version, utcnow()
    pctx.audit(
        "dataset:tag",
        f"project/{project}/dataset/{name}/tag/{tag}",
        detail={"from": previous, "to": version.version},
    )
    pctx.commit()
    return get_version(ctx, project, name, str(version.version))


def delete_tag(ctx: Context, project: str, name: str, tag: str) -> None:
    pctx = ctx.in_project(project)
    pctx.require("dataset:write", resource=f"project/{project}/dataset/{name}/tag/{tag}")
    dataset = _dataset(pctx, name)
    existing = pctx.session.get(DatasetTag, (dataset.id, tag))
    if existing is None:
        raise NotFound(f"dataset {name!r} has no tag {tag!r}", field="tag")
    pctx.session.delete(existing)
    pctx.audit(
        "dataset:untag",
        f"project/{project}/dataset/{name}/tag/{tag}",
        detail={"was": existing.version},
    )
    pctx.commit()
