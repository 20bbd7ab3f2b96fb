"""``ghaf deploy``: create, change, list, show, remove deployments; their history and
rollback; A/B tests and canary rollouts.

A variant is written ``NAME=MODEL@ALIAS:WEIGHT`` or ``NAME=MODEL:VERSION:WEIGHT``
(``--variant``, repeatable), or the whole spec comes from a YAML/JSON file
(``--spec``) with the fields of REST's body.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from ghaf.console.output import (
    CursorOpt,
    DescriptionOpt,
    JsonOpt,
    PageSizeOpt,
    ProjectOpt,
    done,
    fail,
    print_item,
    print_json,
    print_page,
    print_table,
    with_client,
)
from ghaf.core.paging import Page
from ghaf.deployments.schemas import (
    AbTestReport,
    DeploymentOut,
    RolloutOut,
    VariantEvidence,
    VariantResult,
)

deploy = typer.Typer(
    help="Deployments: named endpoints serving model variants (splits, shadows, rollbacks).",
    no_args_is_help=True,
)

VariantOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--variant",
        help="NAME=MODEL@ALIAS:WEIGHT or NAME=MODEL:VERSION:WEIGHT (repeatable); "
        "WEIGHT 'shadow' makes it a shadow.",
    ),
]
SpecOpt = Annotated[
    Path | None, typer.Option("--spec", help="A YAML or JSON file with the spec's fields.")
]
ReasonOpt = Annotated[str, typer.Option("--reason", "-m", help="Why (kept with the revision).")]
AbTestOpt = Annotated[
    str | None,
    typer.Option(
        "--abtest",
        help="Compare the live variants: binary:CONTROL (conversions) or numeric:CONTROL.",
    ),
]
StickyOpt = Annotated[
    str | None,
    typer.Option(help="Keep users on a variant by header:NAME or field:NAME of the request."),
]


def parse_variant(text: str) -> dict[str, Any]:
    """``champion=churn@champion:50`` or ``b=churn:3:50`` or ``s=churn:4:shadow``."""
    name, eq, rest = text.partition("=")
    if not eq or not name or not rest:
        fail(f"--variant {text!r}: write NAME=MODEL@ALIAS:WEIGHT or NAME=MODEL:VERSION:WEIGHT")
    head, colon, weight = rest.rpartition(":")
    if not colon or not head:
        fail(f"--variant {text!r}: the weight is missing (…:50, or …:shadow)")
    model, at, alias = head.partition("@")
    if at:
        version: str = f"@{alias}"
    else:
        model, colon, version = head.partition(":")
        if not colon or not version:
            fail(f"--variant {text!r}: name the version (MODEL:3 or MODEL@ALIAS)")
    if not model:
        fail(f"--variant {text!r}: the model is missing (NAME=MODEL:VERSION:WEIGHT)")
    variant: dict[str, Any] = {"name": name, "model": model, "version": version}
    if weight == "shadow":
        variant["shadow"] = True
    else:
        try:
            variant["weight"] = float(weight)
        except ValueError:
            fail(f"--variant {text!r}: the weight {weight!r} is not a number or 'shadow'")
    return variant


def _sticky(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    kind, colon, name = text.partition(":")
    if not colon or kind not in ("header", "field") or not name:
        fail(f"--sticky {text!r}: write header:NAME or field:NAME")
    return {kind: name}


def _abtest(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    kind, colon, control = text.partition(":")
    if not colon or kind not in ("binary", "numeric") or not control:
        fail(f"--abtest {text!r}: write binary:CONTROL or numeric:CONTROL")
    return {"kind": kind, "control": control}


def _spec_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"--spec {path}: {exc}")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except ValueError as exc:  # json and yaml errors both derive from it
        fail(f"--spec {path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}")
    if not isinstance(data, dict):
        fail(f"--spec {path}: the file must hold a mapping of the spec's fields")
    return data


def _abtest_text(config: dict[str, Any] | None) -> str:
    if not config:
        return "no"
    return f"{config['kind']}, control {config['control']}, alpha {config['alpha']:g}"


def _show(deployment: DeploymentOut, *, as_json: bool) -> None:
    if as_json:
        print_json(deployment)
        return
    variants = []
    for variant in deployment.spec["variants"]:
        held = deployment.resolved[variant["name"]]
        share = "shadow" if variant.get("shadow") else f"{variant['weight']:g}%"
        follows = f" (follows @{held.follows})" if held.follows else ""
        variants.append(f"{variant['name']}: {held.model} v{held.version}{follows} {share}")
    sticky = deployment.spec.get("sticky") or {}
    print_item(
        {
            "name": deployment.name,
            "revision": deployment.revision,
            "production": deployment.production,
            "variants": variants,
            "sticky": ", ".join(f"{k}:{v}" for k, v in sticky.items()) or "no",
            "host": deployment.spec.get("host"),
            "abtest": _abtest_text(deployment.spec.get("abtest")),
            "description": deployment.description,
            "updated_by": deployment.updated_by,
            "updated_at": deployment.updated_at,
        },
        title=f"deployment {deployment.name}",
    )


@deploy.command("create")
def create(
    name: str,
    project: ProjectOpt,
    variant: VariantOpt = None,
    spec: SpecOpt = None,
    production: Annotated[
        bool, typer.Option(help="Take only approved versions whose gates pass.")
    ] = False,
    sticky: StickyOpt = None,
    abtest: AbTestOpt = None,
    host: Annotated[
        str | None,
        typer.Option(help="embedded (replicas on this server) or ray (Ray Serve; ghaf[ray])."),
    ] = None,
    description: DescriptionOpt = "",
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Create a deployment (revision 1)."""
    body = _spec_file(spec)
    variants = [parse_variant(v) for v in variant or []] or body.get("variants")
    if not variants:
        fail("give at least one --variant, or a --spec file with variants")
    out = with_client(
        lambda c: c.deployments.create(
            project,
            name,
            variants=variants,
            production=production or bool(body.get("production", False)),
            sticky=_sticky(sticky) or body.get("sticky"),
            host=host or body.get("host", "embedded"),
            abtest=_abtest(abtest) or body.get("abtest"),
            description=description or body.get("description", ""),
            reason=reason,
        )
    )
    _show(out, as_json=as_json)


