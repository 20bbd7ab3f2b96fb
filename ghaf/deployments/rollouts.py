"""Canary rollouts: start one, read where it is and why, abort it, and the scheduler's
step that moves every running rollout on (ghaf/deployments/canary.py judges).

Each step is a new revision of the deployment, audited like any change: the canary's
weight grows at the stable variant's expense (other variants keep theirs). When the
last step (100%) passes, a final revision drops the stable variant; when the canary
fails a margin (or someone aborts), a revision drops the canary and gives the stable
its share back. While a rollout runs, other changes to the deployment are refused
(``service.refuse_while_rolling_out``): they would fight the rollout over the weights.
An alias move still rolls a variant that follows it (the registry's move is not held up
by a rollout); the weights stay the rollout's.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import Text, cast, delete, select

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.errors import Conflict, GhafError, InvalidInput, NotFound, StoredObjectCorrupt
from ghaf.deployments import canary, schemas, service
from ghaf.deployments.models import Deployment, RolloutState, VariantTraffic
from ghaf.deployments.traffic import Tally
from ghaf.security.context import Context
from ghaf.security.tenancy import Project

log = logging.getLogger("ghaf.deployments")

RUNNING = "running"
TRAFFIC_KEPT_DAYS = 3  # tallies older than this are pruned (a rollout's own included)


def _resource(project: str, name: str) -> str:
    return f"project/{project}/deployment/{name}"


def _config(state: RolloutState) -> schemas.RolloutStart:
    """The rollout's stored config, checked with the row's own numbers: a damaged row is
    reported (502), never acted on."""

    def damaged(what: str) -> StoredObjectCorrupt:
        return StoredObjectCorrupt(
            f"the deployment's rollout is damaged in the metadata database ({what}); "
            "abort it (ghaf deploy rollout abort)"
        )

    try:
        config = schemas.RolloutStart.model_validate(state.config)
    except (ValidationError, TypeError, ValueError):
        raise damaged("its config") from None
    if state.state not in schemas.ROLLOUT_STATES:
        raise damaged("its state")
    step = state.step
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < len(config.steps):
        raise damaged("its step")
    share = state.share
    if not isinstance(share, int | float) or not math.isfinite(share) or not 0 < share <= 100:
        raise damaged("the stable's share")
    for number in (state.base_revision, state.step_revision):
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 2**31 - 1:
            raise damaged("its revisions")
    return config


def _checked(spec: schemas.DeploymentSpec, *, field: str) -> schemas.DeploymentSpec:
    """``spec`` validated as a whole (a copy with changed variants skips the model's own
    checks: the count of variants, the weights' sum), or ``InvalidInput`` saying why."""
    try:
        return schemas.DeploymentSpec.model_validate(spec.model_dump())
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(
            f"the rollout would make an invalid deployment: {where}: {message}", field=field
        ) from None


def _weighted(
    spec: schemas.DeploymentSpec, *, canary_name: str, stable: str, share: float, percent: float
) -> schemas.DeploymentSpec:
    """``spec`` with the canary at ``percent`` of the stable's ``share``."""
    given = round(share * percent / 100.0, 4)
    variants = [
        v.model_copy(update={"weight": given})
        if v.name == canary_name
        else v.model_copy(update={"weight": round(share - given, 4)})
        if v.name == stable
        else v
        for v in spec.variants
    ]
    return spec.model_copy(update={"variants": variants})


def _without(
    spec: schemas.DeploymentSpec, resolved: service.Resolved, gone: str, heir: str
) -> tuple[schemas.DeploymentSpec, service.Resolved]:
    """``spec`` without variant ``gone``, its weight given to ``heir``."""
    weight = {v.name: v.weight for v in spec.variants}
    variants = [
        v.model_copy(update={"weight": round(weight[heir] + weight[gone], 4)})
        if v.name == heir
        else v
        for v in spec.variants
        if v.name != gone
    ]
    return (
        spec.model_copy(update={"variants": variants}),
        {k: v for k, v in resolved.items() if k != gone},
    )


def _evidence(
    pctx: Context,
    deployment_id: str,
    variant: str,
    since_revision: int,
    until: datetime | None = None,
) -> Tally:
    """What the servers counted of ``variant`` from ``since_revision`` on (and, for a
    rollout that ended, until it ended). A row that is not a tally (damaged or rewritten
    in the database) is skipped, so one bad row never stops a rollout's judgement."""
    tally = Tally()
    query = select(
        VariantTraffic.requests,
        VariantTraffic.errors,
        VariantTraffic.refused,
        # As text, parsed here: the JSON column's own reader refuses a non-object row
        # with an error for the whole query.
        cast(VariantTraffic.latency, Text),
        VariantTraffic.latency_sum_s,
    ).where(
        VariantTraffic.deployment_id == deployment_id,
        VariantTraffic.variant == variant,
        VariantTraffic.shadow.is_(False),
        VariantTraffic.revision >= since_revision,
    )
    if until is not None:
        query = query.where(VariantTraffic.at <= until)
    for requests, errors, refused, latency, latency_sum_s in pctx.session.execute(query):
        try:
            buckets = json.loads(latency) if isinstance(latency, str) else latency
        except ValueError:
            continue
        found = Tally.from_row(
            requests=requests,
            errors=errors,
            refused=refused,
            latency=buckets if isinstance(buckets, dict) else {},
            latency_sum_s=latency_sum_s,
        )
        if found is not None:
            tally.merge(found)
    return tally


def _evidence_out(variant: str, tally: Tally) -> schemas.VariantEvidence:
    p50, p99 = tally.quantile(0.5), tally.quantile(0.99)
    return schemas.VariantEvidence(
        variant=variant,
        requests=tally.requests,
        errors=tally.errors,
        refused=tally.refused,
        failure_rate=tally.failure_rate,
        p50_ms=None if p50 is None else round(p50 * 1000, 3),
        p99_ms=None if p99 is None else round(p99 * 1000, 3),
    )


def _judge(
    pctx: Context, deployment: Deployment, state: RolloutState, now: datetime
) -> tuple[canary.Decision, Tally, Tally]:
    config = _config(state)
    step = config.steps[state.step]
    until = as_utc(state.finished_at) if state.finished_at else None
    canary_tally = _evidence(pctx, deployment.id, state.canary, state.step_revision, until)
    stable_tally = _evidence(pctx, deployment.id, state.stable, state.base_revision + 1, until)
    decision = canary.decide(
        canary=canary_tally,
        stable=stable_tally,
        margins=canary.Margins(
            max_failure_rate_increase=config.max_failure_rate_increase,
            max_p99_increase=config.max_p99_increase,
            p99_slack_ms=config.p99_slack_ms,
        ),
        min_duration_s=step.min_duration_s,
        min_requests=step.min_requests,
        elapsed_s=(now - as_utc(state.step_started_at)).total_seconds(),
    )
    return decision, canary_tally, stable_tally


def _out(
    pctx: Context, project: str, deployment: Deployment, state: RolloutState
) -> schemas.RolloutOut:
    """The rollout as an answer. An ended rollout is answered even when its stored
    config or the deployment's revision is damaged (what ended it is the news)."""
    try:
        config = _config(state)
        spec, _ = service.stored_spec(pctx, deployment)
        decision, canary_tally, stable_tally = _judge(pctx, deployment, state, utcnow())
    except StoredObjectCorrupt:
        if state.state == RUNNING:
            raise
        empty = Tally()
        return _answer(deployment, state, [], 0.0, state.outcome, empty, empty)
    weight = next((v.weight for v in spec.variants if v.name == state.canary), 0.0)
    weight = weight if state.state in (RUNNING, "completed") else 0.0
    outcome = state.outcome if state.state != RUNNING else decision.why
    return _answer(deployment, state, config.steps, weight, outcome, canary_tally, stable_tally)


def _answer(
    deployment: Deployment,
    state: RolloutState,
    steps: list[schemas.RolloutStep],
    weight: float,
    outcome: str,
    canary_tally: Tally,
    stable_tally: Tally,
) -> schemas.RolloutOut:
    return schemas.RolloutOut(
        deployment=deployment.name,
        state=state.state,
        canary=state.canary,
        stable=state.stable,
        step=state.step + 1 if isinstance(state.step, int) else 0,
        steps=steps,
        weight=weight,
        started_at=as_utc(state.started_at),
        step_started_at=as_utc(state.step_started_at),
        finished_at=as_utc(state.finished_at) if state.finished_at else None,
        base_revision=state.base_revision,
        outcome=outcome,
        canary_evidence=_evidence_out(state.canary, canary_tally),
        stable_evidence=_evidence_out(state.stable, stable_tally),
        started_by=state.started_by,
    )


def _stable_of(spec: schemas.DeploymentSpec, named: str | None) -> schemas.VariantSpec:
    live = [v for v in spec.variants if not v.shadow and v.weight > 0]
    if named is None:
        if len(live) != 1:
            raise InvalidInput(
                f"the deployment has {len(live)} live variants "
                f"({', '.join(v.name for v in live)}): name the one the canary replaces "
                "(stable)",
                field="stable",
            )
        return live[0]
    found = next((v for v in live if v.name == named), None)
    if found is None:
        raise InvalidInput(
            f"stable {named!r} is not a live variant with traffic "
            f"(live: {', '.join(v.name for v in live)})",
            field="stable",
        )
    return found


# --- user actions ------------------------------------------------------------------------


def start_rollout(
    ctx: Context, project: str, name: str, request: schemas.RolloutStart
) -> schemas.RolloutOut:
    """Add ``request.canary`` beside the stable variant at the first step's weight (a new
    revision) and let the scheduler take it on from there. Needs deployment:write."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:write", resource=_resource(project, name))
    deployment = service.find_deployment(pctx, name)
    service.refuse_while_rolling_out(pctx, deployment, "start another rollout")
    spec, _ = service.stored_spec(pctx, deployment)
    if spec.abtest is not None:
        raise Conflict(
            f"deployment {name!r} runs an A/B test: a rollout would move its traffic under "
            "it; promote its winner or clear the test (clear_abtest) first",
            field="abtest",
        )
    stable = _stable_of(spec, request.stable)
    if any(v.name == request.canary.name for v in spec.variants):
        raise Conflict(
            f"deployment {name!r} has a variant {request.canary.name!r} already; name the "
            "canary differently",
            field="canary.name",
        )
    with_canary = spec.model_copy(
        update={"variants": [*spec.variants, request.canary.model_copy(update={"weight": 0.0})]}
    )
    first = _checked(
        _weighted(
            with_canary,
            canary_name=request.canary.name,
            stable=stable.name,
            share=stable.weight,
            percent=request.steps[0].weight,
        ),
        field="canary",
    )
    try:
        resolved = service.resolve_variants(pctx, project, first)
    except GhafError as refused:  # the registry names variants[i]: the canary is its own
        where = f"variants[{len(spec.variants)}]"
        if refused.field is not None and refused.field.startswith(where):
            refused.field = "canary" + refused.field[len(where) :]
        raise
    base = deployment.revision
    reason = request.reason or (
        f"rollout of {request.canary.name}: step 1, {request.steps[0].weight:g}% of "
        f"{stable.name}'s traffic"
    )
    row = service.add_revision(pctx, deployment, first, resolved, reason)
    now = utcnow()
    pctx.session.execute(delete(RolloutState).where(RolloutState.deployment_id == deployment.id))
    pctx.session.add(
        RolloutState(
            deployment_id=deployment.id,
            state=RUNNING,
            canary=request.canary.name,
            stable=stable.name,
            share=stable.weight,
            config=request.model_dump(mode="json"),
            step=0,
            base_revision=base,
            step_revision=row.revision,
            started_at=now,
            step_started_at=now,
            finished_at=None,
            outcome="",
            started_by=pctx.actor,
        )
    )
    pctx.audit(
        "deployment:rollout-start",
        _resource(project, name),
        detail={
            "revision": row.revision,
            "canary": request.canary.name,
            "stable": stable.name,
            "serves": service.served(resolved),
            "steps": [s.weight for s in request.steps],
        },
    )
    pctx.commit()
    return get_rollout(pctx, project, name)


def get_rollout(ctx: Context, project: str, name: str) -> schemas.RolloutOut:
    """The deployment's rollout (running, or how the last one ended) with its evidence
    and what the current step waits for. Needs deployment:read."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:read", resource=_resource(project, name))
    deployment = service.find_deployment(pctx, name)
    state = pctx.session.get(RolloutState, deployment.id)
    if state is None:
        raise NotFound(f"deployment {name!r} has had no rollout", field="rollout")
    return _out(pctx, project, deployment, state)


