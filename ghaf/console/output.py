"""Printing results for people (Rich) or scripts (``--json``), and exit codes.

Exit codes: 0 success, 1 a failed check or an unavailable/failed server, 2 usage or
input errors (bad names, unknown resources, refused permissions).

Below the domains: each domain's CLI group prints through here. The SDK client, which
sits above the domains (it speaks their schemas), is handed in by the ``ghaf`` command
(:func:`connect_with`, called by ghaf/cli/main.py), so no domain imports it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn, Protocol, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from ghaf.core.errors import GhafError
from ghaf.core.paging import MAX_LIMIT

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2

# Markup is off: messages carry server-chosen and user-chosen text (names, hints such as
# "pip install 'ghaf[s3]'"), and Rich would silently eat anything in square brackets.
# Styling goes through :func:`styled` instead, which never parses its text.
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
# The same options on every command that has them (docs/conventions.md): ``ls`` prints one
# page of ``--page-size`` items and the cursor of the next.
ProjectOpt = Annotated[
    str, typer.Option("--project", "-p", envvar="GHAF_PROJECT", help="Project name.")
]
PageSizeOpt = Annotated[
    int,
    typer.Option("--page-size", min=1, max=MAX_LIMIT, help=f"Items per page (1-{MAX_LIMIT})."),
]
CursorOpt = Annotated[
    str | None, typer.Option("--cursor", help="The next cursor a previous page printed.")
]
T = TypeVar("T")


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line from plain strings and ``(text, style)`` pairs; text is never markup."""
    return Text.assemble(*parts)


def exit_code_for(error: GhafError) -> int:
    return EXIT_USAGE if 400 <= error.status < 500 else EXIT_CHECK_FAILED


def fail(message: str, *, code: int = EXIT_USAGE) -> NoReturn:
    err_console.print(styled(("error:", "red"), f" {message}"), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn a ``GhafError`` into one line on stderr and the matching exit code."""
    try:
        yield
    except GhafError as error:
        where = f" [{error.field}]" if error.field else ""
        err_console.print(
            styled(("error:", "red"), f" {error.detail}{where}"), highlight=False, soft_wrap=True
        )
        raise typer.Exit(exit_code_for(error)) from None


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, ensure_ascii=False) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def print_table(
    rows: Sequence[BaseModel],
    columns: Sequence[str],
    *,
    title: str | None = None,
    as_json: bool = False,
) -> None:
    if as_json:
        print_json(list(rows))
        return
    if not rows:
        console.print(styled((f"no {title or 'results'}", "dim")))
        return
    table = Table(title=title, show_lines=False)
    for index, column in enumerate(columns):
        # The first column names the row (a name, a path): never broken across lines, so
        # it stays greppable and copyable when the table is narrower than its content.
        table.add_column(column, no_wrap=index == 0)
    for row in rows:
        table.add_row(*(_cell(getattr(row, c, None)) for c in columns), style=None)
    console.print(table)


class _Page(Protocol):
    @property
    def items(self) -> Sequence[BaseModel]: ...
    @property
    def next_cursor(self) -> str | None: ...


def print_page(
    page: _Page, columns: Sequence[str], *, title: str | None = None, as_json: bool = False
) -> None:
    """One page of a list (``ls --page-size/--cursor``), then the cursor of the next one;
    ``--json`` prints the page as REST answers it."""
    if as_json:
        print_json({"items": list(page.items), "next_cursor": page.next_cursor})
        return
    print_table(page.items, columns, title=title)
    if page.next_cursor:
        console.print(styled(("next page: --cursor ", "dim"), page.next_cursor), highlight=False)


def print_item(
    item: BaseModel | dict[str, Any], *, as_json: bool = False, title: str | None = None
) -> None:
    if as_json:
        print_json(item)
        return
    data = item.model_dump() if isinstance(item, BaseModel) else item
    table = Table(show_header=False, title=title, box=None)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, _cell(value))
    console.print(table)


def done(message: str, *, as_json: bool, payload: Any = None) -> None:
    if as_json:
        print_json(payload if payload is not None else {"ok": True, "message": message})
    else:
        console.print(message, highlight=False)


class Secret(Protocol):
    """A just-created token (``ghaf.security.schemas.TokenCreated``)."""

    @property
    def name(self) -> str: ...
    @property
    def principal(self) -> str: ...
    @property
    def token(self) -> str: ...


def print_secret(created: Secret, *, as_json: bool) -> None:
    """A new token: the only time its secret is ever shown."""
    if as_json:
        print_json(created)
    else:
        console.print(
            f"token {created.name} for {created.principal} (shown once, store it now):\n"
            f"{created.token}",
            highlight=False,
        )


def transfer_progress(*, quiet: bool) -> Progress:
    """Rich bars for byte transfers (hash, upload, download); silent with ``--json``."""
    return Progress(
        TextColumn("{task.description}", markup=False, style="progress.description"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )


_connect: Callable[[], AbstractContextManager[Any]] | None = None


def connect_with(connect: Callable[[], AbstractContextManager[Any]]) -> None:
    """Set how :func:`with_client` connects: ``ghaf.client.Client`` (the stored login)."""
    global _connect
    _connect = connect


def move_alias(
    collection: Callable[[Any], Any],
    project: str,
    name: str,
    alias: str,
    version: int | None,
    *,
    delete: bool,
    as_json: bool,
) -> None:
    """``alias NAME ALIAS VERSION`` (or ``--delete``) for datasets and models alike:
    ``collection(client)`` is the SDK resource (``client.datasets``, ``client.models``)."""
    if delete:
        with_client(lambda c: collection(c).delete_alias(project, name, alias))
        done(f"alias {alias} of {name} removed", as_json=as_json)
        return
    if version is None:
        fail("give the VERSION the alias should name (or --delete)")
    moved = with_client(lambda c: collection(c).set_alias(project, name, alias, version))
    was = f" (was v{moved.previous})" if moved.previous else ""
    done(f"{name}@{alias} -> v{moved.version}{was}", as_json=as_json, payload=moved)


def with_client(fn: Callable[[Any], T]) -> T:
    """Run ``fn(client)`` with the stored login, reporting errors the CLI way."""
    if _connect is None:
        raise RuntimeError("no SDK client: the ghaf command (ghaf.cli.main) sets it")
    with reporting_errors(), _connect() as client:
        return fn(client)
