"""Rate limits and lockout policy for password login, with the maintained ``limits``.

Moving windows per client address and per user name, counted in memory (one server
process) or in Redis (``rate_limit_storage_url``, shared by every server). A refused
attempt costs a counter look-up, never an argon2 verification. The lockout of an account
lives in the database (``principals.locked_until``); names without an account get the same
treatment from an in-memory failure count, so a lockout does not tell who exists.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ghaf.core.errors import TooManyRequests
from ghaf.core.metrics import LOGINS
from ghaf.core.settings import Settings

LOCKED = "too many failed logins for this user name; try again later"


@dataclass(frozen=True)
class Lockout:
    failures: int = 10
    window_s: float = 900
    duration_s: float = 900


class LoginGuard:
    """Counts login attempts by client address and by user name; holds the lockout."""

    def __init__(
        self,
        *,
        per_address: str = "20/minute",
        per_name: str = "10/minute",
        lockout: Lockout | None = None,
        storage_url: str = "memory://",
    ) -> None:
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_url))
        self._in_memory = storage_url.startswith("memory://")
        self._per_address = parse(per_address)
        self._per_name = parse(per_name)
        self.lockout = lockout or Lockout()
        self._unknown = RateLimitItemPerSecond(
            self.lockout.failures, max(1, math.ceil(self.lockout.window_s))
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginGuard:
        return cls(
            per_address=settings.login_rate_per_address,
            per_name=settings.login_rate_per_name,
            lockout=Lockout(
                failures=settings.login_lockout_failures,
                window_s=settings.login_lockout_window_s,
                duration_s=settings.login_lockout_s,
            ),
            storage_url=settings.rate_limit_storage_url,
        )

    def hit(self, *, client: str | None, name: str) -> None:
        """Count one attempt, or raise ``TooManyRequests`` (not counted) when over."""
        checks = [(self._per_name, "name", name, "user name")]
        if client:
            checks.insert(0, (self._per_address, "address", client, "address"))
        for item, kind, key, what in checks:
            if not self._limiter.test(item, "login", kind, key):
                LOGINS.inc(value="throttled")
                raise TooManyRequests(
                    f"too many login attempts for this {what}; try again later",
                    retry_after=self._retry_after(item, kind, key),
                )
        for item, kind, key, _ in checks:
            self._limiter.hit(item, "login", kind, key)

    def check_address(self, client: str | None) -> None:
        """Raise ``TooManyRequests`` if ``client`` is over its limit (counts nothing):
        lets a flood be refused before its body is even parsed."""
        if client and not self._limiter.test(self._per_address, "login", "address", client):
            LOGINS.inc(value="throttled")
            raise TooManyRequests(
                "too many login attempts for this address; try again later",
                retry_after=self._retry_after(self._per_address, "address", client),
            )

    @property
    def in_memory(self) -> bool:
        return self._in_memory

    def _retry_after(self, item: RateLimitItem, kind: str, key: str) -> int:
        stats = self._limiter.get_window_stats(item, "login", kind, key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    # --- names without an account ----------------------------------------------------

    def unknown_failed(self, name: str) -> None:
        self._limiter.hit(self._unknown, "login", "unknown", name)

    def unknown_locked(self, name: str) -> int | None:
        """Seconds until ``name`` (no such account) may be tried again, or None."""
        if self._limiter.test(self._unknown, "login", "unknown", name):
            return None
        return self._retry_after(self._unknown, "unknown", name)

    def reset(self, name: str) -> None:
        """Forget the attempts counted for ``name`` (an admin unlocked the account)."""
        self._limiter.clear(self._per_name, "login", "name", name)
        self._limiter.clear(self._unknown, "login", "unknown", name)