def abort_rollout(
    ctx: Context, project: str, name: str, request: schemas.RolloutAbort
) -> schemas.RolloutOut:
    """Stop the running rollout: the canary goes, the stable variant gets its share back
    (a new revision). Needs deployment:write."""
    pctx = ctx.in_project(project)
    pctx.require("deployment:write", resource=_resource(project, name))
    deployment = service.find_deployment(pctx, name)
    state = pctx.session.get(RolloutState, deployment.id)
    if state is None or state.state != RUNNING:
        raise Conflict(f"deployment {name!r} has no rollout running", field="rollout")
    why = request.reason or f"aborted by {pctx.actor}"
    _end(pctx, project, deployment, state, "aborted", why)
    pctx.commit()
    return get_rollout(pctx, project, name)


def _end(
    pctx: Context,
    project: str,
    deployment: Deployment,
    state: RolloutState,
    how: str,
    why: str,
) -> None:
    """Finish the rollout: ``completed`` drops the stable variant, anything else the
    canary, each as a new revision serving what the others already served."""
    try:
        spec, resolved = service.stored_spec(pctx, deployment)
    except StoredObjectCorrupt:
        # The current revision is damaged or gone: the rollout ends without a new one,
        # so that a rollback to a revision that exists is no longer refused.
        spec, resolved = None, {}
    names = {v.name for v in spec.variants} if spec is not None else set()
    gone, heir = (
        (state.stable, state.canary) if how == "completed" else (state.canary, state.stable)
    )
    if spec is not None and gone in names and heir in names:
        kept, kept_resolved = _without(spec, resolved, gone, heir)
        verb = "completed" if how == "completed" else "rolled back"
        row = service.add_revision(
            pctx, deployment, kept, kept_resolved, f"rollout of {state.canary} {verb}: {why}"
        )
        revision = row.revision
    else:  # a damaged or hand-edited state: nothing to take away
        revision = deployment.revision
    state.state = how
    state.finished_at = utcnow()
    state.outcome = why[:500]
    action = {"completed": "complete", "aborted": "abort"}.get(how, "rollback")
    pctx.audit(
        f"deployment:rollout-{action}",
        _resource(project, deployment.name),
        detail={"revision": revision, "canary": state.canary, "stable": state.stable, "why": why},
    )


