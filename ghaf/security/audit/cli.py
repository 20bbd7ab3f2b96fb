"""``ghaf audit ls | verify | export``."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ghaf.console.output import (
    EXIT_CHECK_FAILED,
    CursorOpt,
    JsonOpt,
    PageSizeOpt,
    console,
    fail,
    print_json,
    print_page,
    reporting_errors,
    styled,
    with_client,
)
from ghaf.core.paging import DEFAULT_LIMIT
from ghaf.security.audit.chain import VerifyReport, parse_anchor
from ghaf.security.audit.schemas import VerifyResult
from ghaf.security.audit.service import verify_export

audit = typer.Typer(
    help="Read, verify and export the tamper-evident audit trail.", no_args_is_help=True
)

COLUMNS = ("seq", "ts", "actor", "project", "action", "resource", "outcome", "client")


@audit.command("ls")
def ls(
    project: Annotated[
        str | None, typer.Option("--project", "-p", help="Only this project's events.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time, UTC if naive.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this principal's events.")] = None,
    page_size: PageSizeOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One page of events in chain order, filtered by project, time and actor; prints
    the next page's cursor."""
    if since is not None:
        from ghaf.core.clock import parse_time

        with reporting_errors():
            parse_time(since, field="since")
    page = with_client(
        lambda c: c.audit.page(
            project=project, since=since, actor=actor, page_size=page_size, cursor=cursor
        )
    )
    print_page(page, COLUMNS, title="audit trail", as_json=as_json)


def _report(result: VerifyResult, as_json: bool) -> None:
    if as_json:
        print_json(result)
    elif result.ok:
        signed = (
            "signatures checked"
            if result.signatures_checked
            else ("signatures NOT checked (no key)")
        )
        console.print(
            styled(
                ("audit trail intact", "green"),
                f": {_count(result.rows, 'row')}, "
                f"{_count(result.checkpoints, 'checkpoint')}, {signed}",
            ),
            highlight=False,
        )
    else:
        where = f"at row {result.first_bad_seq}" if result.first_bad_seq else "(not one row)"
        console.print(
            styled(("audit trail BROKEN", "red"), f" {where}: {result.problem}"),
            highlight=False,
            soft_wrap=True,
        )
    if not as_json:
        if result.anchor:
            console.print(
                f"checked against anchor {result.anchor}", highlight=False, soft_wrap=True
            )
        if result.witnessed:
            console.print(
                f"latest witnessed checkpoint: {result.witnessed}  (keep it elsewhere; "
                "check later with --anchor)",
                highlight=False,
                soft_wrap=True,
            )
        for note in result.notes:
            console.print(f"note: {note}", highlight=False)
    if not result.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


def _load_keys(path: Path) -> dict[int, bytes]:
    try:
        data = json.loads(path.read_text())
        return {int(v): base64.b64decode(k) for v, k in data["versions"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        fail(f"{path} is not an audit key file (make one with `ghaf admin audit-key`)")


@audit.command("verify")
def verify(
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Verify an exported JSONL file instead of the server's trail."),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(help="Audit key file for checking signatures of an exported file."),
    ] = None,
    anchor: Annotated[
        str | None,
        typer.Option(
            help="SEQ:HASH kept from an earlier verify: row SEQ must still exist with HASH."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Exit 0 if the chain is intact (against the witness and any anchor), else 1
    naming the first broken or missing row."""
    if file is None:
        result = with_client(lambda c: c.audit.verify(anchor=anchor))
    else:
        keys = _load_keys(key_file) if key_file else {}
        parsed = None
        if anchor is not None:
            try:
                parsed = parse_anchor(anchor)
            except ValueError as exc:
                fail(str(exc))
        try:
            with file.open(encoding="utf-8") as handle:
                report: VerifyReport = verify_export(iter(handle), keys.get, anchor=parsed)
        except OSError as exc:
            fail(f"cannot read {file}: {exc.strerror}")
        result = VerifyResult(**vars(report))
    _report(result, as_json)


@audit.command("export")
def export(
    format_: Annotated[str, typer.Option("--format", help="Only jsonl.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> None:
    """Write the whole trail with checkpoints and signed head, one JSON object a line."""
    if format_ != "jsonl":
        fail(f"--format {format_!r} is not supported; use jsonl")

    def write(client: Any) -> int:
        handle = output.open("w", encoding="utf-8") if output else sys.stdout
        count = 0
        try:
            for line in client.audit.export():
                handle.write(line + "\n")
                count += 1
        finally:
            if output:
                handle.close()
        return count

    count = with_client(write)
    if output:
        console.print(f"wrote {count} lines to {output}", highlight=False)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
