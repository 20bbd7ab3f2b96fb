"""The long-lived objects one ghaf installation runs on: settings, database, keys."""

from __future__ import annotations

from dataclasses import dataclass, field

from ghaf.core.database import Database
from ghaf.core.settings import Settings
from ghaf.registry import sandbox
from ghaf.security.audit.service import AuditWriter
from ghaf.security.audit.witness import AuditWitness
from ghaf.security.cache import SecurityCache
from ghaf.security.context import Caller, Context, SessionSlot
from ghaf.security.keyring import LocalKeyring
from ghaf.security.kms import LocalKms
from ghaf.security.ratelimit import LoginGuard
from ghaf.storage.backends import open_backend
from ghaf.storage.store import Store


@dataclass
class Runtime:
    settings: Settings
    database: Database
    keyring: LocalKeyring
    audit: AuditWriter
    store: Store
    cache: SecurityCache = field(default_factory=SecurityCache)
    login_guard: LoginGuard = field(init=False)

    def __post_init__(self) -> None:
        self.login_guard = LoginGuard.from_settings(self.settings)

    @classmethod
    def open(cls, settings: Settings) -> Runtime:
        """Connect to an initialised installation (``ghaf admin init`` ran before)."""
        sandbox.protect_installation(settings)  # model checker children never read these
        database = Database(settings.resolved_database_url)
        keyring = LocalKeyring.from_settings(settings)
        store = Store(open_backend(settings), LocalKms(keyring), settings.storage_chunk_bytes)
        audit = AuditWriter(
            keyring,
            checkpoint_every=settings.audit_checkpoint_every,
            witness=AuditWitness.from_settings(settings, store.backend),
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
        )

    def close(self) -> None:
        self.database.dispose()