def _advance(pctx: Context, project: str, deployment: Deployment, state: RolloutState) -> str:
    """Judge the running step and act on it: hold, next step, complete or roll back."""
    config = _config(state)
    decision, _, _ = _judge(pctx, deployment, state, utcnow())
    if decision.action == "hold":
        return "hold"
    if decision.action == "roll_back":
        _end(pctx, project, deployment, state, "rolled_back", decision.why)
        return "rolled back"
    if state.step + 1 >= len(config.steps):
        _end(pctx, project, deployment, state, "completed", decision.why)
        return "completed"
    spec, resolved = service.stored_spec(pctx, deployment)
    step = config.steps[state.step + 1]
    following = _weighted(
        spec, canary_name=state.canary, stable=state.stable, share=state.share, percent=step.weight
    )
    try:
        following = _checked(following, field="steps")
    except InvalidInput as error:
        _end(pctx, project, deployment, state, "rolled_back", f"the next step is invalid: {error}")
        return "rolled back"
    row = service.add_revision(
        pctx,
        deployment,
        following,
        resolved,
        f"rollout of {state.canary}: step {state.step + 2}, {step.weight:g}% of "
        f"{state.stable}'s traffic",
    )
    state.step += 1
    state.step_revision = row.revision
    state.step_started_at = utcnow()
    pctx.audit(
        "deployment:rollout-step",
        _resource(project, deployment.name),
        detail={
            "revision": row.revision,
            "step": state.step + 1,
            "weight": step.weight,
            "evidence": decision.why,
        },
    )
    return f"step {state.step + 1}"


