"""``ghaf users``, ``ghaf groups`` and ``ghaf tokens``."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ghaf.console.output import (
    CursorOpt,
    DescriptionOpt,
    ExpiresOpt,
    JsonOpt,
    PageSizeOpt,
    ReadOnlyOpt,
    done,
    fail,
    print_item,
    print_page,
    print_secret,
    with_client,
)
from ghaf.core.errors import Conflict, NotFound
from ghaf.core.paging import DEFAULT_LIMIT

users = typer.Typer(help="Users (platform admins manage them).", no_args_is_help=True)
groups = typer.Typer(
    help="Groups of users and service accounts; groups hold roles in projects.",
    no_args_is_help=True,
)
group_members = typer.Typer(help="The members of a group.", no_args_is_help=True)
groups.add_typer(group_members, name="members")
tokens = typer.Typer(help="Your API tokens.", no_args_is_help=True)

TOKEN_COLUMNS = ("name", "hint", "project", "read_only", "expires_at", "created_at", "revoked_at")


PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input (scripts, CI).",
    ),
]


def _password(prompt: str, *, from_stdin: bool) -> str:
    """The password from stdin's first line, or asked twice (hidden) at the terminal."""
    if from_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
        if not secret:
            fail("--password-stdin: standard input held no password")
        return secret
    return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))


def _refuse_taken(client: Any, name: str) -> None:  # a ghaf.client.Client
    # Asked before the password prompt, so nobody types a password twice only to hear
    # the name is taken; the create itself still refuses a race with a 409.
    try:
        client.users.get(name)
    except NotFound:
        return
    raise Conflict(f"a user or service account named {name!r} already exists", field="name")


@users.command("create")
def users_create(
    name: str,
    email: Annotated[str | None, typer.Option(help="The user's e-mail address.")] = None,
    password: Annotated[
        bool, typer.Option("--password", help="Prompt for a password (for web login).")
    ] = False,
    password_stdin: PasswordStdinOpt = False,
    platform_admin: Annotated[
        bool, typer.Option("--platform-admin", help="Make the user a platform admin.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a user (platform admins); give --password to let them log in on the web."""
    secret = None
    if password or password_stdin:
        with_client(lambda c: _refuse_taken(c, name))
        secret = _password("password", from_stdin=password_stdin)
    user = with_client(
        lambda c: c.users.create(name, password=secret, email=email, platform_admin=platform_admin)
    )
    print_item(user, as_json=as_json, title=f"user {name} created")


@users.command("ls")
def users_ls(
    page_size: PageSizeOpt = DEFAULT_LIMIT, cursor: CursorOpt = None, as_json: JsonOpt = False
) -> None:
    """One page of users, by name; prints the next page's cursor."""
    print_page(
        with_client(lambda c: c.users.page(page_size=page_size, cursor=cursor)),
        ("name", "email", "platform_admin", "created_at"),
        title="users",
        as_json=as_json,
    )


@users.command("show")
def users_show(name: str, as_json: JsonOpt = False) -> None:
    """Show a user."""
    print_item(with_client(lambda c: c.users.get(name)), as_json=as_json)


@users.command("set-password")
def users_set_password(
    name: str, password_stdin: PasswordStdinOpt = False, as_json: JsonOpt = False
) -> None:
    """Set a user's password (your own, or anyone's as a platform admin); prompts."""
    secret = _password("new password", from_stdin=password_stdin)
    with_client(lambda c: c.users.set_password(name, secret))
    done(f"password of {name} changed", as_json=as_json)


@users.command("unlock")
def users_unlock(name: str, as_json: JsonOpt = False) -> None:
    """Let a user locked out by repeated failed logins log in again (platform admins)."""
    user = with_client(lambda c: c.users.unlock(name))
    done(f"user {name} unlocked", as_json=as_json, payload=user)


@users.command("rm")
def users_rm(name: str, as_json: JsonOpt = False) -> None:
    """Delete a user; every token of theirs stops working on the next request."""
    with_client(lambda c: c.users.delete(name))
    done(f"user {name} deleted", as_json=as_json)


@users.command("token")
def users_token(
    name: str,
    token_name: Annotated[str, typer.Option("--name", help="Token name.")],
    project: Annotated[str | None, typer.Option(help="Limit the token to one project.")] = None,
    read_only: ReadOnlyOpt = False,
    expires_in_days: ExpiresOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token for another user (platform admins); printed once."""
    created = with_client(
        lambda c: c.users.create_token(
            name,
            token_name=token_name,
            project=project,
            read_only=read_only,
            expires_in_days=expires_in_days,
        )
    )
    print_secret(created, as_json=as_json)


@groups.command("create")
def groups_create(name: str, description: DescriptionOpt = "", as_json: JsonOpt = False) -> None:
    """Create a group (platform admins)."""
    print_item(
        with_client(lambda c: c.groups.create(name, description=description)),
        as_json=as_json,
        title=f"group {name} created",
    )


@groups.command("ls")
def groups_ls(
    page_size: PageSizeOpt = DEFAULT_LIMIT, cursor: CursorOpt = None, as_json: JsonOpt = False
) -> None:
    """One page of groups, by name; prints the next page's cursor."""
    print_page(
        with_client(lambda c: c.groups.page(page_size=page_size, cursor=cursor)),
        ("name", "members", "description"),
        title="groups",
        as_json=as_json,
    )


@groups.command("show")
def groups_show(name: str, as_json: JsonOpt = False) -> None:
    """Show a group and its members."""
    print_item(with_client(lambda c: c.groups.get(name)), as_json=as_json)


@groups.command("rm")
def groups_rm(name: str, as_json: JsonOpt = False) -> None:
    """Delete a group; the roles it held in projects go with it."""
    with_client(lambda c: c.groups.delete(name))
    done(f"group {name} deleted", as_json=as_json)


@group_members.command("add")
def group_members_add(group: str, member: str, as_json: JsonOpt = False) -> None:
    """Add a user or service account to a group."""
    updated = with_client(lambda c: c.groups.members.add(group, member))
    done(f"{member} added to {group}", as_json=as_json, payload=updated)


@group_members.command("rm")
def group_members_rm(group: str, member: str, as_json: JsonOpt = False) -> None:
    """Remove a member from a group."""
    updated = with_client(lambda c: c.groups.members.remove(group, member))
    done(f"{member} removed from {group}", as_json=as_json, payload=updated)


@tokens.command("create")
def tokens_create(
    name: str,
    project: Annotated[str | None, typer.Option(help="Limit the token to one project.")] = None,
    read_only: ReadOnlyOpt = False,
    expires_in_days: ExpiresOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token for yourself; the secret is printed once."""
    created = with_client(
        lambda c: c.tokens.create(
            name, project=project, read_only=read_only, expires_in_days=expires_in_days
        )
    )
    print_secret(created, as_json=as_json)


@tokens.command("ls")
def tokens_ls(
    include_revoked: Annotated[
        bool, typer.Option("--include-revoked", help="Also list revoked tokens.")
    ] = False,
    page_size: PageSizeOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One page of your tokens, oldest first; prints the next page's cursor."""
    print_page(
        with_client(
            lambda c: c.tokens.page(
                include_revoked=include_revoked, page_size=page_size, cursor=cursor
            )
        ),
        TOKEN_COLUMNS,
        title="tokens",
        as_json=as_json,
    )


@tokens.command("revoke")
def tokens_revoke(name: str, as_json: JsonOpt = False) -> None:
    """Revoke one of your tokens; it stops working on the very next request."""
    with_client(lambda c: c.tokens.revoke(name))
    done(f"token {name} revoked", as_json=as_json)
