"""Multi-step deployment actions: a replica's bundle from the registry, and the gateway's
answer to one request (route, choose a variant, reach a replica, forward, record).

Both are async: their steps that touch the database run on worker threads, the waits
(a replica starting, a replica answering) on the event loop.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
from starlette.concurrency import run_in_threadpool

from ghaf.core.errors import (
    GhafError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    TooManyRequests,
    Unavailable,
)
from ghaf.deployments import service
from ghaf.deployments.fleet import Forwarded
from ghaf.deployments.gateway import Gateway
from ghaf.deployments.hosts.base import ReplicaSpec
from ghaf.deployments.shadow import Copy
from ghaf.deployments.traffic import ERROR, OK, REFUSED
from ghaf.registry import service as registry
from ghaf.registry.schemas import VersionOut
from ghaf.security.context import Context
from ghaf.serving import bundle

log = logging.getLogger("ghaf.deployments")

PARSE_INLINE = 64 << 10  # bodies up to this are parsed for a sticky field on the loop
OUTCOME_HEADER = "x-ghaf-outcome-id"
"""The id under which to post the request's outcome (for the A/B test)."""
VARIANT_HEADER = "x-ghaf-variant"
"""Names the variant that answered; sent by a caller with deployment:debug, forces one."""


def export_bundle(ctx: Context, spec: ReplicaSpec, folder: Path) -> None:
    """Write the bundle a replica of ``spec`` serves: the registered file, checked
    against the SHA-256 the deployment's revision names, its metadata, card and the
    policy's trusted types. Runs as ghaf itself (``ctx`` is a system context)."""
    found = VersionOut.model_validate_json(
        registry.get_version_json(ctx, spec.project, spec.model, str(spec.version))
    )
    if found.sha256 != spec.sha256:
        raise InvalidInput(
            f"{spec.model} v{spec.version} is not the file the deployment's revision names "
            f"(sha256 {found.sha256[:12]}, expected {spec.sha256[:12]})",
            field="sha256",
        )
    download = registry.open_version_file(ctx, spec.project, spec.model, str(spec.version))
    card = registry.get_card(ctx, spec.project, spec.model, str(spec.version))
    policy = registry.get_policy(ctx, spec.project)
    bundle.write_bundle(
        folder,
        found,
        download.read(),
        card_markdown=card.markdown,
        policy_types=policy.policy.get("trusted_types", ()),
        source="ghaf deployments",
    )


@dataclass(frozen=True)
class Incoming:
    """One request to a deployment, as the gateway forwards it."""

    kind: str  # "predict" or "infer"
    body: bytes
    headers: Mapping[str, str]  # lower-case names


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _route_key(ctx: Context, project: str, name: str) -> tuple[object, ...] | None:
    """The route is reused only within one audit epoch: any audited change (a new
    revision, a membership removed, a token revoked) moves it, so a cached route is
    never staler than the read cache the caller's token came through."""
    caller = ctx.caller
    if caller is None or ctx.epoch is None:
        return None
    return (
        ctx.epoch,
        caller.principal_id,
        caller.token_project_id,
        caller.read_only,
        project,
        name,
    )


def _gateway(ctx: Context) -> Gateway:
    found = ctx.backend("deployments")
    assert isinstance(found, Gateway)
    return found


def _sticky_key(found: service.Route, incoming: Incoming) -> str | None:
    sticky = found.spec.sticky
    if sticky is None:
        return None
    if sticky.header is not None:
        return incoming.headers.get(sticky.header.lower())
    assert sticky.field is not None
    try:
        document = orjson.loads(incoming.body)
    except orjson.JSONDecodeError:
        return None  # the replica answers the bad body; no key, a random assignment
    if not isinstance(document, dict):
        return None
    value = document.get(sticky.field)
    parameters = document.get("parameters")
    if value is None and isinstance(parameters, dict):  # OIP: request parameters
        value = parameters.get(sticky.field)
    return None if value is None or isinstance(value, dict | list) else str(value)


def _variant(found: service.Route, incoming: Incoming, key: str | None) -> str:
    forced = incoming.headers.get(VARIANT_HEADER)
    if forced is not None:
        if not found.may_debug:
            raise PermissionDenied(
                f"{VARIANT_HEADER} picks a variant: deployment:debug is required in "
                f"project {found.project!r}",
                permission="deployment:debug",
            )
        if forced not in found.replicas:
            raise NotFound(
                f"deployment {found.deployment!r} has no variant {forced!r} "
                f"(it has {', '.join(found.replicas)})",
                field=VARIANT_HEADER,
            )
        return forced
    return found.splitter.choose(key) if key is not None else found.splitter.choose_random()


