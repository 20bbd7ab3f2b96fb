"""Dataset logic: versions are immutable manifests over the project's content-addressed
blobs, so a new version that changes 10 of 10,000 files stores 10 files."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import func, insert, literal, select
from sqlalchemy.orm import Session

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import among, insert_many, insert_new, insert_unique
from ghaf.core.errors import Conflict, InvalidInput, NotFound
from ghaf.core.names import validate_name
from ghaf.core.paging import paginate
from ghaf.core.refs import is_reserved, parse_ref
from ghaf.datasets import schemas
from ghaf.datasets.models import (
    Dataset,
    DatasetAlias,
    DatasetColumnClass,
    DatasetFile,
    DatasetVersion,
    DatasetVersionConsumer,
)
from ghaf.security.context import Context
from ghaf.storage.models import Blob
from ghaf.storage.paths import normalise_path

LATEST = "latest"


def _names_blob(session: Session, blob_id: str) -> bool:
    """Storage's reference check (this domain's manifest declares it)."""
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


class Row(NamedTuple):
    """A manifest entry as stored: the blob it names, or the URI it references."""

    path: str
    size: int
    sha256: str
    blob_id: str | None
    uri: str | None


def manifest_sha256(files: Sequence[Row | schemas.ManifestEntry]) -> str:
    """SHA-256 over ``path\tsize\tsha256\n`` lines in path order: the version's identity."""
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
        if entry.uri is not None and not entry.uri.startswith(("s3://", "file:///")):
            raise InvalidInput(
                f"files.{index}.uri must be an s3:// or file:/// URI", field=f"files.{index}.uri"
            )
        checked.append(entry if path == entry.path else entry.model_copy(update={"path": path}))
    return checked


