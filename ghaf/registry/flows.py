"""Registry actions of several steps: one function per user action, called alike by REST,
the CLI, the UI and scheduled work.

Registering a version and checking gates load the model and predict in a child process,
which takes seconds. No transaction may stay open meanwhile (on SQLite a write
transaction holds the installation's one write lock), so each flow plans in the
context's transaction, ends it, runs the child, then commits in a new one. The steps
(:mod:`ghaf.registry.service`) authorise themselves, each time they open a transaction.

A flow therefore ends the transaction of the context it is given: anything the caller
left uncommitted in it is rolled back first.
"""

from __future__ import annotations

from ghaf.core.errors import GhafError, IntegrityFailure
from ghaf.registry import checks, gates, schemas, service
from ghaf.security.context import Context
from ghaf.storage import service as storage


def _end_transaction(ctx: Context) -> None:
    """Release the context's transaction (and SQLite's write lock) before the child runs;
    the next step opens a fresh one on the same context."""
    ctx.close()


def register_version(
    ctx: Context,
    project: str,
    model: str,
    request: schemas.VersionCreate,
    *,
    timeout_s: float,
) -> schemas.VersionOut:
    """Register a version from an uploaded file or a run's artifact (needs model:write).

    The file is inspected without running it (pickles are refused unless the policy
    allows them and the scan passes), then loaded and used to predict the sample in a
    child process given ``timeout_s`` seconds. A refusal is audited and nothing else is
    written.
    """
    plan = service.plan_version(ctx, project, model, request)
    _end_transaction(ctx)
    try:
        checked = checks.check(plan.candidate, plan.read(), timeout_s=timeout_s)
    except GhafError as exc:
        if isinstance(exc, IntegrityFailure):  # the uploaded bytes were damaged at rest
            exc = storage.corrupt(f"model file {plan.filename!r}", exc)
        service.refuse_version(ctx, project, model, exc)
        raise
    return service.commit_version(ctx, plan, checked, request)


def check_gates(
    ctx: Context, project: str, model: str, version: str, *, timeout_s: float
) -> schemas.GateReport:
    """Measure every gate of the project's policy on ``version`` (a number, ``latest``
    or an alias) and store the report on it; needs model:write. The model runs in a
    child process given ``timeout_s`` seconds."""
    plan = service.plan_gates(ctx, project, model, version)
    _end_transaction(ctx)
    results = gates.evaluate(plan.facts, timeout_s=timeout_s)
    return service.record_gates(ctx, plan, results)


def set_alias(
    ctx: Context,
    project: str,
    model: str,
    alias: str,
    request: schemas.AliasSet,
    *,
    timeout_s: float,
) -> schemas.AliasOut:
    """Point ``alias`` at a version (needs model:write). A protected alias first runs the
    gates (as :func:`check_gates`) when the version has no passing check under the
    current policy; the alias then moves only if they pass."""
    if service.alias_needs_gates(ctx, project, model, alias, request.version):
        _end_transaction(ctx)
        check_gates(ctx, project, model, str(request.version), timeout_s=timeout_s)
    return service.set_alias(ctx, project, model, alias, request)
