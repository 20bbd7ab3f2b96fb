"""Printing results for people (Rich) or scripts (``--json``), and exit codes.

Exit codes: 0 success, 1 a failed check or an unavailable/failed server, 2 usage or
input errors (bad names, unknown resources, refused permissions), 3 the server could
not listen on its address (``ghaf server``: the port is in use).

Every error leaves through :func:`print_error`: one line on stderr (``error: ...``,
never wrapped, never read as markup), or with ``--json`` one JSON object on stderr with
the problem's fields (``type``, ``title``, ``status``, ``detail``, ``field``,
``request_id``), so a script reads stdout for results and stderr for the failure.

Below the domains: each domain's CLI group prints through here. The SDK client, which
sits above the domains (it speaks their schemas), is handed in by the ``ghaf`` command
(:func:`connect_with`, called by ghaf/cli/main.py), so no domain imports it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn, Protocol, TypeVar

import typer
from pydantic import BaseModel
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from ghaf.core.errors import GhafError
from ghaf.core.paging import MAX_LIMIT

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_ADDRESS_IN_USE = 3

# Markup and emoji codes are off: messages carry server-chosen and user-chosen text
# (names, hints such as "pip install 'ghaf[s3]'", "[Errno 111]"), and Rich would
# silently eat anything in square brackets or turn ":name:" into a picture. Styling goes
# through :func:`styled` instead, which never parses its text.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)


class _ErrorFormat:
    """Whether errors print as JSON: the running command's ``--json`` sets it."""

    json = False


def _json_errors(ctx: typer.Context, value: bool) -> bool:
    # Called by click for every command that has --json (with its default too), while
    # the command line is parsed, so errors raised afterwards know how to print; reset
    # when the command is done, so nothing later in the process inherits it.
    _ErrorFormat.json = bool(value)
    ctx.call_on_close(reset_error_format)
    return value


def reset_error_format() -> None:
    """Plain errors until a ``--json`` says otherwise (the ``ghaf`` root calls it)."""
    _ErrorFormat.json = False


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print machine-readable JSON (errors too, on stderr).",
        callback=_json_errors,
    ),
]
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
DescriptionOpt = Annotated[str, typer.Option("--description", help="A free-text description.")]
# A new token's options, the same on every command that mints one.
ReadOnlyOpt = Annotated[
    bool, typer.Option("--read-only", help="The token may read, never change anything.")
]
ExpiresOpt = Annotated[
    float | None,
    typer.Option("--expires-in-days", help="Days until the token expires (default: never)."),
]
T = TypeVar("T")


def styled(*parts: str | tuple[str, str]) -> Text:
    """A line from plain strings and ``(text, style)`` pairs; text is never markup."""
    return Text.assemble(*parts)


def exit_code_for(error: GhafError) -> int:
    """2 for the caller's mistakes (4xx), 1 for everything else."""
    return EXIT_USAGE if 400 <= error.status < 500 else EXIT_CHECK_FAILED


_LINE_BREAKS = re.compile(r"\s*[\r\n]+\s*")


def print_error(problem: dict[str, Any], *, as_json: bool | None = None) -> None:
    """The one way an error reaches the user: ``problem`` (RFC 9457 fields) as one JSON
    object on stderr (``as_json``, by default the command's ``--json``), or as one line
    ``error: DETAIL [FIELD]`` that is never wrapped and never read as markup."""
    if _ErrorFormat.json if as_json is None else as_json:
        sys.stderr.write(json.dumps(_plain(problem), ensure_ascii=False) + "\n")
        sys.stderr.flush()
        return
    detail = _LINE_BREAKS.sub(" ", str(problem.get("detail") or problem.get("title") or ""))
    field = problem.get("field")
    where = f" [{field}]" if field else ""
    # soft_wrap: a long line is left to the terminal, so copying it gives the whole text.
    err_console.print(
        styled(("error:", "red"), f" {detail}{where}"), highlight=False, soft_wrap=True
    )


def fail(message: str, *, code: int = EXIT_USAGE) -> NoReturn:
    """Stop the command with ``message`` (a usage error unless ``code`` says otherwise)."""
    print_error(
        {
            "type": "urn:ghaf:problem:" + ("usage" if code == EXIT_USAGE else "failed"),
            "title": "Invalid usage" if code == EXIT_USAGE else "Command failed",
            "detail": message,
        }
    )
    raise typer.Exit(code)


def fail_with(error: GhafError) -> NoReturn:
    """Stop the command with ``error`` and its exit code."""
    print_error(error.to_problem())
    raise typer.Exit(exit_code_for(error)) from None


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn a ``GhafError`` into :func:`print_error` and the matching exit code."""
    try:
        yield
    except GhafError as error:
        fail_with(error)


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
    cells = [[_cell(getattr(row, c, None)) for c in columns] for row in rows]
    shown = _fitting(columns, cells, console.width)
    table = Table(title=title, show_lines=False)
    for index in shown:
        # The first column names the row (a name, a path): never broken across lines, so
        # it stays greppable and copyable when the table is narrower than its content.
        # The others keep a readable width and fold (never cut) what does not fit.
        table.add_column(
            columns[index],
            no_wrap=index == 0,
            min_width=_min_width(columns[index], cells, index),
            overflow="fold",
        )
    for row_cells in cells:
        table.add_row(*(row_cells[i] for i in shown), style=None)
    console.print(table)
    hidden = [columns[i] for i in range(len(columns)) if i not in shown]
    if hidden:
        console.print(
            styled(
                (f"(not shown at {console.width} columns: {', '.join(hidden)}; ", "dim"),
                ("a wider terminal or --json shows them)", "dim"),
            ),
            highlight=False,
        )


# A column narrower than this (or its header) is unreadable; past it, cells fold.
_MIN_COLUMN = 8
# Rich's default box: one border per column plus one, and one space each side of a cell.
_PER_COLUMN, _EDGE = 3, 1


def _widest(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)


def _min_width(header: str, cells: Sequence[Sequence[str]], index: int) -> int:
    content = max([_widest(header)] + [_widest(row[index]) for row in cells])
    if index == 0:
        return content  # never wrapped (see print_table)
    return min(content, max(_widest(header), _MIN_COLUMN))


def _fitting(columns: Sequence[str], cells: Sequence[Sequence[str]], width: int) -> list[int]:
    """The columns (by index, in order) that fit ``width`` at a readable width each: the
    first always, then each next one while it fits. Callers list columns by importance."""
    shown: list[int] = []
    used = _EDGE
    for index, header in enumerate(columns):
        need = _min_width(header, cells, index) + _PER_COLUMN
        if shown and used + need > width:
            continue  # a narrower column further on may still fit
        shown.append(index)
        used += need
    return shown


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
        # Never wrapped, so the cursor is copied whole even from a narrow terminal.
        console.print(
            styled(
                (f"{len(page.items)} shown, there are more; ", "dim"),
                ("next page: --cursor ", "dim"),
                page.next_cursor,
                (" (with the same command and options)", "dim"),
            ),
            highlight=False,
            soft_wrap=True,
        )


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
        # One line that a terminal may fold but that never gets newlines of ours, so a
        # path or a command in it can be copied whole.
        console.print(message, highlight=False, soft_wrap=True)


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
