"""``ghaf projects``, ``ghaf members`` and ``ghaf service-accounts``."""

from __future__ import annotations

from typing import Annotated

import typer

from ghaf.console.output import (
    CursorOpt,
    DescriptionOpt,
    ExpiresOpt,
    JsonOpt,
    PageSizeOpt,
    ProjectOpt,
    ReadOnlyOpt,
    done,
    print_item,
    print_page,
    print_secret,
    print_table,
    with_client,
)
from ghaf.core.paging import DEFAULT_LIMIT

projects = typer.Typer(
    help="Create, list, show, delete and restore projects.", no_args_is_help=True
)
members = typer.Typer(help="Grant, change and remove roles in a project.", no_args_is_help=True)
service_accounts = typer.Typer(
    help="Non-human principals owned by a project.", no_args_is_help=True
)

Role = Annotated[str, typer.Option("--role", help="viewer, member, maintainer or owner.")]
MEMBER_COLUMNS = ("subject", "kind", "role", "created_at")
ACCOUNT_COLUMNS = ("name", "created_at")
PROJECT_COLUMNS = ("name", "role", "allowed_regions", "description", "created_at")


@projects.command("create")
def create(
    name: str,
    description: DescriptionOpt = "",
    region: Annotated[
        list[str] | None, typer.Option("--region", help="Allowed region (repeat for several).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a project; you become its owner."""
    project = with_client(
        lambda c: c.projects.create(name, description=description, allowed_regions=region)
    )
    print_item(project, as_json=as_json, title=f"project {name} created")


@projects.command("ls")
def ls(
    deleted: Annotated[bool, typer.Option(help="List deleted projects awaiting purge.")] = False,
    page_size: PageSizeOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the projects you can see."""
    columns = (*PROJECT_COLUMNS, "purge_after") if deleted else PROJECT_COLUMNS
    page = with_client(
        lambda c: c.projects.page(deleted=deleted, page_size=page_size, cursor=cursor)
    )
    print_page(page, columns, title="projects", as_json=as_json)


@projects.command("show")
def show(name: str, as_json: JsonOpt = False) -> None:
    """Show a project: its description, allowed regions and your role."""
    print_item(with_client(lambda c: c.projects.get(name)), as_json=as_json)


@projects.command("update")
def update(
    name: str,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    region: Annotated[
        list[str] | None,
        typer.Option("--region", help="Allowed region, repeat for several (owners)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a project's description or its allowed regions."""
    project = with_client(
        lambda c: c.projects.update(name, description=description, allowed_regions=region)
    )
    print_item(project, as_json=as_json, title=f"project {name} updated")


@projects.command("rm")
def rm(name: str, as_json: JsonOpt = False) -> None:
    """Soft-delete a project (owners); it can be restored until it is purged."""
    project = with_client(lambda c: c.projects.delete(name))
    done(
        f"project {name} deleted; restorable until {project.purge_after}",
        as_json=as_json,
        payload=project,
    )


@projects.command("restore")
def restore(name: str, as_json: JsonOpt = False) -> None:
    """Undo `projects rm` before the project is purged (owners)."""
    project = with_client(lambda c: c.projects.restore(name))
    done(f"project {name} restored", as_json=as_json, payload=project)


@projects.command("purge")
def purge(as_json: JsonOpt = False) -> None:
    """Permanently remove deleted projects past their retention (platform admins)."""
    purged = with_client(lambda c: c.projects.purge())
    done(
        f"purged {len(purged)} project(s): {', '.join(purged) or '-'}",
        as_json=as_json,
        payload={"purged": purged},
    )


@members.command("ls")
def members_ls(
    project: ProjectOpt,
    page_size: PageSizeOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Principals and groups holding a role."""
    title = f"members of {project}"
    page = with_client(lambda c: c.members.page(project, page_size=page_size, cursor=cursor))
    print_page(page, MEMBER_COLUMNS, title=title, as_json=as_json)


@members.command("add")
def members_add(
    project: ProjectOpt,
    role: Role,
    principal: Annotated[str | None, typer.Option(help="User or service account.")] = None,
    group: Annotated[str | None, typer.Option(help="Group name.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant a role to a principal or a group."""
    member = with_client(
        lambda c: c.members.add(project, role=role, principal=principal, group=group)
    )
    done(f"{member.subject} is now {member.role} in {project}", as_json=as_json, payload=member)


@members.command("update")
def members_update(project: ProjectOpt, member: str, role: Role, as_json: JsonOpt = False) -> None:
    """Change a role. MEMBER is a principal name or group:NAME."""
    updated = with_client(lambda c: c.members.update(project, member, role=role))
    done(f"{updated.subject} is now {updated.role} in {project}", as_json=as_json, payload=updated)


@members.command("rm")
def members_rm(project: ProjectOpt, member: str, as_json: JsonOpt = False) -> None:
    """Remove MEMBER's role (a principal name or group:NAME)."""
    with_client(lambda c: c.members.remove(project, member))
    done(f"{member} removed from {project}", as_json=as_json)


@service_accounts.command("create")
def sa_create(
    project: ProjectOpt,
    name: str,
    role: Annotated[str, typer.Option(help="Role in the project.")] = "member",
    as_json: JsonOpt = False,
) -> None:
    """Create a service account holding ROLE in the project (mint it a token next)."""
    account = with_client(lambda c: c.service_accounts.create(project, name, role=role))
    print_item(account, as_json=as_json, title=f"service account {name} created")


@service_accounts.command("ls")
def sa_ls(
    project: ProjectOpt,
    page_size: PageSizeOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The project's service accounts."""
    title = f"service accounts of {project}"
    page = with_client(
        lambda c: c.service_accounts.page(project, page_size=page_size, cursor=cursor)
    )
    print_page(page, ACCOUNT_COLUMNS, title=title, as_json=as_json)


@service_accounts.command("rm")
def sa_rm(project: ProjectOpt, name: str, as_json: JsonOpt = False) -> None:
    """Delete a service account; its tokens stop working at once."""
    with_client(lambda c: c.service_accounts.delete(project, name))
    done(f"service account {name} deleted", as_json=as_json)


@service_accounts.command("token")
def sa_token(
    project: ProjectOpt,
    name: str,
    token_name: Annotated[str, typer.Option("--name", help="Token name.")],
    read_only: ReadOnlyOpt = False,
    expires_in_days: ExpiresOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token for a service account (printed once)."""
    created = with_client(
        lambda c: c.service_accounts.create_token(
            project,
            name,
            token_name=token_name,
            read_only=read_only,
            expires_in_days=expires_in_days,
        )
    )
    print_secret(created, as_json=as_json)


@service_accounts.command("tokens")
def sa_tokens(project: ProjectOpt, name: str, as_json: JsonOpt = False) -> None:
    """List a service account's tokens (never their secrets)."""
    rows = with_client(lambda c: c.service_accounts.list_tokens(project, name))
    print_table(
        rows,
        ("name", "hint", "read_only", "expires_at", "created_at"),
        title=f"tokens of {name}",
        as_json=as_json,
    )


@service_accounts.command("revoke-token")
def sa_revoke_token(
    project: ProjectOpt,
    name: str,
    token_name: Annotated[str, typer.Option("--name", help="The token's name.")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a service account's token; it stops working on the next request."""
    with_client(lambda c: c.service_accounts.revoke_token(project, name, token_name))
    done(f"token {token_name} of {name} revoked", as_json=as_json)