class ReplicaRefusal(InvalidInput):
    """The replica refused the request's body (its 400), under the platform's problem."""

    status = 400


def _refusal(variant: str, answer: Forwarded) -> GhafError:
    """A replica's error answer (``{"error": ...}``) as the platform's problem, so every
    route under /api/v1 answers problem+json with its request id."""
    try:
        detail = str(orjson.loads(answer.body)["error"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = answer.body[:300].decode("utf-8", "replace")
    if answer.status == 400:
        return ReplicaRefusal(detail, field="body")
    if answer.status == 404:
        return NotFound(detail)
    if answer.status == 413:
        return PayloadTooLarge(detail)
    if answer.status == 429:
        return TooManyRequests(detail, retry_after=int(answer.headers.get("retry-after", "1")))
    if answer.status < 500:
        return InvalidInput(f"variant {variant!r} answered {answer.status}: {detail}")
    return Unavailable(f"variant {variant!r} failed to answer ({answer.status}): {detail}")


def _path(spec: ReplicaSpec, kind: str) -> str:
    return "/predict" if kind == "predict" else f"/v2/models/{spec.model}/infer"


def _named(found: service.Route, variant: str, answer: Forwarded) -> bytes:
    """An OIP JSON answer names the deployment and the variant that served it."""
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return answer.body
    if "inference-header-content-length" in answer.headers:
        return answer.body  # binary outputs follow the JSON header: sent as they are
    try:
        document = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return answer.body
    if isinstance(document, dict) and "model_name" in document:
        document["model_name"] = found.deployment
        document["model_version"] = variant
        return orjson.dumps(document)
    return answer.body


async def _in_project(ctx: Context, project: str) -> Context:
    """``ctx.in_project``: a grant read through the epoch-checked cache is a dictionary
    lookup; a miss reads the database, on a worker thread unless the database is SQLite
    (a local-file read is cheaper than the hop)."""
    if ctx.database.is_sqlite:
        return ctx.in_project(project)
    return await run_in_threadpool(ctx.in_project, project)


async def _route(ctx: Context, project: str, name: str) -> tuple[Gateway, service.Route]:
    """The gateway and the deployment's current route, for a caller that may invoke it.
    The context is closed after: the route is all a request reads from the database."""
    gateway = _gateway(ctx)
    # The door on every request, the route cached or not.
    pctx = await _in_project(ctx, project)
    pctx.require("deployment:invoke", resource=f"project/{project}/deployment/{name}")
    key = _route_key(ctx, project, name)
    found = gateway.routes.get(key) if key is not None else None
    if found is None:
        found = await run_in_threadpool(service.route, ctx, project, name)
        if key is not None:
            gateway.routes.put(key, found)
    ctx.close()
    if gateway.revisions.get(found.deployment_id, 0) < found.revision:
        gateway.names[found.deployment_id] = (found.project, found.deployment)
        # A newer revision: the replicas it no longer names stop (a request still
        # holding an older route never stops the newer revision's).
        gateway.revisions[found.deployment_id] = found.revision
        await gateway.fleet.retire(found.deployment_id, {s.key for s in found.replicas.values()})
    return gateway, found


async def invoke(ctx: Context, project: str, name: str, incoming: Incoming) -> Answer:
    """Answer one request through the deployment: its variant by sticky key (or at
    random by weight), a replica of it (started if none runs: the request waits), the
    replica's answer passed on with the variant named."""
    gateway, found = await _route(ctx, project, name)
    sticky = None
    if found.spec.sticky is not None:
        # A body's field is found by parsing it: a large one off the event loop.
        small = found.spec.sticky.header is not None or len(incoming.body) < PARSE_INLINE
        sticky = (
            _sticky_key(found, incoming)
            if small
            else await run_in_threadpool(_sticky_key, found, incoming)
        )
    variant = _variant(found, incoming, sticky)
    spec = found.replicas[variant]
    headers = {"content-type": incoming.headers.get("content-type", "application/json")}
    for passed in ("content-encoding", "inference-header-content-length", "accept"):
        if passed in incoming.headers:
            headers[passed] = incoming.headers[passed]
    path = _path(spec, incoming.kind)
    traffic, where = gateway.traffic, found.where[variant]
    started: float | None = None
    try:
        replica = await gateway.fleet.replica(spec)
        # A replica's cold start is its own series, not this variant's latency: one
        # start must not read as a slow canary (a failed start counts, with no time).
        started = time.perf_counter()
        answer = await gateway.fleet.forward(replica, path, incoming.body, headers)
    except GhafError:
        spent = 0.0 if started is None else time.perf_counter() - started
        traffic.record(where, found.revision, spent, ERROR)
        raise
    seconds = time.perf_counter() - started
    if answer.status >= 400:
        outcome = REFUSED if answer.status < 500 else ERROR
        traffic.record(where, found.revision, seconds, outcome)
        raise _refusal(variant, answer)
    traffic.record(where, found.revision, seconds, OK)
    for shadow in found.shadows:
        if shadow == variant:
            continue  # a shadow forced to answer (deployment:debug) is not copied to itself
        gateway.mirror.offer(
            Copy(
                where=found.where[shadow],
                revision=found.revision,
                spec=found.replicas[shadow],
                path=_path(found.replicas[shadow], incoming.kind),
                body=incoming.body,
                headers=headers,
                request_id=ctx.request_id or "",
                primary=variant,
                primary_answer=answer.body,
                primary_s=seconds,
            )
        )
    # Outcomes are posted under an id only this answer carries: not the request id,
    # which a caller may choose (X-Request-ID) and others can guess.
    outcome_id = secrets.token_urlsafe(16)
    gateway.assignments(found, outcome_id, variant)
    body = _named(found, variant, answer) if incoming.kind == "infer" else answer.body
    out = {**answer.headers, VARIANT_HEADER: variant, OUTCOME_HEADER: outcome_id}
    return Answer(answer.status, out, body)


async def project_metrics(ctx: Context, project: str) -> bytes:
    """The project's deployments as Prometheus series (requests by outcome, latency,
    replicas, shadow drops, cold starts; by deployment and variant), as this server
    counted them. Needs deployment:read. Read on the event loop, which writes them."""
    pctx = await _in_project(ctx, project)
    pctx.require("deployment:read", resource=f"project/{project}/deployments")
    return _gateway(ctx).project_metrics(project)


# --- the Open Inference Protocol at the server's root (/v2/...) ---------------------------

PROJECT_HEADER = "x-ghaf-project"
"""Names the deployment's project on the root /v2 routes (a project's service account
token names its own)."""


async def _oip_project(ctx: Context, headers: Mapping[str, str]) -> str:
    named = headers.get(PROJECT_HEADER)
    if named:
        return named
    found = await run_in_threadpool(service.token_project, ctx)
    if found is None:
        raise InvalidInput(
            f"name the deployment's project: the {PROJECT_HEADER} header (a project's "
            "service account token names its own project)",
            field=PROJECT_HEADER,
        )
    return found


async def oip_infer(
    ctx: Context, name: str, incoming: Incoming, *, variant: str | None = None
) -> Answer:
    """An OIP infer request to deployment ``name`` of the header's (or token's)
    project; a version in the path picks that variant (deployment:debug, as the
    override header)."""
    project = await _oip_project(ctx, incoming.headers)
    if variant is not None:
        incoming = replace(incoming, headers={**incoming.headers, VARIANT_HEADER: variant})
    return await invoke(ctx, project, name, incoming)


async def oip_ready(ctx: Context, name: str, headers: Mapping[str, str]) -> dict[str, object]:
    """Whether the deployment takes requests (its replicas start on demand)."""
    project = await _oip_project(ctx, headers)
    await _route(ctx, project, name)
    return {"name": name, "ready": True}


async def oip_metadata(ctx: Context, name: str, headers: Mapping[str, str]) -> bytes:
    """The deployment as an OIP model: its name, its live variants as versions, and the
    inputs and outputs of the variant with the most traffic (asked of a replica of it,
    which starts if none runs)."""
    project = await _oip_project(ctx, headers)
    gateway, found = await _route(ctx, project, name)
    live = sorted(
        (v for v in found.spec.variants if not v.shadow and v.weight > 0),
        key=lambda v: -v.weight,
    )
    spec = found.replicas[live[0].name]
    replica = await gateway.fleet.replica(spec)
    answer = await gateway.fleet.forward(
        replica, f"/v2/models/{spec.model}", b"", {"accept": "application/json"}, method="GET"
    )
    if answer.status >= 400:
        raise _refusal(live[0].name, answer)
    try:
        document = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        raise Unavailable(f"variant {live[0].name!r} answered metadata that is not JSON") from None
    if not isinstance(document, dict):
        raise Unavailable(f"variant {live[0].name!r} answered metadata that is not an object")
    document["name"] = name
    document["versions"] = [v.name for v in live]
    document["platform"] = "ghaf"
    return orjson.dumps(document)
