"""REST routes for projects, members and service accounts (thin: logic is in service)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from ghaf.core.paging import Page
from ghaf.platform.calls import DEFAULT_PAGE, Call, Cursor, Limit, json_response
from ghaf.projects import schemas, service
from ghaf.security import schemas as security_schemas
from ghaf.storage.service import delete_project_objects

router = APIRouter(tags=["projects"])


@router.post("/projects", status_code=status.HTTP_201_CREATED)
async def create_project(call: Call, body: schemas.ProjectCreate) -> schemas.ProjectOut:
    return await call(service.create_project, body, default_region=call.settings.region)


@router.get("/projects")
async def list_projects(
    call: Call, limit: Limit = DEFAULT_PAGE, cursor: Cursor = None, deleted: bool = False
) -> Page[schemas.ProjectOut]:
    """Projects the caller can see; ``deleted=true`` lists those awaiting purge."""
    items, next_cursor = await call(
        service.list_projects, limit=limit, cursor=cursor, deleted=deleted
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/projects/{name}", response_model=schemas.ProjectOut)
async def get_project(call: Call, name: str) -> Response:
    """Also a hot route (the projects manifest): served before FastAPI's routing."""
    return json_response(await call(service.get_project, name))


@router.patch("/projects/{name}")
async def update_project(call: Call, name: str, body: schemas.ProjectUpdate) -> schemas.ProjectOut:
    """Change the description, or (owners) the regions where the project's data may live."""
    return await call(service.update_project, name, body)


@router.delete("/projects/{name}")
async def delete_project(call: Call, name: str) -> schemas.ProjectOut:
    """Soft-delete; restorable until ``purge_after``."""
    return await call(
        service.delete_project, name, retention_days=call.settings.project_retention_days
    )


@router.post("/projects/{name}/restore")
async def restore_project(call: Call, name: str) -> schemas.ProjectOut:
    return await call(service.restore_project, name)


@router.post("/admin/purge")
async def purge_projects(call: Call) -> dict[str, list[str]]:
    """Remove deleted projects whose retention period has passed (platform admins)."""
    store = call.runtime.store
    purged = await call(
        service.purge_projects,
        on_purge=lambda project_id: delete_project_objects(store, project_id),
    )
    return {"purged": purged}


@router.get("/projects/{name}/members")
async def list_members(call: Call, name: str) -> list[schemas.MemberOut]:
    return await call(service.list_members, name)


@router.post("/projects/{name}/members", status_code=status.HTTP_201_CREATED)
async def add_member(call: Call, name: str, body: schemas.MemberAdd) -> schemas.MemberOut:
    return await call(service.add_member, name, body)


@router.patch("/projects/{name}/members/{subject}")
async def set_member_role(
    call: Call, name: str, subject: str, body: schemas.RoleChange
) -> schemas.MemberOut:
    """``subject`` is a principal name, or ``group:NAME``."""
    return await call(service.set_member_role, name, subject, body)


@router.delete("/projects/{name}/members/{subject}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_member(call: Call, name: str, subject: str) -> None:
    await call(service.remove_member, name, subject)


@router.get("/projects/{name}/service-accounts")
async def list_service_accounts(call: Call, name: str) -> list[security_schemas.PrincipalOut]:
    return await call(service.list_service_accounts, name)


@router.post("/projects/{name}/service-accounts", status_code=status.HTTP_201_CREATED)
async def create_service_account(
    call: Call, name: str, body: schemas.ServiceAccountCreate
) -> security_schemas.PrincipalOut:
    return await call(service.create_service_account, name, body)


@router.delete(
    "/projects/{name}/service-accounts/{account}", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_service_account(call: Call, name: str, account: str) -> None:
    await call(service.delete_service_account, name, account)


@router.post(
    "/projects/{name}/service-accounts/{account}/tokens", status_code=status.HTTP_201_CREATED
)
async def create_service_account_token(
    call: Call, name: str, account: str, body: security_schemas.TokenCreate
) -> security_schemas.TokenCreated:
    return await call(service.create_service_account_token, name, account, body)


@router.get("/projects/{name}/service-accounts/{account}/tokens")
async def list_service_account_tokens(
    call: Call, name: str, account: str
) -> list[security_schemas.TokenOut]:
    return await call(service.list_service_account_tokens, name, account)


@router.delete(
    "/projects/{name}/service-accounts/{account}/tokens/{token}",
    status_code=status.HTTP_204_NO_CONTENT,
)
async def revoke_service_account_token(call: Call, name: str, account: str, token: str) -> None:
    await call(service.revoke_service_account_token, name, account, token)
