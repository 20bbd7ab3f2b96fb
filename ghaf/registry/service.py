"""Registry logic: models, versions, aliases, reviews (four-eyes), cards, lineage, the
registry policy and gate results. The one place that writes registry tables.

Registering a version and checking gates run the model in a child process, which takes
seconds, so they come in steps that hold no transaction while the model runs:
``plan_version`` -> :func:`ghaf.registry.checks.check` -> ``commit_version``, and
``plan_gates`` -> :func:`ghaf.registry.gates.evaluate` -> ``record_gates``. The steps
authorise themselves; :mod:`ghaf.registry.flows` strings them together, and everything
(REST, CLI, UI, scheduled work) calls the flow.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import dialect_insert, insert_unique
from ghaf.core.errors import (
    Conflict,
    GhafError,
    IntegrityFailure,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from ghaf.core.metrics import MODEL_REGISTRATIONS, MODEL_REVIEWS
from ghaf.core.names import validate_name
from ghaf.core.paging import paginate
from ghaf.core.paths import file_name
from ghaf.core.refs import is_reserved, parse_ref
from ghaf.datasets import service as datasets
from ghaf.platform import events
from ghaf.registry import cards, gates, schemas
from ghaf.registry import policy as policies
from ghaf.registry.checks import Candidate, Checked
from ghaf.registry.formats import Trust
from ghaf.registry.models import (
    APPROVE,
    APPROVED,
    ARCHIVED,
    PENDING,
    REJECT,
    REJECTED,
    REQUEST,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
    RegistryPolicy,
    VersionReview,
)
from ghaf.security import standing
from ghaf.security.context import Context
from ghaf.storage import service as storage
from ghaf.storage.models import Blob
from ghaf.tracking import service as tracking

MAX_SAMPLE_BYTES = 4 * 1024 * 1024


def _retire(
    pctx: Context, project: str, name: str, version: int | None, *, action: str, field: str
) -> None:
    """Let the domains that serve models refuse (deployments still serving it)."""
    events.publish(
        pctx,
        events.MODEL_RETIRE,
        {"project": project, "model": name, "version": version, "action": action, "field": field},
    )


def _names_blob(session: Session, blob_id: str) -> bool:
    """Storage's reference check (this domain's manifest declares it)."""
    found = session.scalar(
        select(ModelVersion.id)
        .where((ModelVersion.blob_id == blob_id) | (ModelVersion.onnx_blob_id == blob_id))
        .limit(1)
    )
    return found is not None


# --- references: name, name@alias, name version ---------------------------------------


def split_ref(ref: str) -> tuple[str, str | None]:
    """``churn@champion`` -> ("churn", "@champion"); ``churn`` -> ("churn", None)."""
    name, at, alias = ref.partition("@")
    return name, (f"@{alias}" if at else None)


def _resource(project: str, name: str, version: int | str | None = None) -> str:
    base = f"project/{project}/model/{name}"
    return base if version is None else f"{base}/version/{version}"


def _model(pctx: Context, name: str) -> RegisteredModel:
    assert pctx.project is not None
    validate_name(name, field="model")
    found = pctx.session.scalar(
        select(RegisteredModel).where(
            RegisteredModel.project_id == pctx.project.id, RegisteredModel.name == name
        )
    )
    if found is None:
        raise NotFound(f"project {pctx.project.name!r} has no model {name!r}", field="model")
    return found


def _version(pctx: Context, model: RegisteredModel, ref: str) -> ModelVersion:
    """A version by number, ``latest``, or alias (``@champion`` or ``champion``)."""
    # Aliases can be neither numbers nor "latest", so "@3" and "@latest" are unambiguous.
    parsed = parse_ref(ref, field="version", alias_field="alias")
    statement = select(ModelVersion).where(ModelVersion.model_id == model.id)
    if parsed.number is not None:
        found = pctx.session.scalar(statement.where(ModelVersion.version == parsed.number))
        what = f"version {parsed.number}"
    elif parsed.latest:
        found = pctx.session.scalar(statement.order_by(ModelVersion.version.desc()).limit(1))
        what = "any version"
    else:
        alias = parsed.alias
        found = pctx.session.scalar(
            statement.join(ModelAlias, ModelAlias.version_id == ModelVersion.id).where(
                ModelAlias.model_id == model.id, ModelAlias.alias == alias
            )
        )
        what = f"alias {alias!r}"
    if found is None:
        raise NotFound(f"model {model.name!r} has no {what}", field="version")
    return found


# --- policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedPolicy:
    policy: policies.Policy
    text: str
    sha256: str
    row: RegistryPolicy | None


@functools.lru_cache(maxsize=256)
def _parsed(text: str) -> policies.Policy:
    """Policies are read on most registry calls and change rarely: parse each text once."""
    return policies.parse(text) if text else policies.DEFAULT


def _policy(pctx: Context) -> LoadedPolicy:
    assert pctx.project is not None
    row = pctx.session.get(RegistryPolicy, pctx.project.id)
    text = row.text if row is not None else ""
    return LoadedPolicy(
        _parsed(text),
        text,
        hashlib.sha256(text.encode()).hexdigest(),
        row,
    )


def _policy_out(project: str, loaded: LoadedPolicy) -> schemas.PolicyOut:
    row = loaded.row
    return schemas.PolicyOut(
        project=project,
        text=loaded.text,
        policy=loaded.policy.model_dump(mode="json"),
        sha256=loaded.sha256,
        updated_at=as_utc(row.updated_at) if row else None,
        updated_by=row.updated_by if row else None,
    )


def get_policy(ctx: Context, project: str) -> schemas.PolicyOut:
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=f"project/{project}/model-policy")
    return _policy_out(project, _policy(pctx))


def set_policy(ctx: Context, project: str, request: schemas.PolicyIn) -> schemas.PolicyOut:
    """Replace the project's registry policy (validated first; needs ``policy:write``)."""
    # Parsed before the first statement: a write context's session takes SQLite's write
    # lock on BEGIN, and no parsing may run while other tenants wait on it.
    try:
        parsed = policies.parse(request.text)
    except InvalidInput:
        # Only someone who may write the policy learns what is wrong with theirs: an
        # outsider gets the 404 a missing project gets, whatever the body.
        ctx.in_project(project).require("policy:write", resource=f"project/{project}/model-policy")
        raise
    pctx = ctx.in_project(project)
    pctx.require("policy:write", resource=f"project/{project}/model-policy")
    assert pctx.project is not None
    row = pctx.session.get(RegistryPolicy, pctx.project.id)
    if row is None:
        row = RegistryPolicy(project_id=pctx.project.id, text=request.text)
        pctx.session.add(row)
    row.text, row.updated_at, row.updated_by = request.text, utcnow(), pctx.actor
    sha = hashlib.sha256(request.text.encode()).hexdigest()
    pctx.audit(
        "model:policy",
        f"project/{project}/model-policy",
        detail={
            "sha256": sha,
            "allow_pickle": parsed.allow_pickle,
            "approvals": parsed.approvals.required,
            "protected_aliases": parsed.protected_aliases,
            "gates": len(parsed.gates),
        },
    )
    pctx.commit()
    return _policy_out(project, LoadedPolicy(parsed, request.text, sha, row))


