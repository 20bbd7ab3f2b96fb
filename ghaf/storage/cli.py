"""``ghaf artifacts`` and ``ghaf keys``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress

from ghaf.console.output import (
    EXIT_CHECK_FAILED,
    CursorOpt,
    JsonOpt,
    PageSizeOpt,
    ProjectOpt,
    console,
    done,
    fail,
    print_item,
    print_json,
    print_page,
    print_table,
    styled,
    transfer_progress,
    with_client,
)
from ghaf.core.paging import DEFAULT_LIMIT

artifacts = typer.Typer(
    help="Encrypted, content-addressed files in a project.", no_args_is_help=True
)
keys = typer.Typer(
    help="A project's key-encryption keys: versions and rotation.", no_args_is_help=True
)

COLUMNS = ("path", "size", "sha256", "region", "created_by", "created_at")


def _bar(description: str, total: int | None, quiet: bool) -> Progress:
    progress = transfer_progress(quiet=quiet)
    progress.add_task(description, total=total)
    return progress


@artifacts.command("upload")
def upload(
    source: Path,
    path: str,
    project: ProjectOpt,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Upload SOURCE (a local file) to PATH: hashed, encrypted, stored once per content."""
    if not source.is_file():
        fail(f"{source} is not a readable file")
    with _bar(f"upload {path}", source.stat().st_size, as_json) as bar:
        task = bar.task_ids[0]
        stored = with_client(
            lambda c: c.artifacts.upload(
                project, path, source, overwrite=overwrite, progress=lambda n: bar.advance(task, n)
            )
        )
    print_item(stored, as_json=as_json, title=f"stored {path}")


@artifacts.command("download")
def download(
    path: str,
    project: ProjectOpt,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Where to write it.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download PATH, verified against its SHA-256 before it lands."""
    target = output or Path(Path(path).name)
    info = with_client(lambda c: c.artifacts.get(project, path))
    with _bar(f"download {path}", info.size, as_json) as bar:
        task = bar.task_ids[0]
        with_client(
            lambda c: c.artifacts.download(
                project, path, target, progress=lambda n: bar.advance(task, n)
            )
        )
    done(
        f"wrote {info.size} bytes to {target}",
        as_json=as_json,
        payload={**info.model_dump(mode="json"), "output": str(target)},
    )


@artifacts.command("show")
def show(path: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """Metadata of PATH: size, SHA-256, region, who stored it and when."""
    print_item(with_client(lambda c: c.artifacts.get(project, path)), as_json=as_json)


@artifacts.command("ls")
def ls(
    project: ProjectOpt,
    prefix: Annotated[str | None, typer.Option(help="Only paths that start with this.")] = None,
    page_size: PageSizeOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List artifacts by path."""
    title = f"artifacts of {project}"
    page = with_client(
        lambda c: c.artifacts.page(project, prefix=prefix, page_size=page_size, cursor=cursor)
    )
    print_page(page, COLUMNS, title=title, as_json=as_json)


@artifacts.command("rm")
def rm(path: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """Delete the artifact at PATH (its content stays while anything else names it)."""
    with_client(lambda c: c.artifacts.delete(project, path))
    done(f"artifact {path} deleted", as_json=as_json)


@artifacts.command("verify")
def verify(project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """Re-read every object; exit 1 and list what is missing, corrupt or orphaned."""
    result = with_client(lambda c: c.artifacts.verify(project))
    if as_json:
        print_json(result)
    else:
        console.print(
            f"checked {result.checked} object(s), {result.bytes_checked} bytes", highlight=False
        )
        for kind in ("missing", "corrupt", "orphaned"):
            for problem in getattr(result, kind):
                where = ", ".join(problem.paths) or problem.key or "?"
                console.print(
                    styled((kind, "red"), f" {where}: {problem.problem}"), highlight=False
                )
        if result.ok:
            console.print(styled(("all objects intact", "green")))
    if not result.ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


@keys.command("ls")
def keys_ls(project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """KEK versions and how many objects each still wraps."""
    result = with_client(lambda c: c.keys.list(project))
    if as_json:
        print_json(result)
        return
    print_table(result.items, ("version", "objects", "current"), title=f"key versions of {project}")
    if result.pending_rewrap:
        console.print(
            f"{result.pending_rewrap} object(s) still wait for re-wrapping: "
            "run `ghaf keys rotate` to finish",
            highlight=False,
        )


@keys.command("rotate")
def keys_rotate(project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """New KEK version and re-wrap every data key (data is not re-encrypted)."""
    result = with_client(lambda c: c.keys.rotate(project))
    verb = "resumed rotation to" if result.resumed else "rotated to"
    done(
        f"{verb} version {result.version}: {result.rewrapped} data key(s) re-wrapped",
        as_json=as_json,
        payload=result,
    )
