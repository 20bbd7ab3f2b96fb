"""``ghaf experiments`` and ``ghaf runs``: list, search, show, compare and sync runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ghaf.console.output import (
    EXIT_CHECK_FAILED,
    CursorOpt,
    DescriptionOpt,
    JsonOpt,
    PageSizeOpt,
    ProjectOpt,
    console,
    done,
    print_item,
    print_json,
    print_page,
    print_table,
    styled,
    with_client,
)
from ghaf.core.paging import DEFAULT_LIMIT
from ghaf.tracking.schemas import RunOut

experiments = typer.Typer(help="Experiments: named groups of runs.", no_args_is_help=True)
runs = typer.Typer(
    help="Runs: params, metrics, artifacts and lineage of training code.", no_args_is_help=True
)
MAX_METRIC_COLUMNS = 6


def _number(value: float | None) -> str:
    if value is None:
        return ""
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.6g}"


@experiments.command("create")
def create_experiment(
    name: str, project: ProjectOpt, description: DescriptionOpt = "", as_json: JsonOpt = False
) -> None:
    """Create an experiment (runs also create theirs on first use)."""
    print_item(
        with_client(lambda c: c.experiments.create(project, name, description=description)),
        as_json=as_json,
        title=f"experiment {name} created",
    )


@experiments.command("ls")
def list_experiments(
    project: ProjectOpt,
    page_size: PageSizeOpt = DEFAULT_LIMIT,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One page of the project's experiments, by name; prints the next page's cursor."""
    page = with_client(lambda c: c.experiments.page(project, page_size=page_size, cursor=cursor))
    print_page(
        page,
        ("name", "description", "created_by", "created_at"),
        title=f"experiments of {project}",
        as_json=as_json,
    )


@runs.command("ls")
def list_runs(
    project: ProjectOpt,
    experiment: Annotated[
        list[str] | None, typer.Argument(help="Experiments (default: all).")
    ] = None,
    filter_: Annotated[
        str,
        typer.Option("--filter", "-f", help="e.g. \"metrics.auc > 0.9 and params.model = 'rf'\""),
    ] = "",
    order_by: Annotated[
        list[str] | None, typer.Option("--order-by", "-o", help="e.g. 'metrics.auc desc'")
    ] = None,
    page_size: PageSizeOpt = 50,
    cursor: CursorOpt = None,
    deleted: Annotated[bool, typer.Option(help="Include deleted runs.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Search runs: a filter over metrics (latest values), params, tags and attributes;
    one page, then the next page's cursor."""
    found = with_client(
        lambda c: c.runs.search(
            project,
            experiment,
            filter=filter_,
            order_by=order_by,
            page_size=page_size,
            cursor=cursor,
            include_deleted=deleted,
        )
    )
    if as_json:
        print_json({"items": list(found), "next_cursor": found.next_cursor})
        return
    if not found:
        console.print(styled(("no runs", "dim")))
        return
    named = [
        o.split()[0].removeprefix("metrics.") for o in order_by or [] if o.startswith("metrics.")
    ]
    keys = list(dict.fromkeys(named + sorted({k for r in found for k in r.metrics})))
    keys = keys[:MAX_METRIC_COLUMNS]
    table = Table(title=f"runs of {project}")
    for column in ("run", "experiment", "name", "status", "started", *keys):
        table.add_column(column)
    for run in found:
        table.add_row(
            run.id[:13],
            run.experiment,
            run.name,
            run.status + (" (deleted)" if run.deleted else ""),
            run.start_time.strftime("%Y-%m-%d %H:%M:%S"),
            *(_number(run.metrics.get(k)) for k in keys),
        )
    console.print(table)
    if found.next_cursor:
        console.print(styled(("next page: --cursor ", "dim"), found.next_cursor), highlight=False)


def _show(run: RunOut) -> None:
    summary = run.model_dump(
        include={
            "id",
            "experiment",
            "name",
            "status",
            "status_reason",
            "start_time",
            "end_time",
            "created_by",
            "note",
        }
    )
    summary["inputs"] = [f"{i.dataset} v{i.version}" for i in run.inputs]
    summary["git"] = run.provenance.get("git_commit")
    summary["command"] = run.provenance.get("command")
    print_item(summary, title=f"run {run.id}")
    for title, values in (("params", run.params), ("tags", run.tags)):
        if values:
            table = Table(title=title)
            table.add_column("key")
            table.add_column("value")
            for key, value in sorted(values.items()):
                table.add_row(key, value)
            console.print(table)
    if run.metrics:
        table = Table(title="metrics (latest)")
        table.add_column("key")
        table.add_column("value")
        for key, number in sorted(run.metrics.items()):
            table.add_row(key, _number(number))
        console.print(table)


@runs.command("show")
def show(run: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """One run: status, params, latest metrics, tags, inputs and artifacts."""
    found = with_client(lambda c: c.runs.get(project, run))
    if as_json:
        print_json(found)
        return
    _show(found)
    artifacts = with_client(lambda c: c.runs.artifacts(project, run))
    print_table(artifacts, ("path", "size", "sha256"), title="artifacts")


@runs.command("compare")
def compare(
    run_ids: Annotated[list[str], typer.Argument(help="Two or more run ids.")],
    project: ProjectOpt,
    as_json: JsonOpt = False,
) -> None:
    """Params that differ and latest metrics, side by side."""
    result = with_client(lambda c: c.runs.compare(project, run_ids))
    if as_json:
        print_json(
            {
                "runs": [r.id for r in result.runs],
                "params": result.params,
                "metrics": result.metrics,
            }
        )
        return
    table = Table(title="compare")
    table.add_column("")
    for run in result.runs:
        table.add_column(f"{run.name}\n{run.id[:13]}")
    for key, values in result.params.items():
        table.add_row(f"params.{key}", *(v if v is not None else "" for v in values))
    if not result.params:
        table.add_row(styled(("(params are equal)", "dim")), *("" for _ in result.runs))
    for key, numbers in result.metrics.items():
        table.add_row(f"metrics.{key}", *(_number(v) for v in numbers))
    console.print(table)


@runs.command("rm")
def delete(run: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """Hide a run from searches (restore brings it back)."""
    found = with_client(lambda c: c.runs.delete(project, run))
    done(f"run {found.id} deleted", as_json=as_json, payload=found)


@runs.command("restore")
def restore(run: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """Restore a deleted run (within the retention)."""
    found = with_client(lambda c: c.runs.restore(project, run))
    done(f"run {found.id} restored", as_json=as_json, payload=found)


@runs.command("download")
def download(
    run: str,
    path: str,
    project: ProjectOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="File or folder.")] = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Download one of a run's artifacts (checked against its SHA-256)."""
    target = with_client(lambda c: c.runs.download_artifact(project, run, path, output))
    done(f"wrote {target}", as_json=as_json, payload={"path": str(target)})


@runs.command("sync")
def sync(as_json: JsonOpt = False) -> None:
    """Send run logs spooled while the server was unreachable."""
    report = with_client(lambda c: c.runs.sync())
    if as_json:
        print_json({"sent": report.sent, "failed": report.failed, "points": report.points})
    else:
        console.print(
            f"sent {len(report.sent)} spooled run(s), {report.points} metric point(s)",
            highlight=False,
        )
        for run_id, problem in report.failed.items():
            console.print(styled(("not sent", "red"), f" {run_id}: {problem}"), highlight=False)
    if report.failed:
        raise typer.Exit(EXIT_CHECK_FAILED)