def _trust(policy: policies.Policy) -> Trust:
    return Trust(skops_types=tuple(policy.trusted_types), pickle_globals=tuple(policy.pickle_allow))


# --- models ----------------------------------------------------------------------------


def _aliases(session: Session, model_id: str) -> dict[str, int]:
    rows = session.execute(
        select(ModelAlias.alias, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == ModelAlias.version_id)
        .where(ModelAlias.model_id == model_id)
        .order_by(ModelAlias.alias)
    )
    return {alias: version for alias, version in rows}


def _aliases_of(session: Session, model: RegisteredModel, version: ModelVersion) -> list[str]:
    return [a for a, number in _aliases(session, model.id).items() if number == version.version]


def _model_out(pctx: Context, model: RegisteredModel, project: str) -> schemas.ModelOut:
    latest = pctx.session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    return schemas.ModelOut(
        name=model.name,
        project=project,
        description=model.description,
        created_at=as_utc(model.created_at),
        created_by=model.created_by,
        latest_version=latest,
        aliases=_aliases(pctx.session, model.id),
    )


def _new_model(pctx: Context, name: str, description: str) -> RegisteredModel:
    assert pctx.project is not None
    pctx.require("model:write", resource=_resource(pctx.project.name, name))
    validate_name(name, field="name")
    model = RegisteredModel(
        project_id=pctx.project.id, name=name, description=description, created_by=pctx.actor
    )
    insert_unique(pctx.session, model, field="name", conflict=f"model {name!r} already exists")
    pctx.audit("model:create", _resource(pctx.project.name, name))
    return model


def create_model(ctx: Context, project: str, request: schemas.ModelCreate) -> schemas.ModelOut:
    pctx = ctx.in_project(project)
    model = _new_model(pctx, request.name, request.description)
    pctx.commit()
    return _model_out(pctx, model, project)


def list_models(
    ctx: Context, project: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.ModelOut], str | None]:
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=f"project/{project}/models")
    assert pctx.project is not None
    rows, next_cursor = paginate(
        pctx.session,
        select(RegisteredModel).where(RegisteredModel.project_id == pctx.project.id),
        key=RegisteredModel.name,
        limit=limit,
        cursor=cursor,
    )
    return [_model_out(pctx, m, project) for m in rows], next_cursor


def get_model(ctx: Context, project: str, name: str) -> schemas.ModelOut:
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=_resource(project, name))
    return _model_out(pctx, _model(pctx, name), project)


def delete_model(ctx: Context, project: str, name: str) -> None:
    """Delete a model with its versions and aliases (its files stay while other things
    name them). Refused while a protected alias points at one of its versions."""
    pctx = ctx.in_project(project)
    pctx.require("model:delete", resource=_resource(project, name))
    model = _model(pctx, name)
    protected = set(_policy(pctx).policy.protected_aliases) & set(_aliases(pctx.session, model.id))
    if protected:
        raise Conflict(
            f"model {name!r} holds protected alias(es) {sorted(protected)}; remove them first",
            field="model",
        )
    _retire(pctx, project, name, None, action="deleted", field="model")
    pctx.session.delete(model)
    pctx.audit("model:delete", _resource(project, name))
    pctx.commit()


# --- versions: registration -----------------------------------------------------------


@dataclass
class VersionPlan:
    project: str
    model: str
    blob_id: str
    sha256: str
    size: int
    filename: str
    source: str
    run_id: str | None
    candidate: Candidate
    read: gates.Reader


def _read_blob(pctx: Context, blob: Blob) -> gates.Reader:
    return lambda: storage.read_content(pctx, blob)


