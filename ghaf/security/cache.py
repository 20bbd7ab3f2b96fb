"""A read-path cache of authentication and project grants, keyed by the audit epoch.

Every change to tokens, principals, groups, grants or projects is audited, and every
audited write bumps ``audit_head.seq`` in the same transaction. That counter is therefore
a global "something security-relevant may have changed" epoch, shared by every server
process through the database. A read request looks up the epoch (one primary-key read) and
reuses what it resolved before only if the epoch is unchanged, so a revocation, a removed
member or a deleted user still takes effect on the very next request, in any process.
Writes never use the cache.

Domains may also keep *views* here: read results that depend only on audited state (a
model version's metadata, for example), dropped with everything else when the epoch moves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ghaf.core.database import Database
from ghaf.security.audit.models import AuditHead

if TYPE_CHECKING:
    from ghaf.security.context import Caller
    from ghaf.security.tenancy import Project

MAX_ENTRIES = 10_000
_EPOCH_SQL = f"SELECT seq FROM {AuditHead.__tablename__} WHERE id = 1"  # noqa: S608


@dataclass(frozen=True)
class CachedToken:
    caller: Caller
    expires_at: datetime | None


class SecurityCache:
    """Thread-safe; entries of an older epoch are dropped wholesale."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._tokens: dict[str, CachedToken] = {}
        self._grants: dict[tuple[Any, ...], tuple[Project, str]] = {}
        self._views: dict[tuple[Any, ...], Any] = {}
        # [hits, misses] per kind, counted under the lock already held (free on the hot
        # path); /metrics reads them through stats(). A stale epoch counts as a miss.
        self._tally: dict[str, list[int]] = {"token": [0, 0], "grant": [0, 0], "view": [0, 0]}
        self._invalidations = 0

    def stats(self) -> tuple[dict[str, tuple[int, int]], int]:
        """(hits, misses) per kind (token, grant, view) and how often a newer epoch
        emptied the cache, since this process started."""
        with self._lock:
            return {k: (v[0], v[1]) for k, v in self._tally.items()}, self._invalidations

    @staticmethod
    def read_epoch(database: Database) -> int:
        # Runs on every read request: plain SQL outside the session, which a cache hit
        # then never needs to open.
        return int(database.peek(_EPOCH_SQL))

    def _usable(self, epoch: int) -> bool:
        """Move to a newer epoch (dropping everything); refuse an older one."""
        if self._epoch is None or epoch > self._epoch:
            self._invalidations += self._epoch is not None
            self._epoch = epoch
            self._tokens = {}
            self._grants = {}
            self._views = {}
        return epoch == self._epoch

    def token(self, epoch: int, secret_hash: str) -> CachedToken | None:
        with self._lock:
            found = self._tokens.get(secret_hash) if self._usable(epoch) else None
            self._tally["token"][found is None] += 1
            return found

    def put_token(self, epoch: int, secret_hash: str, entry: CachedToken) -> None:
        with self._lock:
            if self._usable(epoch):
                if len(self._tokens) >= MAX_ENTRIES:
                    self._tokens.clear()
                self._tokens[secret_hash] = entry

    def grant(self, epoch: int, key: tuple[Any, ...]) -> tuple[Project, str] | None:
        with self._lock:
            found = self._grants.get(key) if self._usable(epoch) else None
            self._tally["grant"][found is None] += 1
            return found

    def put_grant(self, epoch: int, key: tuple[Any, ...], value: tuple[Project, str]) -> None:
        with self._lock:
            if self._usable(epoch):
                if len(self._grants) >= MAX_ENTRIES:
                    self._grants.clear()
                self._grants[key] = value

    def view(self, epoch: int, key: tuple[Any, ...]) -> Any:
        """A domain's read result cached at ``epoch`` (see :meth:`put_view`), or None."""
        with self._lock:
            found = self._views.get(key) if self._usable(epoch) else None
            self._tally["view"][found is None] += 1
            return found

    def put_view(self, epoch: int, key: tuple[Any, ...], value: Any) -> None:
        """Cache a read result that depends only on audited state: every change to it
        bumps the epoch, so it is never served stale. ``key`` starts with the domain's
        name and the project id; the caller still authorises every request."""
        with self._lock:
            if self._usable(epoch):
                if len(self._views) >= MAX_ENTRIES:
                    self._views.clear()
                self._views[key] = value