def advance_rollouts(ctx: Context) -> list[str]:
    """Move every running rollout on by what its evidence says (the scheduler's task,
    as ghaf itself). One rollout's failure is logged and does not stop the others."""
    ctx.require("platform:admin", resource="deployments")
    running = ctx.session.execute(
        select(Deployment.id, Deployment.name, Project.name)
        .join(RolloutState, RolloutState.deployment_id == Deployment.id)
        .join(Project, Project.id == Deployment.project_id)
        .where(RolloutState.state == RUNNING, Project.deleted_at.is_(None))
        .order_by(Deployment.id)
    ).all()
    ctx.session.rollback()
    done = []
    for deployment_id, name, project in running:
        try:
            pctx = ctx.in_project(project)
            deployment = pctx.session.get(Deployment, deployment_id)
            state = pctx.session.get(RolloutState, deployment_id)
            if deployment is None or state is None or state.state != RUNNING:
                continue  # removed or finished meanwhile
            what = _advance(pctx, project, deployment, state)
            pctx.commit()
            if what != "hold":
                done.append(f"{project}/{name}: {what}")
        except GhafError as error:
            ctx.session.rollback()
            log.warning("rollout of %s/%s could not move on: %s", project, name, error)
        except Exception:  # a row no check foresaw: this rollout waits, the others go on
            ctx.session.rollback()
            log.exception("rollout of %s/%s could not move on", project, name)
    return done


def prune_traffic(ctx: Context, *, now: datetime | None = None) -> int:
    """Remove traffic tallies older than :data:`TRAFFIC_KEPT_DAYS` (ghaf's own work)."""
    from datetime import timedelta

    ctx.require("platform:admin", resource="deployments")
    cutoff = (now or utcnow()) - timedelta(days=TRAFFIC_KEPT_DAYS)
    result = ctx.session.execute(delete(VariantTraffic).where(VariantTraffic.at < cutoff))
    ctx.commit()
    return int(getattr(result, "rowcount", 0) or 0)