def plan_version(
    ctx: Context, project: str, name: str, request: schemas.VersionCreate
) -> VersionPlan:
    """Authorise a registration and find its bytes; nothing is written."""
    pctx = ctx.in_project(project)
    pctx.require("model:write", resource=_resource(project, name))
    validate_name(name, field="model")
    assert pctx.project is not None
    loaded = _policy(pctx)
    sample_npz = None
    run_id = None
    if request.run is not None:
        run = tracking.find_run(pctx, request.run.run)
        run_id = run.id
        artifact = tracking.find_artifact(pctx, run.id, request.run.artifact)
        blob = storage.blob_row(pctx, artifact.blob_id, f"run artifact {artifact.path!r}")
        filename = file_name(artifact.path.rsplit("/", 1)[-1], field="run.artifact")
        source = f"run {run.id}: {artifact.path}"
        if request.sample is None:
            sample_npz = _run_sample(pctx, run.id, artifact.path)
    else:
        assert request.file is not None
        if request.link_run is not None:
            run_id = tracking.run_id(pctx, request.link_run)
        blob = storage.held_blob(
            pctx, request.file.sha256, size=request.file.size, field="file.sha256"
        )
        filename = file_name(request.file.filename, field="file.filename")
        source = f"upload: {filename}"
    assert blob is not None
    candidate = Candidate(
        filename=filename,
        trust=_trust(loaded.policy),
        allow_pickle=loaded.policy.allow_pickle,
        can_trust="model:trust" in pctx.permissions,
        sample=request.sample,
        sample_npz=sample_npz,
        inputs=[t.stored() for t in request.inputs] if request.inputs else None,
        outputs=[t.stored() for t in request.outputs] if request.outputs else None,
        convert_onnx=request.convert_onnx,
    )
    return VersionPlan(
        project,
        name,
        blob.id,
        blob.sha256,
        blob.size,
        filename,
        source,
        run_id,
        candidate,
        _read_blob(pctx, blob),
    )


def _run_sample(pctx: Context, run_id: str, model_path: str) -> bytes | None:
    """The sample autolog saved beside the model (``model/sample.npz``), if any."""
    folder = model_path.rsplit("/", 1)[0] if "/" in model_path else ""
    try:
        artifact = tracking.find_artifact(pctx, run_id, f"{folder}/sample.npz".lstrip("/"))
    except NotFound:
        return None
    blob = pctx.session.get(Blob, artifact.blob_id)
    if blob is None or blob.size > MAX_SAMPLE_BYTES:
        return None
    try:
        return b"".join(storage.read_content(pctx, blob))
    except IntegrityFailure as exc:
        assert pctx.project is not None
        where = f"project/{pctx.project.name}/run/{run_id}/artifact/{artifact.path}"
        pctx.deny("model:register", where, storage.corrupt(f"run sample {artifact.path}", exc))


def refuse_version(ctx: Context, project: str, name: str, error: GhafError) -> None:
    """Record a refused registration (unsafe file, failed check) in the audit trail,
    then raise ``error``: attempts to slip in a malicious model are evidence."""
    pctx = ctx.in_project(project)
    pctx.deny("model:register", _resource(project, name), error)


def commit_version(
    ctx: Context,
    plan: VersionPlan,
    checked: Checked,
    request: schemas.VersionCreate,
) -> schemas.VersionOut:
    pctx = ctx.in_project(plan.project)
    pctx.require("model:write", resource=_resource(plan.project, plan.model))
    assert pctx.project is not None
    try:
        model = _model(pctx, plan.model)
    except NotFound:
        model = _new_model(pctx, plan.model, "")
    card = request.card or cards.ModelCard()
    card = card.model_copy(update={"training_data": _training_data(pctx, card.training_data)})
    onnx_blob = storage.store_content(pctx, checked.onnx) if checked.onnx else None
    checks = dict(checked.checks)
    if onnx_blob is not None:
        checks["conversion"] = checks.get("conversion", {}) | {
            "sha256": onnx_blob.sha256,
            "size": onnx_blob.size,
        }
    number = (
        pctx.session.scalar(
            select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
        )
        or 0
    ) + 1
    version = ModelVersion(
        model_id=model.id,
        version=number,
        status=PENDING,
        description=request.description,
        tags=request.tags,
        format=checked.format,
        filename=plan.filename,
        size=plan.size,
        sha256=plan.sha256,
        blob_id=plan.blob_id,
        onnx_blob_id=onnx_blob.id if onnx_blob else None,
        run_id=plan.run_id,
        source=plan.source,
        inputs=checked.inputs,
        outputs=checked.outputs,
        sample=checked.sample_npz,
        checks=checks,
        card=card.model_dump(mode="json"),
        created_by=pctx.actor,
        created_by_id=pctx.caller.principal_id if pctx.caller else None,
    )
    insert_unique(
        pctx.session,
        version,
        field="version",
        conflict=f"another version of {plan.model!r} was registered at the same time; retry",
    )
    _record_lineage(pctx, version, card)
    pctx.audit(
        "model:register",
        _resource(plan.project, plan.model, number),
        detail={
            "format": checked.format,
            "sha256": plan.sha256,
            "size": plan.size,
            "source": plan.source,
            "run": plan.run_id,
            "onnx": onnx_blob.sha256 if onnx_blob else None,
            **_scan_detail(checks.get("format", {}).get("scan")),
        },
    )
    pctx.commit()
    MODEL_REGISTRATIONS.inc()
    return _version_out(pctx, model, version)


def _scan_detail(scan: dict[str, Any] | None) -> dict[str, Any]:
    """The pickle scan as flat audit fields (verdict and every call target it saw)."""
    if scan is None:
        return {}
    return {"pickle_scan": scan["verdict"], "pickle_targets": scan["targets"]}


def _training_data(pctx: Context, refs: list[str]) -> list[str]:
    """``customers`` or ``customers@3`` -> ``customers@3`` (the version must exist)."""
    assert pctx.project is not None
    resolved = []
    for ref in refs:
        name, _, version = ref.partition("@")
        found = datasets.get_version(pctx, pctx.project.name, name, version or "latest")
        resolved.append(f"{name}@{found.version}")
    return resolved