def _blobs_for(pctx: Context, files: list[schemas.ManifestEntry]) -> dict[str, str]:
    """sha256 -> blob id, refusing content the project does not hold or of another size."""
    assert pctx.project is not None
    files = [f for f in files if f.uri is None]  # external references hold no blob
    wanted = sorted({f.sha256 for f in files})
    found: dict[str, tuple[str, int]] = {
        sha: (blob_id, size)
        for blob_id, sha, size in pctx.session.execute(
            select(Blob.id, Blob.sha256, Blob.size).where(
                Blob.project_id == pctx.project.id, among(pctx.session, Blob.sha256, wanted)
            )
        )
    }
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
    """A new immutable version; concurrent adds get distinct numbers.

    The request lists every file, or (with ``base``) only the changes since an earlier
    version, whose unchanged entries are then carried over without being sent again.
    """
    pctx = ctx.in_project(project)
    pctx.require("dataset:write", resource=f"project/{project}/dataset/{name}")
    changed = _checked_manifest(request.files)
    removed = _checked_removals(request, changed)
    for attempt in range(10):
        dataset = _dataset(pctx, name)
        blobs = _blobs_for(pctx, changed)
        rows = [
            Row(f.path, f.size, f.sha256, None if f.uri else blobs[f.sha256], f.uri)
            for f in changed
        ]
        latest = _latest(pctx.session, dataset.id)
        changed_rows, base_id = rows, None
        if request.base is not None:
            base_id, rows = _apply_changes(pctx, dataset, request, rows, removed)
        if not rows:
            raise InvalidInput("a version needs at least one file", field="files")
        number = (latest or 0) + 1
        table = request.table
        version = DatasetVersion(
            dataset_id=dataset.id,
            version=number,
            parent=request.base or latest,
            description=request.description,
            file_count=len(rows),
            total_bytes=sum(r.size for r in rows),
            manifest_sha256=manifest_sha256(rows),
            provenance=request.provenance,
            created_by=pctx.actor,
            table_schema=table.table_schema if table else None,
            profile=table.profile if table else None,
            row_count=int(table.profile.get("rows", 0)) if table else None,
            external=any(r.uri for r in rows),
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
        if base_id is not None:
            _carry_over(pctx, base_id, version.id, [r.path for r in changed_rows] + [*removed])
        # Straight through the driver: a version may list 100,000 files.
        insert_many(
            pctx.session,
            DatasetFile.__table__,
            ["version_id", *Row._fields],
            [(version.id, *row) for row in (rows if base_id is None else changed_rows)],
        )
        pctx.audit(
            "dataset:add-version",
            f"project/{project}/dataset/{name}/v{number}",
            detail={
                "files": len(rows),
                "bytes": version.total_bytes,
                "manifest_sha256": version.manifest_sha256,
                **(
                    {"base": request.base, "changed": len(changed), "removed": len(removed)}
                    if request.base is not None
                    else {}
                ),
            },
        )
        pctx.commit()
        return _version_out(version, name, [], _classes(pctx.session, dataset.id, number))
    raise AssertionError("unreachable")


def _checked_removals(
    request: schemas.VersionCreate, changed: list[schemas.ManifestEntry]
) -> set[str]:
    if request.base is None:
        if request.removed:
            raise InvalidInput(
                "removed needs base: the version the paths are removed from", field="removed"
            )
        if not changed:
            raise InvalidInput("a version needs at least one file", field="files")
        return set()
    if request.base_manifest_sha256 is None:
        raise InvalidInput(
            "base_manifest_sha256 is required with base", field="base_manifest_sha256"
        )
    removed = {normalise_path(p, field=f"removed.{i}") for i, p in enumerate(request.removed)}
    both = removed & {f.path for f in changed}
    if both:
        raise InvalidInput(f"{sorted(both)[0]!r} is both changed and removed", field="removed")
    return removed


def _apply_changes(
    pctx: Context,
    dataset: Dataset,
    request: schemas.VersionCreate,
    changed: list[Row],
    removed: set[str],
) -> tuple[str, list[Row]]:
    """The base version's id, and its manifest with ``changed`` put in and ``removed``
    taken out."""
    base = request.base
    version = _resolve(pctx, dataset, str(base))
    if version.manifest_sha256 != request.base_manifest_sha256:
        raise Conflict(
            f"version {base} of {dataset.name!r} is not the one these changes were made "
            f"against (its manifest is {version.manifest_sha256}); send the whole manifest",
            field="base_manifest_sha256",
        )
    merged = {
        row.path: row
        for row in map(
            Row._make,
            pctx.session.execute(
                select(
                    DatasetFile.path,
                    DatasetFile.size,
                    DatasetFile.sha256,
                    DatasetFile.blob_id,
                    DatasetFile.uri,
                ).where(DatasetFile.version_id == version.id)
            ),
        )
    }
    absent = sorted(removed - merged.keys())
    if absent:
        raise InvalidInput(f"removed path {absent[0]!r} is not in version {base}", field="removed")
    for path in removed:
        del merged[path]
    merged.update((row.path, row) for row in changed)
    return version.id, list(merged.values())


def _carry_over(pctx: Context, base_id: str, version_id: str, excluded: list[str]) -> None:
    """Copy the base version's entries, except ``excluded`` paths, inside the database."""
    columns = ["version_id", *Row._fields]
    pctx.session.execute(
        insert(DatasetFile.__table__).from_select(  # type: ignore[arg-type]
            columns,
            select(
                literal(version_id),
                DatasetFile.path,
                DatasetFile.size,
                DatasetFile.sha256,
                DatasetFile.blob_id,
                DatasetFile.uri,
            ).where(
                DatasetFile.version_id == base_id,
                ~among(pctx.session, DatasetFile.path, excluded),
            ),
        )
    )


def _version_out(
    version: DatasetVersion,
    dataset: str,
    aliases: list[str],
    classifications: dict[str, str] | None = None,
) -> schemas.VersionOut:
    return schemas.VersionOut(
        external=version.external,
        row_count=version.row_count,
        table_schema=version.table_schema,
        profile=version.profile,
        classifications=classifications or {},
        dataset=dataset,
        version=version.version,
        parent=version.parent,
        description=version.description,
        file_count=version.file_count,
        total_bytes=version.total_bytes,
        manifest_sha256=version.manifest_sha256,
        provenance=version.provenance,
        aliases=aliases,
        created_at=as_utc(version.created_at),
        created_by=version.created_by,
    )


def _aliases(session: Session, dataset_id: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for alias in session.scalars(
        select(DatasetAlias)
        .where(DatasetAlias.dataset_id == dataset_id)
        .order_by(DatasetAlias.alias)
    ):
        out.setdefault(alias.version, []).append(alias.alias)
    return out


def _resolve(pctx: Context, dataset: Dataset, ref: str) -> DatasetVersion:
    """A version number, ``latest``, or an alias."""
    number: int | None
    parsed = parse_ref(ref, field="version", alias_field="version")
    if parsed.latest:
        number = _latest(pctx.session, dataset.id)
    elif parsed.number is not None:
        number = parsed.number
    else:
        number = pctx.session.scalar(
            select(DatasetAlias.version).where(
                DatasetAlias.dataset_id == dataset.id, DatasetAlias.alias == parsed.alias
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
        raise NotFound(f"dataset {dataset.name!r} has no version or alias {ref!r}", field="version")
    return version


def list_versions(
    ctx: Context, project: str, name: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.VersionOut], str | None]:
    """The dataset's versions, oldest first, one page."""
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/dataset/{name}")
    dataset = _dataset(pctx, name)
    aliases = _aliases(pctx.session, dataset.id)
    latest = _latest(pctx.session, dataset.id)
    versions, next_cursor = paginate(
        pctx.session,
        select(DatasetVersion).where(DatasetVersion.dataset_id == dataset.id),
        key=DatasetVersion.version,
        limit=limit,
        cursor=cursor,
    )
    return [
        _version_out(
            v, name, aliases.get(v.version, []) + ([LATEST] if v.version == latest else [])
        )
        for v in versions
    ], next_cursor


def get_version(ctx: Context, project: str, name: str, version: str) -> schemas.VersionOut:
    """One version's metadata; ``version`` is a number, an alias or ``latest``."""
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/dataset/{name}")
    return _version_of(pctx, _dataset(pctx, name), version)


def _version_of(pctx: Context, dataset: Dataset, ref: str) -> schemas.VersionOut:
    found = _resolve(pctx, dataset, ref)
    aliases = _aliases(pctx.session, dataset.id).get(found.version, [])
    if found.version == _latest(pctx.session, dataset.id):
        aliases = [*aliases, LATEST]
    return _version_out(
        found, dataset.name, aliases, _classes(pctx.session, dataset.id, found.version)
    )


def list_files(
    ctx: Context, project: str, name: str, version: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.ManifestEntry], str | None]:
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/dataset/{name}")
    found = _resolve(pctx, _dataset(pctx, name), version)
    rows, next_cursor = paginate(
        pctx.session,
        select(DatasetFile).where(DatasetFile.version_id == found.id),
        key=DatasetFile.path,
        limit=limit,
        cursor=cursor,
    )
    return [
        schemas.ManifestEntry(path=f.path, size=f.size, sha256=f.sha256, uri=f.uri) for f in rows
    ], next_cursor


def _alias_resource(project: str, name: str, alias: str) -> str:
    return f"project/{project}/dataset/{name}/alias/{alias}"


def set_alias(
    ctx: Context, project: str, name: str, alias: str, request: schemas.AliasSet
) -> schemas.AliasOut:
    """Point ``alias`` at a version; moving it is audited with where it was before."""
    pctx = ctx.in_project(project)
    pctx.require("dataset:write", resource=_alias_resource(project, name, alias))
    validate_name(alias, field="alias")
    if is_reserved(alias):
        raise InvalidInput(
            f"alias {alias!r} is reserved: 'latest' and numbers name versions", field="alias"
        )
    dataset = _dataset(pctx, name)
    version = _resolve(pctx, dataset, str(request.version))
    row = pctx.session.get(DatasetAlias, (dataset.id, alias))
    previous = row.version if row else None
    if row is None:
        row = DatasetAlias(dataset_id=dataset.id, alias=alias, version=version.version)
        pctx.session.add(row)
    row.version, row.updated_at, row.updated_by = version.version, utcnow(), pctx.actor
    pctx.audit(
        "dataset:alias",
        _alias_resource(project, name, alias),
        detail={"from": previous, "to": version.version},
    )
    pctx.commit()
    return schemas.AliasOut(
        dataset=name,
        alias=alias,
        version=version.version,
        previous=previous,
        updated_by=row.updated_by,
        updated_at=as_utc(row.updated_at),
    )


def delete_alias(ctx: Context, project: str, name: str, alias: str) -> None:
    """Remove an alias; the version it named is untouched."""
    pctx = ctx.in_project(project)
    pctx.require("dataset:write", resource=_alias_resource(project, name, alias))
    validate_name(alias, field="alias")
    dataset = _dataset(pctx, name)
    row = pctx.session.get(DatasetAlias, (dataset.id, alias))
    if row is None:
        raise NotFound(f"dataset {name!r} has no alias {alias!r}", field="alias")
    pctx.session.delete(row)
    pctx.audit(
        "dataset:alias-delete",
        _alias_resource(project, name, alias),
        detail={"was": row.version},
    )
    pctx.commit()


# --- classification, diff, lineage --------------------------------------------------


def _classes(session: Session, dataset_id: str, version: int) -> dict[str, str]:
    """Each column's classification as of ``version`` (the newest setting at or before)."""
    out: dict[str, tuple[int, str]] = {}
    for row in session.scalars(
        select(DatasetColumnClass).where(
            DatasetColumnClass.dataset_id == dataset_id, DatasetColumnClass.since_version <= version
        )
    ):
        if row.column not in out or row.since_version > out[row.column][0]:
            out[row.column] = (row.since_version, row.classification)
    return {column: cls for column, (_, cls) in sorted(out.items())}


def classify(
    ctx: Context, project: str, name: str, column: str, request: schemas.ClassificationSet
) -> schemas.VersionOut:
    """Classify a column from the latest version on; later versions inherit it."""
    pctx = ctx.in_project(project)
    pctx.require("dataset:write", resource=f"project/{project}/dataset/{name}/column/{column}")
    dataset = _dataset(pctx, name)
    latest = _resolve(pctx, dataset, LATEST)
    names = [c["name"] for c in latest.table_schema or []]
    if column not in names:
        raise NotFound(
            f"version {latest.version} of {name!r} has no column {column!r}"
            + (f"; columns: {', '.join(names)}" if names else " (it is not tabular)"),
            field="column",
        )
    before = _classes(pctx.session, dataset.id, latest.version).get(column)
    row = pctx.session.get(DatasetColumnClass, (dataset.id, column, latest.version))
    if row is None:
        pctx.session.add(
            DatasetColumnClass(
                dataset_id=dataset.id,
                column=column,
                since_version=latest.version,
                classification=request.classification,
            )
        )
    else:
        row.classification, row.updated_at = request.classification, utcnow()
    pctx.audit(
        "dataset:classify",
        f"project/{project}/dataset/{name}/column/{column}",
        detail={"from": before, "to": request.classification, "since_version": latest.version},
    )
    pctx.commit()
    return _version_of(pctx, dataset, str(latest.version))


def _manifest(session: Session, version_id: str) -> dict[str, str]:
    return dict(
        session.execute(
            select(DatasetFile.path, DatasetFile.sha256).where(DatasetFile.version_id == version_id)
        ).all()
    )


def _shift(before: dict[str, Any], after: dict[str, Any]) -> float:
    score = abs(float(after.get("null_rate", 0)) - float(before.get("null_rate", 0)))
    mean_b, mean_a, std_b = before.get("mean"), after.get("mean"), before.get("std")
    if all(isinstance(v, int | float) for v in (mean_b, mean_a, std_b)):
        score += abs(float(mean_a) - float(mean_b)) / (float(std_b) or 1.0)  # type: ignore[arg-type]
    return round(score, 6)


def diff(ctx: Context, project: str, name: str, before: str, after: str) -> schemas.VersionDiff:
    """Files added, removed and changed; for tables also schema, rows and moved stats."""
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/dataset/{name}")
    dataset = _dataset(pctx, name)
    old, new = _resolve(pctx, dataset, before), _resolve(pctx, dataset, after)
    files_old, files_new = _manifest(pctx.session, old.id), _manifest(pctx.session, new.id)
    result = schemas.VersionDiff(
        dataset=name,
        before=old.version,
        after=new.version,
        added=sorted(set(files_new) - set(files_old)),
        removed=sorted(set(files_old) - set(files_new)),
        changed=sorted(p for p in set(files_old) & set(files_new) if files_old[p] != files_new[p]),
        rows_before=old.row_count,
        rows_after=new.row_count,
    )
    types_old = {c["name"]: c["type"] for c in old.table_schema or []}
    types_new = {c["name"]: c["type"] for c in new.table_schema or []}
    for column in sorted(set(types_old) | set(types_new)):
        if column not in types_old:
            result.schema_changes.append(
                schemas.SchemaChange(column=column, change="added", after=types_new[column])
            )
        elif column not in types_new:
            result.schema_changes.append(
                schemas.SchemaChange(column=column, change="removed", before=types_old[column])
            )
        elif types_old[column] != types_new[column]:
            result.schema_changes.append(
                schemas.SchemaChange(
                    column=column,
                    change="retyped",
                    before=types_old[column],
                    after=types_new[column],
                )
            )
    stats_old = (old.profile or {}).get("columns", {})
    stats_new = (new.profile or {}).get("columns", {})
    shifts = [
        schemas.StatShift(
            column=c,
            score=_shift(stats_old[c], stats_new[c]),
            before=_brief(stats_old[c]),
            after=_brief(stats_new[c]),
        )
        for c in set(stats_old) & set(stats_new)
    ]
    result.moved_columns = sorted((s for s in shifts if s.score > 0), key=lambda s: -s.score)[:10]
    return result


def _brief(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: stats[k] for k in ("null_rate", "mean", "std", "min", "max") if k in stats}


def lineage(ctx: Context, project: str, name: str, version_ref: str) -> schemas.Lineage:
    """Parents of a version (back to version 1) and what consumed it."""
    pctx = ctx.in_project(project)
    pctx.require("dataset:read", resource=f"project/{project}/dataset/{name}")
    dataset = _dataset(pctx, name)
    version = _resolve(pctx, dataset, version_ref)
    parents: list[int] = []
    parent = version.parent
    while parent is not None:
        parents.append(parent)
        parent = pctx.session.scalar(
            select(DatasetVersion.parent).where(
                DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == parent
            )
        )
    consumers = [
        {"kind": c.consumer_kind, "id": c.consumer_id}
        for c in pctx.session.scalars(
            select(DatasetVersionConsumer).where(DatasetVersionConsumer.version_id == version.id)
        )
    ]
    return schemas.Lineage(
        dataset=name, version=version.version, parents=parents, consumers=consumers
    )


def record_consumer(
    pctx: Context, name: str, version_ref: str, *, kind: str, consumer_id: str
) -> int:
    """Lineage from a domain above: ``consumer_id`` (a run, a job) read this version.

    ``pctx`` is already narrowed to the project; reading the version needs
    ``dataset:read``. Recording it twice is harmless. Returns the version number.
    """
    assert pctx.project is not None
    pctx.require("dataset:read", resource=f"project/{pctx.project.name}/dataset/{name}")
    version = _resolve(pctx, _dataset(pctx, name), version_ref)
    insert_new(
        pctx.session,
        DatasetVersionConsumer,
        [{"version_id": version.id, "consumer_kind": kind, "consumer_id": consumer_id}],
    )
    return version.version


def consumed_by(pctx: Context, kind: str, consumer_ids: list[str]) -> dict[str, list[Any]]:
    """For domains above (tracking, the registry): for each consumer id, the (dataset
    name, version) pairs of ``pctx``'s project it read. Needs ``dataset:read``."""
    assert pctx.project is not None
    pctx.require("dataset:read", resource=f"project/{pctx.project.name}/datasets")
    session = pctx.session
    rows = session.execute(
        select(DatasetVersionConsumer.consumer_id, Dataset.name, DatasetVersion.version)
        .join(DatasetVersion, DatasetVersion.id == DatasetVersionConsumer.version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(
            Dataset.project_id == pctx.project.id,
            DatasetVersionConsumer.consumer_kind == kind,
            among(session, DatasetVersionConsumer.consumer_id, consumer_ids),
        )
        .order_by(Dataset.name, DatasetVersion.version)
    )
    found: dict[str, list[Any]] = {}
    for consumer_id, dataset, version in rows:
        found.setdefault(consumer_id, []).append((dataset, version))
    return found
