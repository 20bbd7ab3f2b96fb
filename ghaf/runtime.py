"""The long-lived objects one ghaf installation runs on: settings, database, keys.

It composes ``security`` and ``storage`` and sits right above them, below ``projects``
and the other domains, whose routers reach it through a request's ``ServiceCall`` and
whose periodic tasks are handed it by the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ghaf.core.database import Database
from ghaf.core.settings import Settings
from ghaf.security.audit.service import AuditWriter
from ghaf.security.audit.witness import AuditWitness
from ghaf.security.cache import SecurityCache
from ghaf.security.context import Caller, Context, SessionSlot
from ghaf.security.keyring import DatabaseKeyring
from ghaf.security.kms import LocalKms
from ghaf.security.ratelimit import LoginGuard
from ghaf.security.service import authenticate
from ghaf.storage.backends import open_backend
from ghaf.storage.backends.base import Backend
from ghaf.storage.store import Store


def _witness_backend(settings: Settings, store: Store) -> Backend:
    """Where audit checkpoints are witnessed: ``GHAF_AUDIT_WITNESS_URL``, else the store."""
    if settings.audit_witness_url:
        url = settings.audit_witness_url
        return open_backend(settings.model_copy(update={"storage_url": url}))
    return store.backend


@dataclass(frozen=True)
class Resolved:
    """The request's caller; ``epoch`` is set when it came through the read cache."""

    caller: Caller
    epoch: int | None


@dataclass
class Runtime:
    settings: Settings
    database: Database
    keyring: DatabaseKeyring
    audit: AuditWriter
    store: Store
    cache: SecurityCache = field(default_factory=SecurityCache)
    login_guard: LoginGuard = field(init=False)
    # What domains keep for the life of the server (a deployment host's replicas), by
    # domain name: their lifespans (Domain.lifespan) put them here; contexts carry them.
    backends: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.login_guard = LoginGuard.from_settings(self.settings)

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        """Connect to an initialised installation (``ghaf admin init`` ran before).

        Refuses (``MasterKeyMismatch``) when the master key does not open the database's
        keyring, so such a server never serves, nor signs an audit checkpoint. Each
        domain's ``on_open`` hook runs before (the app and the admin commands call
        them: ghaf/domains.py)."""
        database = Database(
            settings.resolved_database_url,
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
        )
        try:
            keyring = DatabaseKeyring.open(database, settings)
        except BaseException:
            database.dispose()
            raise
        store = Store(open_backend(settings), LocalKms(keyring), settings.storage_chunk_bytes)
        audit = AuditWriter(
            keyring,
            checkpoint_every=settings.audit_checkpoint_every,
            witness=AuditWitness.from_settings(settings, _witness_backend(settings, store)),
        )
        return cls(settings=settings, database=database, keyring=keyring, audit=audit, store=store)

    def context(
        self,
        *,
        write: bool,
        caller: Caller | None = None,
        request_id: str | None = None,
        client: str | None = None,
        system_actor: str | None = None,
    ) -> Context:
        """A context with a fresh session; the caller closes ``ctx.session``.

        Read-only contexts share the runtime's security cache (validated per request).
        """
        return Context(
            database=self.database,
            session=SessionSlot(lambda: self.database.session(write=write)),
            audit_writer=self.audit,
            caller=caller,
            request_id=request_id,
            client=client,
            system_actor=system_actor,
            cache=None if write else self.cache,
            store=self.store,
            backends=self.backends,
        )

    @contextmanager
    def acting_as(self, actor: str, *, request_id: str) -> Iterator[Context]:
        """A write context for ghaf's own work (scheduled tasks), closed afterwards."""
        ctx = self.context(write=True, request_id=request_id, system_actor=actor)
        try:
            yield ctx
        finally:
            ctx.close()

    def resolve_caller(
        self,
        authorization: str | None,
        *,
        write: bool,
        request_id: str | None,
        client: str | None,
    ) -> Resolved:
        """Authenticate in a read session of its own (``authenticate`` audits refusals).

        Reads use the epoch-checked security cache; writes never do
        (ghaf/security/cache.py) and look the token up afresh. No transaction stays open:
        a write request's own transaction starts later, inside its service call.
        """
        ctx = self.context(write=False, request_id=request_id, client=client)
        if write:
            ctx.cache = None
        try:
            caller = authenticate(ctx, authorization)
            return Resolved(caller, ctx.epoch)
        finally:
            ctx.close()

    def close(self) -> None:
        self.database.dispose()