@deploy.command("update")
def update(
    name: str,
    project: ProjectOpt,
    variant: VariantOpt = None,
    spec: SpecOpt = None,
    production: Annotated[
        bool | None, typer.Option("--production/--no-production", help="Change the stage.")
    ] = None,
    sticky: StickyOpt = None,
    no_sticky: Annotated[bool, typer.Option(help="Stop sticky assignment.")] = False,
    abtest: AbTestOpt = None,
    no_abtest: Annotated[bool, typer.Option(help="Stop the A/B test.")] = False,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Change a deployment: a new revision (the variants given replace all of them)."""
    body = _spec_file(spec)
    variants = [parse_variant(v) for v in variant or []] or body.get("variants")
    out = with_client(
        lambda c: c.deployments.update(
            project,
            name,
            variants=variants,
            production=production if production is not None else body.get("production"),
            sticky=_sticky(sticky) or body.get("sticky"),
            clear_sticky=no_sticky,
            host=body.get("host"),
            abtest=_abtest(abtest) or body.get("abtest"),
            clear_abtest=no_abtest,
            description=description,
            reason=reason,
        )
    )
    _show(out, as_json=as_json)


@deploy.command("ls")
def list_deployments(
    project: ProjectOpt,
    page_size: PageSizeOpt = 100,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The project's deployments, one page at a time."""
    print_page(
        with_client(lambda c: c.deployments.page(project, page_size=page_size, cursor=cursor)),
        ("name", "revision", "production", "updated_by", "updated_at"),
        title=f"deployments of {project}",
        as_json=as_json,
    )


@deploy.command("show")
def show(name: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """A deployment's current revision: what each variant serves, and its share."""
    _show(with_client(lambda c: c.deployments.get(project, name)), as_json=as_json)


@deploy.command("rm")
def remove(name: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """Remove a deployment (its history stays in the audit trail)."""
    with_client(lambda c: c.deployments.delete(project, name))
    done(f"deployment {name} removed", as_json=as_json)


@deploy.command("history")
def history(
    name: str,
    project: ProjectOpt,
    page_size: PageSizeOpt = 100,
    cursor: CursorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The deployment's revisions, newest first."""
    page = with_client(
        lambda c: c.deployments.revisions_page(project, name, page_size=page_size, cursor=cursor)
    )
    if as_json:
        print_json(page)
        return
    rows = [
        _HistoryRow(
            revision=r.revision,
            serves=", ".join(f"{k}={v.model}:{v.version}" for k, v in r.resolved.items()),
            reason=r.reason,
            created_by=r.created_by,
            created_at=r.created_at,
        )
        for r in page.items
    ]
    print_page(
        Page(items=rows, next_cursor=page.next_cursor),
        ("revision", "serves", "reason", "created_by", "created_at"),
        title=f"revisions of {name}",
    )


class _HistoryRow(BaseModel):
    revision: int
    serves: str
    reason: str
    created_by: str | None
    created_at: datetime


@deploy.command("rollback")
def rollback(
    name: str,
    revision: Annotated[int, typer.Argument(min=1, help="The revision to return to.")],
    project: ProjectOpt,
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Return to an earlier revision's spec and versions, as a new revision."""
    out = with_client(lambda c: c.deployments.rollback(project, name, revision, reason=reason))
    _show(out, as_json=as_json)


@deploy.command("metrics")
def metrics(project: ProjectOpt) -> None:
    """The project's deployments as Prometheus text: requests by outcome, latency,
    replicas, shadow drops and cold starts, by deployment and variant."""
    typer.echo(with_client(lambda c: c.deployments.metrics(project)), nl=False)


abtest = typer.Typer(
    help="The A/B test between a deployment's live variants.", no_args_is_help=True
)
outcomes = typer.Typer(help="Outcomes per request id, for the A/B test.", no_args_is_help=True)
deploy.add_typer(abtest, name="abtest")
deploy.add_typer(outcomes, name="outcomes")


@abtest.command("report")
def abtest_report(name: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """Per variant: n, mean and interval; lift against the control, the fixed-horizon
    and the always-valid p-value; the winner once the sequential test is significant."""
    report = with_client(lambda c: c.deployments.abtest_report(project, name))
    if as_json:
        print_json(report)
        return
    print_report(report)


def print_report(report: AbTestReport) -> None:
    """An A/B report as a table, then the verdict (also the demo's)."""
    rows = [_ReportRow.of(v) for v in report.variants]
    print_table(
        rows,
        # The always-valid p-value first: it is the one to decide on, and what a narrow
        # terminal shows; the fixed-horizon one is valid only when read once.
        ("variant", "n", "mean", "lift", "sequential_p", "significant", "p_value", "interval"),
        title=f"A/B test of {report.deployment} ({report.kind}, alpha {report.alpha:g})",
    )
    verdict = f"winner: {report.winner}" if report.winner else "no winner yet"
    extra = []
    if report.unknown_outcomes:
        extra.append(f"{report.unknown_outcomes} outcomes for unknown request ids")
    if report.duplicate_outcomes:
        extra.append(f"{report.duplicate_outcomes} duplicates")
    done(verdict + (f" ({'; '.join(extra)})" if extra else ""), as_json=False)


class _ReportRow(BaseModel):
    variant: str
    n: int
    mean: str
    interval: str
    lift: str
    p_value: str
    sequential_p: str
    significant: str

    @classmethod
    def of(cls, v: VariantResult) -> _ReportRow:
        def num(x: float | None) -> str:
            return "" if x is None else f"{x:.4g}"

        def pair(x: tuple[float, float] | None) -> str:
            return "" if x is None else f"[{x[0]:.4g}, {x[1]:.4g}]"

        lift = num(v.lift)
        if v.relative_lift is not None:
            lift += f" ({v.relative_lift:+.1%})"
        return cls(
            variant=v.variant + (" (control)" if v.note == "control" else ""),
            n=v.n,
            mean=num(v.mean),
            interval=pair(v.interval),
            lift=lift,
            p_value=num(v.p_value),
            sequential_p=num(v.sequential_p_value),
            significant="yes" if v.significant else "",
        )


@abtest.command("promote")
def promote(
    name: str, project: ProjectOpt, reason: ReasonOpt = "", as_json: JsonOpt = False
) -> None:
    """Give the winner all live traffic, as a new revision (refused while none has won)."""
    _show(
        with_client(lambda c: c.deployments.promote(project, name, reason=reason)), as_json=as_json
    )


@outcomes.command("upload")
def upload(
    name: str,
    path: Annotated[Path, typer.Argument(help="A Parquet file: request_id and value columns.")],
    project: ProjectOpt,
    as_json: JsonOpt = False,
) -> None:
    """Post outcomes in bulk (up to a million rows)."""
    if not path.is_file():
        fail(f"{path} is not a file")
    result = with_client(lambda c: c.deployments.upload_outcomes(project, name, path))
    done(
        f"{result.recorded} outcomes recorded, {result.unknown} for unknown request ids, "
        f"{result.duplicate} duplicates",
        as_json=as_json,
        payload=result,
    )


rollout = typer.Typer(
    help="Canary rollouts: a new variant takes a stable one's traffic step by step, and "
    "is rolled back on its own when it fails or slows past the margins.",
    no_args_is_help=True,
)
deploy.add_typer(rollout, name="rollout")


def _steps(text: str, seconds: float, requests: int) -> list[dict[str, Any]]:
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--steps {text!r}: write percentages separated by commas, e.g. 5,25,50,100")
    if not weights:
        fail("--steps: give at least one step (its last must be 100)")
    return [{"weight": w, "min_duration_s": seconds, "min_requests": requests} for w in weights]


@rollout.command("start")
def rollout_start(
    name: str,
    project: ProjectOpt,
    canary: Annotated[
        str | None,
        typer.Option(help="The new variant: NAME=MODEL:VERSION or NAME=MODEL@ALIAS."),
    ] = None,
    stable: Annotated[
        str | None, typer.Option(help="The live variant it replaces (default: the only one).")
    ] = None,
    steps: Annotated[
        str, typer.Option(help="The canary's percent of the stable's traffic at each step.")
    ] = "5,25,50,100",
    step_seconds: Annotated[
        float, typer.Option(min=0, help="Least time each step is held.")
    ] = 60.0,
    step_requests: Annotated[
        int, typer.Option(min=0, help="Least canary answers each step needs.")
    ] = 100,
    max_failure_increase: Annotated[
        float,
        typer.Option(min=0, max=1, help="Most the canary's failure rate may exceed the stable's."),
    ] = 0.01,
    max_p99_increase: Annotated[
        float, typer.Option(min=0, help="Most the canary's p99 may exceed the stable's (0.5: 50%).")
    ] = 0.5,
    p99_slack_ms: Annotated[
        float, typer.Option(min=0, help="Latency allowed on top of that, in milliseconds.")
    ] = 5.0,
    spec: SpecOpt = None,
    reason: ReasonOpt = "",
    as_json: JsonOpt = False,
) -> None:
    """Start rolling a canary out (--canary, or a --spec file with REST's body)."""
    body = _spec_file(spec)
    if canary is not None:
        body["canary"] = parse_variant(canary + ":0")
    if "canary" not in body:
        fail("name the canary: --canary NAME=MODEL:VERSION (or a --spec file with canary)")
    body.setdefault("steps", _steps(steps, step_seconds, step_requests))
    body.setdefault("max_failure_rate_increase", max_failure_increase)
    body.setdefault("max_p99_increase", max_p99_increase)
    body.setdefault("p99_slack_ms", p99_slack_ms)
    if stable is not None:
        body["stable"] = stable
    if reason:
        body["reason"] = reason
    the_canary = body.pop("canary")
    known = {"stable", "steps", "max_failure_rate_increase", "max_p99_increase"}
    unknown = sorted(set(body) - known - {"p99_slack_ms", "reason"})
    if unknown:
        fail(f"--spec {spec}: unknown field(s) {', '.join(unknown)}")
    out = with_client(lambda c: c.deployments.start_rollout(project, name, the_canary, **body))
    print_rollout(out, as_json=as_json)


@rollout.command("status")
def rollout_status(name: str, project: ProjectOpt, as_json: JsonOpt = False) -> None:
    """The rollout's step, the canary's weight, the evidence and what the step waits
    for (or how the rollout ended)."""
    print_rollout(with_client(lambda c: c.deployments.get_rollout(project, name)), as_json=as_json)


@rollout.command("abort")
def rollout_abort(
    name: str, project: ProjectOpt, reason: ReasonOpt = "", as_json: JsonOpt = False
) -> None:
    """Stop the running rollout: the canary goes, the stable gets its share back."""
    out = with_client(lambda c: c.deployments.abort_rollout(project, name, reason=reason))
    print_rollout(out, as_json=as_json)


class _EvidenceRow(BaseModel):
    variant: str
    over: str
    requests: int
    failed: str
    p50_ms: str
    p99_ms: str


def print_rollout(out: RolloutOut, *, as_json: bool = False) -> None:
    """A rollout's state and its evidence table (also the demo's)."""
    if as_json:
        print_json(out)
        return
    print_item(
        {
            "deployment": out.deployment,
            "state": out.state,
            "canary": out.canary,
            "stable": out.stable,
            "step": f"{out.step} of {len(out.steps)} "
            f"({', '.join(f'{s.weight:g}%' for s in out.steps)})",
            "canary weight": f"{out.weight:g}%",
            "started": out.started_at.isoformat(timespec="seconds"),
            "finished": out.finished_at.isoformat(timespec="seconds") if out.finished_at else "",
            "why": out.outcome,
        }
    )

    def row(evidence: VariantEvidence, over: str) -> _EvidenceRow:
        rate = evidence.failure_rate
        return _EvidenceRow(
            variant=evidence.variant,
            over=over,
            requests=evidence.requests,
            failed="" if rate is None else f"{rate:.2%}",
            p50_ms="" if evidence.p50_ms is None else f"{evidence.p50_ms:.3g}",
            p99_ms="" if evidence.p99_ms is None else f"{evidence.p99_ms:.3g}",
        )

    print_table(
        [row(out.canary_evidence, "this step"), row(out.stable_evidence, "since the start")],
        ("variant", "over", "requests", "failed", "p50_ms", "p99_ms"),
        title="evidence",
    )