def _record_lineage(pctx: Context, version: ModelVersion, card: cards.ModelCard) -> None:
    """The datasets the version learnt from (its run's inputs and its card's training
    data) list it as a consumer, so lineage reads both ways."""
    seen: set[tuple[str, str]] = set()
    if version.run_id is not None:
        for name, number in datasets.consumed_by(pctx, "run", [version.run_id]).get(
            version.run_id, []
        ):
            seen.add((name, str(number)))
    for ref in card.training_data:
        name, _, number = ref.partition("@")
        seen.add((name, number))
    for name, number in sorted(seen):
        datasets.record_consumer(pctx, name, number, kind="model", consumer_id=version.id)


# --- versions: reading and changing ---------------------------------------------------


def _approvers(session: Session, version_id: str) -> list[str]:
    return [
        p
        for p in session.scalars(
            select(VersionReview.principal_id)
            .where(VersionReview.version_id == version_id, VersionReview.kind == APPROVE)
            .distinct()
        )
        if p is not None
    ]


def _approvals(session: Session, version_id: str) -> int:
    """Distinct *people* who approved: an account and the people behind it (its creator,
    its token issuers; ghaf/security/standing.py) count once."""
    return standing.count_people(session, _approvers(session, version_id))


def _version_out(
    pctx: Context,
    model: RegisteredModel,
    version: ModelVersion,
    *,
    policy: policies.Policy | None = None,
) -> schemas.VersionOut:
    assert pctx.project is not None
    aliases = _aliases_of(pctx.session, model, version)
    conversion = version.checks.get("conversion")
    onnx = (
        schemas.Conversion.model_validate(conversion)
        if conversion and version.onnx_blob_id
        else None
    )
    required = (policy or _policy(pctx).policy).approvals.required
    return schemas.VersionOut(
        id=version.id,
        project=pctx.project.name,
        model=model.name,
        version=version.version,
        status=version.status,
        description=version.description,
        tags=version.tags,
        format=version.format,
        filename=version.filename,
        size=version.size,
        sha256=version.sha256,
        run=version.run_id,
        source=version.source,
        inputs=version.inputs,
        outputs=version.outputs,
        checks=version.checks,
        onnx=onnx,
        card=cards.ModelCard.model_validate(version.card),
        aliases=aliases,
        approvals=_approvals(pctx.session, version.id),
        approvals_required=required,
        gates=version.gates,
        created_at=as_utc(version.created_at),
        created_by=version.created_by,
        updated_at=as_utc(version.updated_at),
    )


def _find(pctx: Context, name: str, ref: str | None) -> tuple[RegisteredModel, ModelVersion]:
    alias_name, alias = split_ref(name)
    if alias is not None:
        if ref not in (None, ""):
            raise InvalidInput(f"give {name!r} or a version, not both", field="version")
        name, ref = alias_name, alias
    model = _model(pctx, name)
    return model, _version(pctx, model, ref or "latest")


def get_version_json(ctx: Context, project: str, name: str, ref: str | None = None) -> bytes:
    """A version (by number, ``latest``, alias, or ``name@alias`` as ``name``) as JSON:
    the hot path of serving and CI lookups.

    On the read path the document is cached for the current audit epoch: every change to
    a version, its aliases, its reviews or the policy is audited, so a cached answer is
    never stale. Authorisation runs on every call, before the cache is consulted."""
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=_resource(project, name, ref))
    assert pctx.project is not None
    key = ("registry:version", pctx.project.id, name, ref)
    if ctx.cache is not None and ctx.epoch is not None:
        cached: bytes | None = ctx.cache.view(ctx.epoch, key)
        if cached is not None:
            return cached
    model, version = _find(pctx, name, ref)
    document = _version_out(pctx, model, version).model_dump_json().encode()
    if ctx.cache is not None and ctx.epoch is not None:
        ctx.cache.put_view(ctx.epoch, key, document)
    return document


def list_versions(
    ctx: Context, project: str, name: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.VersionOut], str | None]:
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=_resource(project, name))
    model = _model(pctx, name)
    policy = _policy(pctx).policy
    rows, next_cursor = paginate(
        pctx.session,
        select(ModelVersion).where(ModelVersion.model_id == model.id),
        key=ModelVersion.version,
        limit=limit,
        cursor=cursor,
        descending=True,
    )
    return [_version_out(pctx, model, v, policy=policy) for v in rows], next_cursor


def update_version(
    ctx: Context, project: str, name: str, ref: str, request: schemas.VersionUpdate
) -> schemas.VersionOut:
    pctx = ctx.in_project(project)
    pctx.require("model:write", resource=_resource(project, name, ref))
    model, version = _find(pctx, name, ref)
    changes: dict[str, Any] = {}
    if request.description is not None:
        version.description = changes["description"] = request.description
    if request.tags is not None:
        version.tags = changes["tags"] = dict(request.tags)
    if request.status == ARCHIVED and version.status != ARCHIVED:
        held = _aliases_of(pctx.session, model, version)
        if held:
            raise Conflict(
                f"version {version.version} holds alias(es) {held}; move them first",
                field="status",
            )
        _retire(pctx, project, name, version.version, action="archived", field="status")
        changes["status"] = {"from": version.status, "to": ARCHIVED}
        version.status = ARCHIVED
    if changes:
        version.updated_at = utcnow()
        pctx.audit("model:update", _resource(project, name, version.version), detail=changes)
        pctx.commit()
    return _version_out(pctx, model, version)


