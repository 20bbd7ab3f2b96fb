"""The ``ghaf`` command: a Typer root that each domain adds its group to."""

from __future__ import annotations

import typer

from ghaf import __version__
from ghaf.cli import admin, session
from ghaf.cli.demo import demo
from ghaf.datasets.cli import data
from ghaf.projects.cli import members, projects, service_accounts
from ghaf.registry.cli import gate, models
from ghaf.security.audit.cli import audit
from ghaf.security.cli import groups, tokens, users
from ghaf.storage.cli import artifacts, keys
from ghaf.tracking.cli import experiments, runs

app = typer.Typer(
    name="ghaf",
    help="ghaf: secure-by-default MLOps platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help is plain text: help strings name syntax such as NAME[@ALIAS] and extras such
    # as ghaf[s3], which Rich markup would eat. Sub-commands inherit this.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ghaf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """ghaf: secure-by-default MLOps platform."""


app.command("server")(admin.serve)
app.command("login")(session.login)
app.command("logout")(session.logout)
app.command("whoami")(session.whoami)
app.command("demo")(demo)
app.add_typer(admin.admin, name="admin")
app.add_typer(projects, name="projects")
app.add_typer(members, name="members")
app.add_typer(service_accounts, name="service-accounts")
app.add_typer(users, name="users")
app.add_typer(groups, name="groups")
app.add_typer(tokens, name="tokens")
app.add_typer(audit, name="audit")
app.add_typer(artifacts, name="artifacts")
app.add_typer(keys, name="keys")
app.add_typer(data, name="data")
app.add_typer(experiments, name="experiments")
app.add_typer(runs, name="runs")
app.add_typer(models, name="models")
app.add_typer(gate, name="gate")


def main() -> None:
    app()
