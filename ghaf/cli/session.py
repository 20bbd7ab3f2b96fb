"""``ghaf login``, ``ghaf logout`` and ``ghaf whoami``: the stored client login."""

from __future__ import annotations

from typing import Annotated

import typer

from ghaf.console.output import JsonOpt, done, fail, print_item, reporting_errors, with_client


def login(
    url: Annotated[str, typer.Option(help="Server URL, e.g. http://127.0.0.1:8080")],
    token: Annotated[
        str | None,
        typer.Option(help="API token; omit to log in with --user and a password prompt."),
    ] = None,
    user: Annotated[str | None, typer.Option(help="User name for password login.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the credentials against the server and store them (mode 0600)."""
    from ghaf.client import Client, credentials

    with reporting_errors():
        url = credentials.normalise_url(url, what="--url")
    if token is None:
        if user is None:
            fail("give --token, or --user to log in with a password")
        password = typer.prompt("password", hide_input=True)
        with reporting_errors():
            token = Client.login(url, user, password).token
    with reporting_errors(), Client(url=url, token=token) as client:
        me = client.whoami()
    path = credentials.save(credentials.Credentials(url=url, token=token))
    done(
        f"logged in to {url} as {me.name}; credentials stored in {path}",
        as_json=as_json,
        payload={"url": url, "name": me.name, "credentials": str(path)},
    )


def logout(as_json: JsonOpt = False) -> None:
    """Forget the stored credentials."""
    from ghaf.client import credentials

    removed = credentials.forget()
    done(
        "logged out" if removed else "was not logged in",
        as_json=as_json,
        payload={"removed": removed},
    )


def whoami(as_json: JsonOpt = False) -> None:
    """Who the stored (or GHAF_URL/GHAF_TOKEN) credentials authenticate as."""
    me = with_client(lambda c: c.whoami())
    print_item(me, as_json=as_json)
