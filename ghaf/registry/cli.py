"""``ghaf models`` (register, list, alias, review, cards, lineage, policy) and
``ghaf gates check`` (a CI/CD step: exit 0 when every gate passes, 1 otherwise).

Wherever a VERSION is expected, give a number, ``latest`` or an alias, or write the
model as ``NAME@ALIAS`` and leave VERSION out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    fail,
    move_alias,
    print_item,
    print_json,
    print_page,
    styled,
    with_client,
)
from ghaf.registry.schemas import GateReport, VersionOut

models = typer.Typer(
    help="Model registry: versions, aliases, approvals, cards, lineage.", no_args_is_help=True
)
policy = typer.Typer(help="The project's registry policy (YAML).", no_args_is_help=True)
gates = typer.Typer(help="Quality gates, for CI/CD pipelines.", no_args_is_help=True)
models.add_typer(policy, name="policy")

VersionArg = Annotated[
    str | None, typer.Argument(help="Number, 'latest' or alias (default: latest).")
]
CommentOpt = Annotated[str, typer.Option("--comment", "-m", help="Why; kept with the review.")]


def load_sample(path: Path, *, rows: int) -> Any:
    """The first ``rows`` rows of a .npy, .npz, .csv or .parquet file."""
    import numpy as np

    suffix = path.suffix.lower()
    if not path.is_file():
        fail(f"sample file {path} does not exist")
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)[:rows]
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name][:rows] for name in archive.files}
    if suffix in (".csv", ".parquet"):
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        table = pcsv.read_csv(path) if suffix == ".csv" else pq.read_table(path)
        table = table.slice(0, rows)
        return {name: table.column(name).to_numpy() for name in table.column_names}
    fail(f"sample file {path}: use .npy, .npz, .csv or .parquet")


def _tags(values: list[str] | None) -> dict[str, str]:
    tags = {}
    for value in values or []:
        key, eq, text = value.partition("=")
        if not eq or not key:
            fail(f"--tag {value!r}: write key=value")
        tags[key] = text
    return tags


def _show_version(version: VersionOut, *, as_json: bool) -> None:
    if as_json:
        print_json(version)
        return
    summary: dict[str, Any] = version.model_dump(
        include={
            "model",
            "version",
            "status",
            "format",
            "filename",
            "size",
            "sha256",
            "run",
            "source",
            "description",
            "tags",
            "aliases",
            "created_by",
            "created_at",
        }
    )
    summary["approvals"] = f"{version.approvals} of {version.approvals_required}"
    summary["inputs"] = [f"{i['name']} {i['dtype']}{i['shape']}" for i in version.inputs]
    summary["outputs"] = [f"{o['name']} {o['dtype']}{o['shape']}" for o in version.outputs]
    if version.onnx is not None:
        summary["onnx"] = f"{version.onnx.sha256[:12]} (max diff {version.onnx.max_abs_diff:.2g})"
    scan = version.checks.get("format", {}).get("scan")
    if scan:
        summary["pickle scan"] = f"{scan['verdict']}: {len(scan['targets'])} targets"
    if version.gates:
        summary["gates"] = "passed" if version.gates["passed"] else "failed"
    print_item(summary, title=f"{version.model} v{version.version}")


@models.command("register")
def register(
    name: str,
    project: ProjectOpt,
    path: Annotated[Path | None, typer.Argument(help="A model file (.onnx, .skops, ...).")] = None,
    run: Annotated[
        str | None, typer.Option(help="A run id: its artifact, or the run that trained PATH.")
    ] = None,
    artifact: Annotated[str, typer.Option(help="The run's artifact path.")] = "model/model.skops",
    sample: Annotated[
        Path | None, typer.Option(help="Sample input: .npy/.npz/.csv/.parquet.")
    ] = None,
    rows: Annotated[int, typer.Option(help="Rows of the sample file to use.")] = 5,
    convert_onnx: Annotated[bool, typer.Option(help="Also store an ONNX conversion.")] = False,
    description: DescriptionOpt = "",
    tag: Annotated[list[str] | None, typer.Option(help="key=value (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a new version: the file is checked without running it (pickles are
    refused), then loaded and run on the sample in a child process."""
    data = load_sample(sample, rows=rows) if sample is not None else None
    version = with_client(
        lambda c: c.models.register(
            project,
            name,
            path=path,
            run=run,
            artifact=artifact,
            sample=data,
            description=description,
            tags=_tags(tag),
            convert_onnx=convert_onnx,
        )
    )
    _show_version(version, as_json=as_json)