@dataclass(frozen=True)
class Download:
    filename: str
    sha256: str
    size: int
    read: gates.Reader
    resource: str = ""  # what an audited refusal names


def open_version_file(
    ctx: Context, project: str, name: str, ref: str, *, onnx: bool = False
) -> Download:
    """The version's model file (or its ONNX conversion) to stream; needs model:read."""
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=_resource(project, name, ref))
    model, version = _find(pctx, name, ref)
    blob_id = version.onnx_blob_id if onnx else version.blob_id
    if blob_id is None:
        raise NotFound(
            f"version {version.version} of {name!r} has no ONNX conversion "
            "(register with convert_onnx)",
            field="onnx",
        )
    blob = storage.blob_row(pctx, blob_id, f"version {version.version} of {name!r}")
    filename = version.filename.rsplit(".", 1)[0] + ".onnx" if onnx else version.filename
    pctx.audit(
        "model:download",
        _resource(project, model.name, version.version),
        detail={"sha256": blob.sha256, "onnx": onnx},
    )
    pctx.commit()
    resource = _resource(project, model.name, version.version)
    return Download(filename, blob.sha256, blob.size, _read_blob(pctx, blob), resource)


# --- aliases ---------------------------------------------------------------------------


def _gates_pass(version: ModelVersion, policy_sha: str) -> bool:
    report = version.gates
    return bool(report and report.get("passed") and report.get("policy_sha256") == policy_sha)


def _require_release(
    version: ModelVersion, loaded: LoadedPolicy, name: str, *, what: str, use: str, field: str
) -> None:
    """Refuse, saying which rule failed, unless ``version`` is approved and passes the
    policy's gates: what a protected alias and a production deployment both demand."""
    if version.status != APPROVED:
        raise Conflict(
            f"{what}: version {version.version} of {name!r} is {version.status}, and only "
            f"an approved version may {use} (ghaf models approve)",
            field=field,
        )
    if loaded.policy.gates and not _gates_pass(version, loaded.sha256):
        failed = [r["rule"] for r in (version.gates or {}).get("results", []) if not r["passed"]]
        why = f"these gates fail: {'; '.join(failed)}" if failed else "no passing gate check"
        raise Conflict(
            f"{what}: version {version.version} of {name!r} needs passing quality gates "
            f"under the current policy ({why}; ghaf gates check {name} {version.version})",
            field=field,
        )


@dataclass(frozen=True)
class Deployable:
    """What a deployment needs to know of the version it would serve."""

    model: str
    version: int
    sha256: str
    format: str
    status: str
    alias: str | None  # the alias the reference named, which the deployment then follows


def deployable_version(
    ctx: Context, project: str, name: str, ref: str | int, *, production: bool, field: str
) -> Deployable:
    """The version ``ref`` names, if a deployment may serve it: never a rejected or
    archived one; in production only an approved version whose gates pass. Raises
    ``NotFound``/``Conflict`` naming ``field`` otherwise. Needs model:read."""
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=_resource(project, name))
    model = _model(pctx, name)
    parsed = parse_ref(ref, field=field, alias_field=field)
    version = _version(pctx, model, str(ref))
    if version.status in (REJECTED, ARCHIVED):
        raise Conflict(
            f"version {version.version} of {name!r} is {version.status}; a deployment "
            "cannot serve it",
            field=field,
        )
    if production:
        _require_release(
            version,
            _policy(pctx),
            name,
            what="the deployment is in production",
            use="serve in production",
            field=field,
        )
    return Deployable(
        model=name,
        version=version.version,
        sha256=version.sha256,
        format=version.format,
        status=version.status,
        alias=parsed.alias,
    )


def alias_needs_gates(ctx: Context, project: str, name: str, alias: str, number: int) -> bool:
    """Would assigning ``alias`` need a gate check first (protected, none passing)?"""
    pctx = ctx.in_project(project)
    pctx.require("model:write", resource=_resource(project, name))
    loaded = _policy(pctx)
    if alias not in loaded.policy.protected_aliases or not loaded.policy.gates:
        return False
    version = _version(pctx, _model(pctx, name), str(number))
    return version.status == APPROVED and not _gates_pass(version, loaded.sha256)


def set_alias(
    ctx: Context, project: str, name: str, alias: str, request: schemas.AliasSet
) -> schemas.AliasOut:
    """Point ``alias`` at a version of the same model, in one audited write. Protected
    aliases need an approved version whose gates pass under the current policy."""
    pctx = ctx.in_project(project)
    validate_name(alias, field="alias")
    if is_reserved(alias):
        raise InvalidInput(f"{alias!r} cannot be an alias: it reads as a version", field="alias")
    pctx.require("model:write", resource=_resource(project, name))
    model = _model(pctx, name)
    version = _version(pctx, model, str(request.version))
    loaded = _policy(pctx)
    if version.status in (REJECTED, ARCHIVED):
        raise Conflict(
            f"version {version.version} of {name!r} is {version.status}; an alias cannot "
            "point at it",
            field="version",
        )
    if alias in loaded.policy.protected_aliases:
        _require_release(
            version,
            loaded,
            name,
            what=f"alias {alias!r} is protected",
            use="hold it",
            field="alias",
        )
    previous = pctx.session.scalar(
        select(ModelVersion.version)
        .join(ModelAlias, ModelAlias.version_id == ModelVersion.id)
        .where(ModelAlias.model_id == model.id, ModelAlias.alias == alias)
    )
    now = utcnow()
    statement = dialect_insert(pctx.session, ModelAlias).values(
        model_id=model.id,
        alias=alias,
        version_id=version.id,
        updated_at=now,
        updated_by=pctx.actor,
    )
    pctx.session.execute(
        statement.on_conflict_do_update(
            index_elements=["model_id", "alias"],
            set_={"version_id": version.id, "updated_at": now, "updated_by": pctx.actor},
        )
    )
    pctx.audit(
        "model:alias",
        _resource(project, name),
        detail={"alias": alias, "version": version.version, "previous": previous},
    )
    # Deployments that follow the alias roll in this transaction, or refuse the move.
    events.publish(
        pctx,
        events.MODEL_ALIAS,
        {
            "project": project,
            "model": name,
            "alias": alias,
            "version": version.version,
            "previous": previous,
        },
    )
    pctx.commit()
    return schemas.AliasOut(
        model=name,
        alias=alias,
        version=version.version,
        previous=previous,
        updated_by=pctx.actor,
        updated_at=now,
    )


