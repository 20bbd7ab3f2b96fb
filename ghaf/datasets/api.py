"""REST routes for datasets (thin: logic is in service)."""

from __future__ import annotations

from fastapi import APIRouter, status

from ghaf.core.paging import Page
from ghaf.datasets import schemas, service
from ghaf.platform.calls import DEFAULT_PAGE, Call, Cursor, Limit

router = APIRouter(tags=["datasets"])
BASE = "/projects/{project}/datasets"


@router.post(BASE, status_code=status.HTTP_201_CREATED)
async def create_dataset(
    call: Call, project: str, body: schemas.DatasetCreate
) -> schemas.DatasetOut:
    return await call(service.create_dataset, project, body)


@router.get(BASE)
async def list_datasets(
    call: Call, project: str, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None
) -> Page[schemas.DatasetOut]:
    items, next_cursor = await call(service.list_datasets, project, limit=limit, cursor=cursor)
    return Page(items=items, next_cursor=next_cursor)


@router.get(BASE + "/{name}")
async def get_dataset(call: Call, project: str, name: str) -> schemas.DatasetOut:
    return await call(service.get_dataset, project, name)


@router.post(BASE + "/{name}/versions", status_code=status.HTTP_201_CREATED)
async def create_version(
    call: Call, project: str, name: str, body: schemas.VersionCreate
) -> schemas.VersionOut:
    """A new immutable version from a manifest whose content was uploaded as blobs."""
    return await call(service.create_version, project, name, body)


@router.get(BASE + "/{name}/versions")
async def list_versions(call: Call, project: str, name: str) -> list[schemas.VersionOut]:
    return await call(service.list_versions, project, name)


@router.get(BASE + "/{name}/versions/{ref}")
async def get_version(call: Call, project: str, name: str, ref: str) -> schemas.VersionOut:
    """``ref`` is a version number, ``latest`` or a tag."""
    return await call(service.get_version, project, name, ref)


@router.get(BASE + "/{name}/versions/{ref}/files")
async def list_files(
    call: Call,
    project: str,
    name: str,
    ref: str,
    limit: Limit = DEFAULT_PAGE,
    cursor: Cursor = None,
) -> Page[schemas.ManifestEntry]:
    items, next_cursor = await call(
        service.list_files, project, name, ref, limit=limit, cursor=cursor
    )
    return Page(items=items, next_cursor=next_cursor)


@router.put(BASE + "/{name}/tags/{tag}")
async def set_tag(
    call: Call, project: str, name: str, tag: str, body: schemas.TagSet
) -> schemas.VersionOut:
    return await call(service.set_tag, project, name, tag, body)


@router.delete(BASE + "/{name}/tags/{tag}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_tag(call: Call, project: str, name: str, tag: str) -> None:
    await call(service.delete_tag, project, name, tag)


@router.put(BASE + "/{name}/columns/{column}/classification")
async def classify(
    call: Call, project: str, name: str, column: str, body: schemas.ClassificationSet
) -> schemas.VersionOut:
    """Classify a column (public, internal, pii, sensitive); later versions inherit it."""
    return await call(service.classify, project, name, column, body)


@router.get(BASE + "/{name}/diff")
async def diff(call: Call, project: str, name: str, before: str, after: str) -> schemas.VersionDiff:
    """What changed between two versions (numbers, tags or latest)."""
    return await call(service.diff, project, name, before, after)


@router.get(BASE + "/{name}/versions/{ref}/lineage")
async def lineage(call: Call, project: str, name: str, ref: str) -> schemas.Lineage:
    return await call(service.lineage, project, name, ref)
