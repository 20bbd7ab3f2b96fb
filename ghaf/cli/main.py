"""The ``ghaf`` command: a Typer root that each domain adds its groups to (its
manifest's ``cli``: ghaf/domains.py).

``app``, the installed command, is lazy: its top level comes from ghaf/cli/index.py,
and a command's module is imported only when that command runs (or shows its help).
``build_cli(domains)`` builds the same command eagerly from a list of domains (the
sample domain's test; tests/cli/test_help.py compares the two).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from importlib import import_module
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand, TyperGroup

from ghaf.cli.index import COMMANDS
from ghaf.core.version import __version__

if TYPE_CHECKING:
    # Typer (0.27+) carries its own copy of click; these are the types its groups use.
    from typer import _click as click

    from ghaf.platform.manifest import Domain

# The platform's own top-level commands; a Typer group (``admin``) is added as a group.
_PLATFORM = ("server", "login", "logout", "whoami", "demo", "admin")
_SETTINGS: dict[str, Any] = {
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "add_completion": False,
    # Help is plain text: help strings name syntax such as NAME[@ALIAS] and extras
    # such as ghaf[s3], which Rich markup would eat. Sub-commands inherit this.
    "rich_markup_mode": None,
}
HELP = "ghaf: secure-by-default MLOps platform."


def _client() -> AbstractContextManager[Any]:
    # Imported on first use: the SDK (httpx) is not needed to print help.
    from ghaf.client import Client

    return Client()


def _connect() -> None:
    """Each domain's commands reach the server through the SDK, handed in here."""
    from ghaf.console import output

    output.connect_with(_client)


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
    from ghaf.console import output

    output.reset_error_format()  # a command's --json turns JSON errors on again


def _resolve(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(import_module(module), attribute)


def _add(root: typer.Typer, name: str, value: Any) -> None:
    if isinstance(value, typer.Typer):
        root.add_typer(value, name=name)
    else:
        root.command(name)(value)


def build_cli(domains: Sequence[Domain] | None = None) -> typer.Typer:
    """The ``ghaf`` command, eagerly: the platform's own commands, then each domain's
    groups (``domains`` defaults to ghaf/domains.py's)."""
    if domains is None:
        from ghaf.domains import DOMAINS

        domains = DOMAINS
    _connect()
    root = typer.Typer(name="ghaf", help=HELP, **_SETTINGS)
    root.callback()(_root)
    targets = {entry.name: entry.target for entry in COMMANDS}
    for name in _PLATFORM:
        _add(root, name, _resolve(targets[name]))
    names = set(_PLATFORM)
    for domain in domains:
        for name, group in domain.cli:
            if name in names:
                raise ValueError(f"domain {domain.name}: CLI group {name!r} is taken")
            names.add(name)
            _add(root, name, group)  # a group, or a command of its own (ghaf serve)
    return root


def _load(name: str) -> click.Command | None:
    """The top-level command ``name``, importing only its module."""
    target = next((entry.target for entry in COMMANDS if entry.name == name), None)
    if target is None:
        # A domain's group not in the index yet: ask the domains themselves.
        full = typer.main.get_group(build_cli())
        found: click.Command | None = full.commands.get(name)
        return found
    _connect()
    single = typer.Typer(**_SETTINGS)
    single.callback()(_root)  # a group with one command, as under the real root
    _add(single, name, _resolve(target))
    command: click.Command = typer.main.get_group(single).commands[name]
    return command


class _LazyRoot(TyperGroup):
    """The root group: lists COMMANDS without importing them; loads one on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [entry.name for entry in COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            command = _load(cmd_name)
            if command is None:
                return None
            self.commands[cmd_name] = command
        return self.commands[cmd_name]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The same rows click would print, from the index instead of the commands.
        placeholders = {e.name: TyperCommand(name=e.name, help=e.help) for e in COMMANDS}
        loaded = {**placeholders, **self.commands}
        limit = formatter.width - 6 - max(len(name) for name in loaded)
        rows = [(name, loaded[name].get_short_help_str(limit)) for name in placeholders]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


app = typer.Typer(name="ghaf", help=HELP, cls=_LazyRoot, **_SETTINGS)
app.callback()(_root)


def main() -> None:
    app()