def delete_alias(ctx: Context, project: str, name: str, alias: str) -> None:
    pctx = ctx.in_project(project)
    pctx.require("model:write", resource=_resource(project, name))
    model = _model(pctx, name)
    row = pctx.session.get(ModelAlias, (model.id, alias))
    if row is None:
        raise NotFound(f"model {name!r} has no alias {alias!r}", field="alias")
    if alias in _policy(pctx).policy.protected_aliases and "model:approve" not in pctx.permissions:
        # Moving a protected alias needs a version a model:approve holder approved;
        # removing it (so name@alias stops resolving) needs that authority itself.
        held = "your token is read-only" if pctx.caller and pctx.caller.read_only else ""
        pctx.deny(
            "model:alias-delete",
            _resource(project, name),
            PermissionDenied(
                f"alias {alias!r} is protected: removing it needs model:approve, as moving "
                f"it needs an approved version; {held or f'your role is {pctx.role}'}",
                permission="model:approve",
            ),
        )
    pctx.session.delete(row)
    pctx.audit("model:alias-delete", _resource(project, name), detail={"alias": alias})
    pctx.commit()


# --- reviews: four-eyes approval -------------------------------------------------------


def _review_out(review: VersionReview) -> schemas.ReviewOut:
    return schemas.ReviewOut(
        kind=review.kind,
        principal=review.principal,
        comment=review.comment,
        created_at=as_utc(review.created_at),
    )


def list_reviews(
    ctx: Context, project: str, name: str, ref: str, *, limit: int, cursor: str | None
) -> tuple[list[schemas.ReviewOut], str | None]:
    """Oldest first (ids are time-ordered UUIDv7s, so the id is the keyset)."""
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=_resource(project, name, ref))
    _, version = _find(pctx, name, ref)
    rows, next_cursor = paginate(
        pctx.session,
        select(VersionReview).where(VersionReview.version_id == version.id),
        key=VersionReview.id,
        limit=limit,
        cursor=cursor,
    )
    return [_review_out(r) for r in rows], next_cursor


def _add_review(pctx: Context, version: ModelVersion, kind: str, comment: str) -> None:
    pctx.session.add(
        VersionReview(
            version_id=version.id,
            kind=kind,
            principal_id=pctx.caller.principal_id if pctx.caller else None,
            principal=pctx.actor,
            comment=comment,
        )
    )


def request_approval(
    ctx: Context, project: str, name: str, ref: str, request: schemas.ReviewCreate
) -> schemas.VersionOut:
    pctx = ctx.in_project(project)
    pctx.require("model:write", resource=_resource(project, name, ref))
    model, version = _find(pctx, name, ref)
    if version.status != PENDING:
        raise Conflict(
            f"version {version.version} is {version.status}; only a pending version can "
            "be put up for approval",
            field="version",
        )
    _add_review(pctx, version, REQUEST, request.comment)
    pctx.audit(
        "model:request-approval",
        _resource(project, name, version.version),
        detail={"comment": request.comment},
    )
    pctx.commit()
    return _version_out(pctx, model, version)


def _four_eyes_by_people(
    pctx: Context, version: ModelVersion, caller_id: str, name: str, resource: str
) -> None:
    """Four-eyes counts people, not accounts: refuse (403, audited) an approval when the
    people behind the caller (a service account's creator and token issuers) include
    whoever registered the version, or someone who already approved it."""
    mine = standing.people_behind(pctx.session, caller_id)
    why = ""
    if version.created_by_id is not None:
        shared = mine & standing.people_behind(pctx.session, version.created_by_id)
        if shared:
            who = ", ".join(standing.names_of(pctx.session, shared))
            why = (
                f"version {version.version} of {name!r} was registered by "
                f"{version.created_by}, and {who} stands behind both that and your account "
                "(as the principal, the creator of a service account, or the issuer of its "
                "tokens); another person holding model:approve must approve it"
            )
    if not why:
        for other in _approvers(pctx.session, version.id):
            if other == caller_id:  # the same principal again: "already approved" below
                continue
            shared = mine & standing.people_behind(pctx.session, other)
            if shared:
                who = ", ".join(standing.names_of(pctx.session, shared))
                why = (
                    f"{who} already approved version {version.version} of {name!r} "
                    "(directly or through a service account); each approval must come from "
                    "another person"
                )
                break
    if why:
        pctx.deny(
            "model:approve",
            resource,
            PermissionDenied(
                f"four-eyes rule counts people, not accounts: {why}", permission="model:approve"
            ),
        )


