"""Creating and upgrading an installation: home folder, keys, schema, first admin."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ghaf.core.database import Database
from ghaf.core.migrate import upgrade
from ghaf.core.settings import Settings
from ghaf.domains import open_runtime
from ghaf.security import service as security
from ghaf.security.audit.service import AUDIT_KEY, initialise_head
from ghaf.security.audit.witness import witness_tip
from ghaf.security.keyring import DatabaseKeyring, MasterKey, database_has_keyring
from ghaf.security.schemas import TokenCreated


@dataclass
class InitResult:
    home: str
    database: str
    schema_before: str | None
    schema_after: str
    admin: str | None
    token: TokenCreated | None


def _prepare_home(settings: Settings) -> None:
    for folder in (settings.home, settings.artifacts_dir):
        folder.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.home, 0o700)


def initialise(
    settings: Settings, *, admin_name: str = "admin", admin_password: str | None = None
) -> InitResult:
    """Idempotent: a second run upgrades nothing and creates no second admin.

    Against a database another home initialised, it joins that installation when its
    master key opens the database's keyring, and refuses before changing anything
    (``MasterKeyMismatch``) when it does not."""
    _prepare_home(settings)
    database = Database(settings.resolved_database_url)
    try:
        if database_has_keyring(database):
            DatabaseKeyring.open(database, settings)  # the key check, before any change
        before, after = upgrade(database)
        keyring = DatabaseKeyring.open(database, settings, create=True)
        keyring.ensure(AUDIT_KEY)
        with database.transaction() as session:
            initialise_head(session, keyring)
        runtime = open_runtime(settings)
        ctx = runtime.context(
            write=True, request_id="admin-init", client="local", system_actor="system:admin-init"
        )
        try:
            token = security.bootstrap_admin(ctx, name=admin_name, password=admin_password)
            ctx.close()
            # The genesis checkpoint: the init's own rows, signed and witnessed outside
            # the database, so even an installation that never served is covered.
            witness_tip(runtime.database, runtime.audit)
        finally:
            ctx.close()
            runtime.close()
    finally:
        database.dispose()
    return InitResult(
        home=str(settings.home.resolve()),
        database=_redacted(settings.resolved_database_url),
        schema_before=before,
        schema_after=after,
        admin=admin_name if token else None,
        token=token,
    )


def migrate(settings: Settings) -> tuple[str | None, str]:
    """Upgrade the schema, then move a home's ``keyring.json`` into the database (a
    database with a keyring is only checked against the master key)."""
    database = Database(settings.resolved_database_url)
    try:
        if database_has_keyring(database):
            DatabaseKeyring.open(database, settings)
        before, after = upgrade(database)
        if settings.keyring_path.exists() or database_has_keyring(database):
            DatabaseKeyring.open(database, settings)
        return before, after
    finally:
        database.dispose()


def rotate_master_key(settings: Settings, new: MasterKey) -> dict[str, Any]:
    """Re-seal the keyring under ``new`` with its audit row, in one transaction."""
    from ghaf.core.migrate import check_schema

    runtime = open_runtime(settings)
    try:
        check_schema(runtime.database)
        keyring = runtime.keyring
        ctx = runtime.context(
            write=True,
            request_id="admin-rotate-master-key",
            client="local",
            system_actor="system:admin-rotate-master-key",
        )
        try:
            detail = {
                "generation": keyring.generation + 1,
                "provider": new.provider,
                "kms_key_id": new.key_id,
            }
            # The audit head's lock first, then the keyring's: the order requests use.
            ctx.audit("keyring:rotate-master-key", "keyring", detail=detail)
            generation, keys = keyring.rotate_master(ctx.session, new)
            ctx.commit()
        finally:
            ctx.close()
    finally:
        runtime.close()
    return {**detail, "generation": generation, "keys": keys}


def _redacted(url: str) -> str:
    """The URL without any password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def mint_admin_token(
    settings: Settings,
    *,
    admin_name: str,
    token_name: str | None = None,
    expires_in_days: float | None = None,
) -> TokenCreated:
    """Issue a token for an existing platform admin, for operators with host access."""
    from ghaf.core.clock import utcnow
    from ghaf.core.errors import NotFound
    from ghaf.core.migrate import check_schema
    from ghaf.security.context import Caller
    from ghaf.security.schemas import TokenCreate

    runtime = open_runtime(settings)
    try:
        check_schema(runtime.database)
        ctx = runtime.context(write=True, request_id="admin-token", client="local")
        try:
            principal = security.get_principal(ctx.session, admin_name, field="admin")
            if not principal.is_platform_admin:
                raise NotFound(f"{admin_name!r} is not a platform admin", field="admin")
            ctx.caller = Caller(principal.id, principal.name, principal.kind, True)
            name = token_name or f"local-{utcnow().strftime('%Y%m%dT%H%M%S%f')}"
            return security.create_user_token(
                ctx, admin_name, TokenCreate(name=name, expires_in_days=expires_in_days)
            )
        finally:
            ctx.close()
    finally:
        runtime.close()