@models.command("ls")
def list_models(
    project: ProjectOpt,
    page_size: PageSizeOpt = 100,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The project's models, one page at a time."""
    print_page(
        with_client(lambda c: c.models.page(project, page_size=page_size, cursor=cursor)),
        ("name", "latest_version", "aliases", "description", "created_by", "created_at"),
        title=f"models of {project}",
        as_json=as_json,
    )


@models.command("show")
def show(
    name: str,
    project: ProjectOpt,
    version: VersionArg = None,
    page_size: PageSizeOpt = 100,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A version's details; with only NAME, the model's versions (newest first, a page
    at a time)."""
    if version is None and "@" not in name:
        print_page(
            with_client(
                lambda c: c.models.versions_page(project, name, page_size=page_size, cursor=cursor)
            ),
            ("version", "status", "format", "aliases", "approvals", "created_at"),
            title=f"versions of {name}",
            as_json=as_json,
        )
        return
    _show_version(with_client(lambda c: c.models.version(project, name, version)), as_json=as_json)


@models.command("alias")
def alias(
    name: str,
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS")],
    project: ProjectOpt,
    version: Annotated[int | None, typer.Argument(help="The version it should name.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS at VERSION (one audited call), or remove it with --delete."""
    move_alias(
        lambda c: c.models, project, name, alias_name, version, delete=delete, as_json=as_json
    )


@models.command("download")
def download(
    name: str,
    project: ProjectOpt,
    version: VersionArg = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="File or folder.")] = Path("."),
    onnx: Annotated[bool, typer.Option(help="The ONNX conversion instead.")] = False,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            metavar="DIR",
            help="Write a self-describing bundle into this new or empty folder instead "
            "(file, signature, SHA-256, metadata, card): `ghaf serve --bundle DIR` serves it "
            "with no platform.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a version's model file (or its ONNX conversion), checked by SHA-256."""
    if bundle is not None:
        folder = with_client(
            lambda c: c.models.download(
                project, name, version, destination=bundle, onnx=onnx, bundle=True
            )
        )
        done(
            f"bundle written to {folder} (SHA-256 verified); serve it with: "
            f"ghaf serve --bundle {folder} --invoke-key-file KEYFILE",
            as_json=as_json,
            payload={"path": str(folder)},
        )
        return
    target = with_client(
        lambda c: c.models.download(project, name, version, destination=output, onnx=onnx)
    )
    done(f"saved {target} (SHA-256 verified)", as_json=as_json, payload={"path": str(target)})


@models.command("lineage")
def lineage(
    name: str, project: ProjectOpt, version: VersionArg = None, as_json: JsonOpt = False
) -> None:
    """Where the version came from (run, dataset versions) and where it went (aliases,
    its ONNX conversion, deployments)."""
    found = with_client(lambda c: c.models.lineage(project, name, version))
    if as_json:
        print_json(found)
        return
    console.print(styled((f"{found.model} v{found.version}", "bold")))
    console.print("upstream:")
    if found.run:
        run = found.run
        console.print(f"  <- run {run['id']} ({run['experiment']}/{run['name']}, {run['status']})")
    for item in found.datasets:
        console.print(f"  <- dataset {item['dataset']} v{item['version']} (via {item['via']})")
    if not found.run and not found.datasets:
        console.print(styled("  ", ("none recorded", "dim")))
    console.print("downstream:")
    for name_ in found.aliases:
        console.print(f"  -> alias {found.model}@{name_}")
    if found.onnx:
        console.print(f"  -> ONNX conversion {found.onnx['sha256'][:12]}")
    for deployment in found.deployments:
        console.print(f"  -> deployment {deployment}")
    if not (found.aliases or found.onnx or found.deployments):
        console.print(styled("  ", ("none yet", "dim")))


def _review_command(action: str, help_text: str) -> None:
    """``ghaf models request-approval|approve|reject NAME [VERSION] -m COMMENT``."""

    def command(
        name: str,
        project: ProjectOpt,
        version: VersionArg = None,
        comment: CommentOpt = "",
        as_json: JsonOpt = False,
    ) -> None:
        result = with_client(
            lambda c: getattr(c.models, action)(project, name, version, comment=comment)
        )
        done(
            f"{result.model} v{result.version}: {result.status} "
            f"({result.approvals} of {result.approvals_required} approvals)",
            as_json=as_json,
            payload=result,
        )

    command.__doc__ = help_text
    models.command(action.replace("_", "-"))(command)


_review_command("request_approval", "Ask for review of a pending version (with a comment).")
_review_command("approve", "Approve (needs model:approve; not a version you registered).")
_review_command("reject", "Reject, with a comment saying why (needs model:approve).")


@models.command("archive")
def archive(
    name: str, project: ProjectOpt, version: VersionArg = None, as_json: JsonOpt = False
) -> None:
    """Archive a version: kept and readable, no longer a candidate for aliases."""
    found = with_client(lambda c: c.models.update(project, name, version, archive=True))
    done(f"{found.model} v{found.version} archived", as_json=as_json, payload=found)


@models.command("card")
def card(
    name: str,
    project: ProjectOpt,
    version: VersionArg = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="field=value; lists (owners, training_data) comma-separated."),
    ] = None,
    format_: Annotated[str, typer.Option("--format", help="markdown, html or json.")] = "markdown",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the card to this file.")
    ] = None,
) -> None:
    """Show (or with --set, update) a version's model card."""
    if format_ not in ("markdown", "html", "json"):
        fail("--format is markdown, html or json")
    changes: dict[str, Any] = {}
    for item in set_ or []:
        key, eq, value = item.partition("=")
        if not eq:
            fail(f"--set {item!r}: write field=value")
        listed = key in ("owners", "training_data")
        changes[key] = [v.strip() for v in value.split(",") if v.strip()] if listed else value
    found = with_client(
        lambda c: (
            c.models.update_card(project, name, version, **changes)
            if changes
            else c.models.card(project, name, version)
        )
    )
    text = {"markdown": found.markdown, "html": found.html}.get(format_)
    if text is None:
        print_json(found)
        return
    if output is not None:
        output.write_text(text)
        console.print(f"card written to {output}")
    else:
        console.print(text, markup=False, highlight=False)
    if found.missing:
        console.print(
            styled((f"required by policy, still empty: {', '.join(found.missing)}", "yellow"))
        )