def approve(
    ctx: Context, project: str, name: str, ref: str, request: schemas.ReviewCreate
) -> schemas.VersionOut:
    """One approval by a holder of ``model:approve`` who did not register the version;
    the version becomes approved when the policy's number of approvers is reached."""
    pctx = ctx.in_project(project)
    resource = _resource(project, name, ref)
    pctx.require("model:approve", resource=resource)
    model, version = _find(pctx, name, ref)
    resource = _resource(project, name, version.version)
    caller_id = pctx.caller.principal_id if pctx.caller else None
    if caller_id is not None and caller_id == version.created_by_id:
        pctx.deny(
            "model:approve",
            resource,
            PermissionDenied(
                f"four-eyes rule: you registered version {version.version} of {name!r}, so "
                "another principal holding model:approve must approve it",
                permission="model:approve",
            ),
        )
    if caller_id is not None:
        _four_eyes_by_people(pctx, version, caller_id, name, resource)
    if version.status != PENDING:
        raise Conflict(
            f"version {version.version} is {version.status}; only a pending version can be "
            "approved",
            field="version",
        )
    already = pctx.session.scalar(
        select(VersionReview.id).where(
            VersionReview.version_id == version.id,
            VersionReview.kind == APPROVE,
            VersionReview.principal_id == caller_id,
        )
    )
    if already is not None:
        raise Conflict(f"you already approved version {version.version}", field="version")
    policy = _policy(pctx).policy
    gaps = cards.missing(cards.ModelCard.model_validate(version.card), policy.card.required)
    if gaps:
        raise Conflict(
            f"the model card of version {version.version} lacks required field(s) "
            f"{', '.join(gaps)} (ghaf models card {name} {version.version} --set ...)",
            field="card",
        )
    _add_review(pctx, version, APPROVE, request.comment)
    pctx.session.flush()
    count = _approvals(pctx.session, version.id)
    if count >= policy.approvals.required:
        version.status = APPROVED
        version.updated_at = utcnow()
    pctx.audit(
        "model:approve",
        resource,
        detail={
            "comment": request.comment,
            "approvals": count,
            "required": policy.approvals.required,
            "status": version.status,
        },
    )
    pctx.commit()
    MODEL_REVIEWS.inc(value="approve")
    return _version_out(pctx, model, version, policy=policy)


def reject(
    ctx: Context, project: str, name: str, ref: str, request: schemas.ReviewCreate
) -> schemas.VersionOut:
    pctx = ctx.in_project(project)
    pctx.require("model:approve", resource=_resource(project, name, ref))
    model, version = _find(pctx, name, ref)
    if not request.comment.strip():
        raise InvalidInput("a rejection needs a comment saying why", field="comment")
    if version.status not in (PENDING, APPROVED):
        raise Conflict(f"version {version.version} is already {version.status}", field="version")
    held = _aliases_of(pctx.session, model, version)
    if held:
        raise Conflict(
            f"version {version.version} holds alias(es) {held}; move them first",
            field="version",
        )
    _retire(pctx, project, name, version.version, action="rejected", field="version")
    previous = version.status
    version.status = REJECTED
    version.updated_at = utcnow()
    _add_review(pctx, version, REJECT, request.comment)
    pctx.audit(
        "model:reject",
        _resource(project, name, version.version),
        detail={"comment": request.comment, "previous": previous},
    )
    pctx.commit()
    MODEL_REVIEWS.inc(value="reject")
    return _version_out(pctx, model, version)


# --- cards -----------------------------------------------------------------------------


def _card_out(pctx: Context, model: RegisteredModel, version: ModelVersion) -> schemas.CardOut:
    card = cards.ModelCard.model_validate(version.card)
    if not card.evaluation and version.run_id is not None:
        run = tracking.find_run(pctx, version.run_id)
        card = card.model_copy(update={"evaluation": dict(run.metrics)})
    facts = {
        "version": version.version,
        "status": version.status,
        "format": version.format,
        "sha256": version.sha256,
        "run": version.run_id,
        "registered by": version.created_by,
        "inputs": ", ".join(f"{i['name']} {i['dtype']}{i['shape']}" for i in version.inputs),
    }
    title = f"Model card: {model.name} v{version.version}"
    return schemas.CardOut(
        model=model.name,
        version=version.version,
        card=card,
        missing=cards.missing(card, _policy(pctx).policy.card.required),
        markdown=cards.to_markdown(card, title=title, facts=facts),
        html=cards.to_html(card, title=title, facts=facts),
    )


def get_card(ctx: Context, project: str, name: str, ref: str) -> schemas.CardOut:
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=_resource(project, name, ref))
    model, version = _find(pctx, name, ref)
    return _card_out(pctx, model, version)


def update_card(
    ctx: Context, project: str, name: str, ref: str, changes: dict[str, Any]
) -> schemas.CardOut:
    """Set some card fields (the others keep their values)."""
    pctx = ctx.in_project(project)
    pctx.require("model:write", resource=_resource(project, name, ref))
    model, version = _find(pctx, name, ref)
    unknown = sorted(set(changes) - set(cards.CARD_FIELDS))
    if unknown:
        raise InvalidInput(
            f"unknown card field(s) {unknown}; fields: {', '.join(cards.CARD_FIELDS)}",
            field=f"card.{unknown[0]}",
        )
    try:
        card = cards.ModelCard.model_validate(version.card | changes)
    except ValueError as exc:
        raise InvalidInput(f"invalid model card: {exc}", field="card") from None
    if "training_data" in changes:
        card.training_data = _training_data(pctx, card.training_data)
        _record_lineage(pctx, version, card)
    version.card = card.model_dump(mode="json")
    version.updated_at = utcnow()
    pctx.audit(
        "model:card", _resource(project, name, version.version), detail={"fields": sorted(changes)}
    )
    pctx.commit()
    return _card_out(pctx, model, version)


# --- lineage ---------------------------------------------------------------------------


