"""REST routes for datasets (thin: logic is in service)."""

from __future__ import annotations

from fastapi import APIRouter, status

from ghaf.core.paging import DEFAULT_LIMIT, Page
from ghaf.datasets import schemas, service
from ghaf.platform.calls import Call, Cursor, PageSize

router = APIRouter(tags=["datasets"])
BASE = "/projects/{project}/datasets"
DATASET = BASE + "/{dataset}"
VERSION = DATASET + "/versions/{version}"


@router.post(BASE, status_code=status.HTTP_201_CREATED)
async def create_dataset(
    call: Call, project: str, body: schemas.DatasetCreate
) -> schemas.DatasetOut:
    return await call(service.create_dataset, project, body)


@router.get(BASE)
async def list_datasets(
    call: Call, project: str, page_size: PageSize = DEFAULT_LIMIT, cursor: Cursor = None
) -> Page[schemas.DatasetOut]:
    items, next_cursor = await call(service.list_datasets, project, limit=page_size, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get(DATASET)
async def get_dataset(call: Call, project: str, dataset: str) -> schemas.DatasetOut:
    return await call(service.get_dataset, project, dataset)


@router.post(DATASET + "/versions", status_code=status.HTTP_201_CREATED)
async def create_version(
    call: Call, project: str, dataset: str, body: schemas.VersionCreate
) -> schemas.VersionOut:
    """A new immutable version from a manifest whose content was uploaded as blobs."""
    return await call(service.create_version, project, dataset, body)


@router.get(DATASET + "/versions")
async def list_versions(
    call: Call,
    project: str,
    dataset: str,
    page_size: PageSize = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[schemas.VersionOut]:
    """The dataset's versions, oldest first."""
    items, next_cursor = await call(
        service.list_versions, project, dataset, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get(VERSION)
async def get_version(call: Call, project: str, dataset: str, version: str) -> schemas.VersionOut:
    """``version`` is a version number, an alias or ``latest``."""
    return await call(service.get_version, project, dataset, version)


@router.get(VERSION + "/files")
async def list_files(
    call: Call,
    project: str,
    dataset: str,
    version: str,
    page_size: PageSize = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[schemas.ManifestEntry]:
    items, next_cursor = await call(
        service.list_files, project, dataset, version, limit=page_size, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.put(DATASET + "/aliases/{alias}")
async def set_alias(
    call: Call, project: str, dataset: str, alias: str, body: schemas.AliasSet
) -> schemas.AliasOut:
    """Point ``alias`` at a version (moving it if it exists; every move is audited)."""
    return await call(service.set_alias, project, dataset, alias, body)


@router.delete(DATASET + "/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_alias(call: Call, project: str, dataset: str, alias: str) -> None:
    await call(service.delete_alias, project, dataset, alias)


@router.put(DATASET + "/columns/{column}/classification")
async def classify(
    call: Call, project: str, dataset: str, column: str, body: schemas.ClassificationSet
) -> schemas.VersionOut:
    """Classify a column (public, internal, pii, sensitive); later versions inherit it."""
    return await call(service.classify, project, dataset, column, body)


@router.get(DATASET + "/diff")
async def diff(
    call: Call, project: str, dataset: str, before: str, after: str
) -> schemas.VersionDiff:
    """What changed between two versions (numbers, aliases or latest)."""
    return await call(service.diff, project, dataset, before, after)


@router.get(VERSION + "/lineage")
async def lineage(call: Call, project: str, dataset: str, version: str) -> schemas.Lineage:
    return await call(service.lineage, project, dataset, version)
