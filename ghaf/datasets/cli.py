"""``ghaf datasets``: create datasets, add versions, show, download and alias them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ghaf.console.output import (
    CursorOpt,
    DescriptionOpt,
    JsonOpt,
    PageSizeOpt,
    ProjectOpt,
    console,
    done,
    move_alias,
    print_item,
    print_page,
    print_table,
    styled,
    transfer_progress,
    with_client,
)
from ghaf.core.paging import DEFAULT_LIMIT

datasets = typer.Typer(
    help="Immutable, versioned datasets of files and folders.", no_args_is_help=True
)
VersionArg = Annotated[str, typer.Argument(help="Number, alias or latest.")]


def _source_bytes(source: Path) -> int | None:
    if source.is_file():
        return source.stat().st_size
    if source.is_dir():
        return sum(
            p.stat().st_size for p in source.rglob("*") if p.is_file() and not p.is_symlink()
        )
    return None


@datasets.command("create")
def create(
    name: str, project: ProjectOpt, description: DescriptionOpt = "", as_json: JsonOpt = False
) -> None:
    """Create an empty dataset; `ghaf datasets add` stores its versions."""
    print_item(
        with_client(lambda c: c.datasets.create(project, name, description=description)),
        as_json=as_json,
        title=f"dataset {name} created",
    )


@datasets.command("add")
def add(
    name: str,
    source: str,
    project: ProjectOpt,
    description: Annotated[
        str, typer.Option("--description", "-m", help="What changed in this version.")
    ] = "",
    reference: Annotated[
        bool,
        typer.Option(
            help="Record SOURCE (a path or s3:// prefix) with checksums, without copying it."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a version from a file or folder; only content the project lacks is uploaded."""
    total = None if source.startswith("s3://") else _source_bytes(Path(source))
    with transfer_progress(quiet=as_json) as bars:
        hashing = bars.add_task("hash", total=total)
        uploading = bars.add_task("upload", total=None, visible=not reference)
        version = with_client(
            lambda c: c.datasets.add_version(
                project,
                name,
                source,
                description=description,
                reference=reference,
                hash_progress=lambda n: bars.advance(hashing, n),
                upload_progress=lambda n: bars.advance(uploading, n),
            )
        )
    print_item(version, as_json=as_json, title=f"{name} version {version.version}")


@datasets.command("ls")
def ls(
    project: ProjectOpt,
    page_size: PageSizeOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One page of the project's datasets, by name; prints the next page's cursor."""
    page = with_client(lambda c: c.datasets.page(project, page_size=page_size, cursor=cursor))
    print_page(
        page,
        ("name", "latest", "description", "created_by", "created_at"),
        title=f"datasets of {project}",
        as_json=as_json,
    )


@datasets.command("show")
def show(
    name: str,
    project: ProjectOpt,
    version: Annotated[str | None, typer.Argument(help="Number, alias or latest.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A dataset's versions, or one version in detail."""
    if version is None:
        rows = with_client(lambda c: c.datasets.versions(project, name))
        print_table(
            rows,
            (
                "version",
                "aliases",
                "file_count",
                "total_bytes",
                "description",
                "created_by",
                "created_at",
            ),
            title=f"versions of {name}",
            as_json=as_json,
        )
        return
    print_item(with_client(lambda c: c.datasets.version(project, name, version)), as_json=as_json)


@datasets.command("download")
def download(
    name: str,
    project: ProjectOpt,
    version: VersionArg = "latest",
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder.")] = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Download a version into a folder; every file is checked against its SHA-256."""
    info = with_client(lambda c: c.datasets.version(project, name, version))
    with transfer_progress(quiet=as_json) as bars:
        task = bars.add_task("download", total=info.total_bytes)
        with_client(
            lambda c: c.datasets.download(
                project,
                name,
                info.version,
                destination=output,
                progress=lambda n: bars.advance(task, n),
            )
        )
    done(
        f"wrote {info.file_count} file(s) of {name} v{info.version} to {output}",
        as_json=as_json,
        payload=info,
    )


@datasets.command("alias")
def alias(
    name: str,
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
    project: ProjectOpt,
    version: Annotated[int | None, typer.Argument(help="The version it should name.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS at VERSION (moving it if it exists; every move is audited), or
    remove it with --delete."""
    move_alias(
        lambda c: c.datasets, project, name, alias_name, version, delete=delete, as_json=as_json
    )


@datasets.command("classify")
def classify(
    name: str, column: str, classification: str, project: ProjectOpt, as_json: JsonOpt = False
) -> None:
    """Mark COLUMN public, internal, pii or sensitive (later versions inherit it)."""
    version = with_client(lambda c: c.datasets.classify(project, name, column, classification))
    done(
        f"{name}.{column} is {classification} from version {version.version} on",
        as_json=as_json,
        payload=version,
    )


@datasets.command("diff")
def diff(name: str, before: str, after: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """Files added/removed/changed and, for tables, schema, rows and moved statistics."""
    result = with_client(lambda c: c.datasets.diff(project, name, before, after))
    if as_json:
        print_item(result, as_json=True)
        return
    console.print(f"{name}: v{result.before} -> v{result.after}", highlight=False)
    for label, paths, style in (
        ("+", result.added, "green"),
        ("-", result.removed, "red"),
        ("~", result.changed, "yellow"),
    ):
        for path in paths:
            console.print(styled("  ", (f"{label} {path}", style)), highlight=False)
    for change in result.schema_changes:
        console.print(
            f"  column {change.column}: {change.change} "
            f"({change.before or ''} -> {change.after or ''})",
            highlight=False,
        )
    if result.rows_before is not None or result.rows_after is not None:
        console.print(f"  rows: {result.rows_before} -> {result.rows_after}", highlight=False)
    for shift in result.moved_columns:
        console.print(
            f"  moved: {shift.column} (score {shift.score:.3f}) {shift.before} -> {shift.after}",
            highlight=False,
        )


@datasets.command("lineage")
def lineage(
    name: str,
    project: ProjectOpt,
    version: VersionArg = "latest",
    as_json: JsonOpt = False,
) -> None:
    """Parent versions and what consumed this version."""
    result = with_client(lambda c: c.datasets.lineage(project, name, version))
    if as_json:
        print_item(result, as_json=True)
        return
    chain = " <- ".join(f"v{v}" for v in [result.version, *result.parents])
    console.print(f"{name}: {chain}", highlight=False)
    if not result.consumers:
        console.print("  no recorded consumers yet", highlight=False)
    for consumer in result.consumers:
        console.print(f"  read by {consumer['kind']} {consumer['id']}", highlight=False)