def lineage(ctx: Context, project: str, name: str, ref: str) -> schemas.LineageOut:
    """Upstream (run, dataset versions) and downstream (aliases, ONNX, deployments)."""
    pctx = ctx.in_project(project)
    pctx.require("model:read", resource=_resource(project, name, ref))
    model, version = _find(pctx, name, ref)
    run_info = None
    if version.run_id is not None:
        run = tracking.find_run(pctx, version.run_id)
        run_info = {
            "id": run.id,
            "name": run.name,
            "experiment": run.experiment,
            "status": run.status,
        }
    rows = datasets.consumed_by(pctx, "model", [version.id]).get(version.id, [])
    via_run = set()
    if version.run_id is not None:
        via_run = set(datasets.consumed_by(pctx, "run", [version.run_id]).get(version.run_id, []))
    found = [
        {"dataset": d, "version": v, "via": "run" if (d, v) in via_run else "card"} for d, v in rows
    ]
    aliases = _aliases_of(pctx.session, model, version)
    onnx = None
    if version.onnx_blob_id is not None:
        conversion = version.checks.get("conversion", {})
        onnx = {"sha256": conversion.get("sha256"), "size": conversion.get("size")}
    return schemas.LineageOut(
        model=model.name,
        version=version.version,
        run=run_info,
        datasets=found,
        aliases=aliases,
        onnx=onnx,
    )


# --- gates -----------------------------------------------------------------------------


@dataclass
class GatePlan:
    project: str
    model: str
    version: int
    policy_sha256: str
    facts: gates.GateFacts


def plan_gates(ctx: Context, project: str, name: str, ref: str) -> GatePlan:
    """Everything the policy's gates need, read in one go (no writes). Running the gates
    loads the model and replaces the report protected aliases trust: model:write."""
    pctx = ctx.in_project(project)
    pctx.require("model:write", resource=_resource(project, name, ref))
    model, version = _find(pctx, name, ref)
    loaded = _policy(pctx)
    rules = loaded.policy.gate_rules()
    metrics = None
    if version.run_id is not None:
        metrics = dict(tracking.find_run(pctx, version.run_id).metrics)
    baselines: dict[str, gates.Baseline | None] = {}
    for rule in rules:
        if isinstance(rule, policies.NoRegressionGate):
            baselines[rule.no_regression.against] = _baseline(
                pctx, model, version, rule.no_regression.against
            )
    tables: dict[str, tuple[str, gates.Reader] | str] = {}
    for rule in rules:
        if isinstance(rule, policies.MetricGate) and rule.dataset:
            tables[gates.table_key(rule)] = _table(pctx, rule.dataset, str(rule.version))
    blob = storage.blob_row(pctx, version.blob_id, f"version {version.version} of {model.name!r}")
    facts = gates.GateFacts(
        model=model.name,
        version=version.version,
        format=version.format,
        filename=version.filename,
        size=version.size,
        inputs=version.inputs,
        outputs=version.outputs,
        card=cards.ModelCard.model_validate(version.card),
        run=version.run_id,
        metrics=metrics,
        sample_npz=version.sample,
        trust=_trust(loaded.policy),
        read_model=_read_blob(pctx, blob),
        rules=rules,
        baselines=baselines,
        tables=tables,
    )
    return GatePlan(project, model.name, version.version, loaded.sha256, facts)


def _baseline(
    pctx: Context, model: RegisteredModel, version: ModelVersion, alias: str
) -> gates.Baseline | None:
    try:
        held = _version(pctx, model, f"@{alias}")
    except NotFound:
        return None
    metrics = None
    if held.run_id is not None:
        metrics = dict(tracking.find_run(pctx, held.run_id).metrics)
    return gates.Baseline(held.version, held.id == version.id, held.run_id, metrics)


def _table(pctx: Context, dataset: str, ref: str) -> tuple[str, gates.Reader] | str:
    """The version's Parquet file to evaluate on, or why there is none."""
    assert pctx.project is not None
    try:
        files = datasets.list_files(pctx, pctx.project.name, dataset, ref, limit=1000, cursor=None)[
            0
        ]
    except NotFound as exc:
        return str(exc)
    tables = [f for f in files if f.path.endswith(".parquet")]
    if len(tables) != 1:
        return (
            f"dataset {dataset}@{ref} holds {len(tables)} Parquet files; a gate evaluates on "
            "a version with exactly one (a table version)"
        )
    try:
        blob = storage.held_blob(pctx, tables[0].sha256, size=tables[0].size)
    except NotFound:
        return f"the content of {tables[0].path} is missing"
    return tables[0].path.rsplit("/", 1)[-1], _read_blob(pctx, blob)


def record_gates(
    ctx: Context, plan: GatePlan, results: list[schemas.GateResult]
) -> schemas.GateReport:
    pctx = ctx.in_project(plan.project)
    pctx.require("model:write", resource=_resource(plan.project, plan.model, plan.version))
    model = _model(pctx, plan.model)
    version = _version(pctx, model, str(plan.version))
    report = schemas.GateReport(
        model=plan.model,
        version=plan.version,
        passed=all(r.passed for r in results),
        policy_sha256=plan.policy_sha256,
        results=results,
        checked_at=utcnow(),
        checked_by=pctx.actor,
    )
    version.gates = report.model_dump(mode="json")
    pctx.audit(
        "model:gates",
        _resource(plan.project, plan.model, plan.version),
        outcome="success" if report.passed else "failure",
        detail={
            "passed": report.passed,
            "failed": [r.rule for r in results if not r.passed],
            "policy_sha256": plan.policy_sha256,
        },
    )
    pctx.commit()
    return report