@policy.command("show")
def policy_show(project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """Show the project's model policy (as YAML; --json as REST answers it)."""
    found = with_client(lambda c: c.models.policy(project))
    if as_json:
        print_json(found)
    else:
        # Written as is: wrapping would break the YAML that `policy set` reads back.
        console.print(found.text or "# no policy set: defaults apply", markup=False, soft_wrap=True)


@policy.command("set")
def policy_set(
    file: Annotated[Path, typer.Argument(help="The policy as YAML.")],
    project: ProjectOpt,
    as_json: JsonOpt = False,
) -> None:
    """Replace the registry policy (validated; errors name the line). Needs policy:write."""
    if not file.is_file():
        fail(f"{file} does not exist")
    found = with_client(lambda c: c.models.set_policy(project, file.read_text()))
    done(f"registry policy of {project} set ({found.sha256[:12]})", as_json=as_json, payload=found)


def print_gates(report: GateReport) -> None:
    table = Table(title=f"gates for {report.model} v{report.version}")
    for column in ("rule", "result", "measured", "expected", "detail"):
        table.add_column(column)
    for result in report.results:
        measured = result.measured
        shown = f"{measured:.6g}" if isinstance(measured, float) else str(measured or "")
        table.add_row(
            result.rule,
            styled(("pass", "green")) if result.passed else styled(("FAIL", "red")),
            shown,
            result.expected,
            result.detail,
        )
    console.print(table)
    failed = sum(not r.passed for r in report.results)
    if not report.results:
        console.print(styled(("the policy has no gates", "dim")))
    elif failed:
        console.print(styled((f"{failed} of {len(report.results)} gates failed", "red")))
    else:
        console.print(styled((f"all {len(report.results)} gates passed", "green")))


@gates.command("check")
def gates_check(
    name: str, project: ProjectOpt, version: VersionArg = None, as_json: JsonOpt = False
) -> None:
    """Measure every gate of the project's policy on a version; exit 0 if all pass, 1 if
    any fails (2 for usage or permission errors), so it works as a CI/CD step."""
    report = with_client(lambda c: c.models.check_gates(project, name, version))
    if as_json:
        print_json(report)
    else:
        print_gates(report)
    if not report.passed:
        raise typer.Exit(EXIT_CHECK_FAILED)
