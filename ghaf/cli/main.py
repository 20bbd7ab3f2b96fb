"""The ``ghaf`` command: a Typer root that each domain adds its groups to (its
manifest's ``cli``: ghaf/domains.py)."""

from __future__ import annotations

from collections.abc import Sequence

import typer

from ghaf.cli import admin, session
from ghaf.cli.demo import demo
from ghaf.client import Client
from ghaf.console import output
from ghaf.core.version import __version__
from ghaf.domains import DOMAINS
from ghaf.platform.manifest import Domain

# Each domain's commands reach the server through the SDK, handed in here.
output.connect_with(Client)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ghaf {__version__}")
        raise typer.Exit()


def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """ghaf: secure-by-default MLOps platform."""


def build_cli(domains: Sequence[Domain] = DOMAINS) -> typer.Typer:
    """The ``ghaf`` command: the platform's own commands, then each domain's groups."""
    root = typer.Typer(
        name="ghaf",
        help="ghaf: secure-by-default MLOps platform.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        # Help is plain text: help strings name syntax such as NAME[@ALIAS] and extras
        # such as ghaf[s3], which Rich markup would eat. Sub-commands inherit this.
        rich_markup_mode=None,
    )
    root.callback()(_root)
    root.command("server")(admin.serve)
    root.command("login")(session.login)
    root.command("logout")(session.logout)
    root.command("whoami")(session.whoami)
    root.command("demo")(demo)
    root.add_typer(admin.admin, name="admin")
    names = {"server", "login", "logout", "whoami", "demo", "admin"}
    for domain in domains:
        for name, group in domain.cli:
            if name in names:
                raise ValueError(f"domain {domain.name}: CLI group {name!r} is taken")
            names.add(name)
            root.add_typer(group, name=name)
    return root


app = build_cli()


def main() -> None:
    app()
