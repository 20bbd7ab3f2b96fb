"""The in-server scheduler: periodic tasks that domains declare, run on their interval.

A domain declares ``PeriodicTask(name, interval_s, run)`` in its manifest
(ghaf/platform/manifest.py); the server hands the list to
one ``Scheduler(runtime, tasks)`` whose loop lives in the app's lifespan. Each run
happens in a worker thread, under a lease in the database, so one task never runs twice
at once, across worker processes and across servers on one PostgreSQL. The next run is
due ``interval_s`` after the last one finished, as stored, so a restart does not re-run
a task that is not due. See docs/adr/0014-task-scheduler.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Generic

from ghaf.core.clock import utcnow
from ghaf.core.database import Database
from ghaf.core.ids import new_id
from ghaf.platform.manifest import PeriodicTask, R
from ghaf.tasks import service
from ghaf.tasks.models import ScheduledTask

log = logging.getLogger("ghaf.tasks")

DEFAULT_LEASE_S = 60.0
DEFAULT_POLL_S = 5.0


def holder_id() -> str:
    """Who holds a lease: host, process, and a random part (unique per scheduler)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


class Scheduler(Generic[R]):
    def __init__(
        self,
        runtime: R,
        tasks: Sequence[PeriodicTask[R]],
        *,
        lease_s: float = DEFAULT_LEASE_S,
        poll_s: float = DEFAULT_POLL_S,
        holder: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"periodic task names must be unique: {sorted(names)}")
        self.runtime = runtime
        self.tasks = list(tasks)
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.holder = holder or holder_id()
        self._clock = clock
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.Task[None] | None = None
        self._runners: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._wake: asyncio.Event | None = None

    @property
    def database(self) -> Database:
        return self.runtime.database

    # --- the loop (in the server) --------------------------------------------------------

    def start(self) -> None:
        """Start the loop on the running event loop (the app's lifespan)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop().create_task(
                self.run_forever(), name="ghaf-scheduler"
            )

    async def stop(self) -> None:
        """Stop scheduling. A run in progress finishes in its thread and records its
        outcome; if the process exits first, its lease simply expires."""
        self._stopping = True
        waiting = [t for t in (self._loop, *self._runners) if t is not None]
        for task in waiting:
            task.cancel()
        for task in waiting:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loop = None
        self._stopping = False

    async def run_forever(self) -> None:
        started = time.monotonic()
        self._wake = asyncio.Event()
        registered = False
        while not self._stopping:
            delay = self.poll_s
            try:
                if not registered:
                    await asyncio.to_thread(service.register, self.database, self.tasks)
                    registered = True
                delay = await self._tick(started)
            except Exception:  # the database may be away for a while: keep trying
                log.exception("task scheduler pass failed; retrying in %.0fs", self.poll_s)
            # Not asyncio.wait_for: on 3.11 it swallows a cancellation that arrives as
            # the wait ends (a run finishing sets the event), and stop() then waited
            # forever for a loop that went on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _tick(self, started: float) -> float:
        """Start every task that is due; return how long to sleep until the next."""
        assert self._wake is not None
        self._wake.clear()  # a run finishing from here on wakes the next pass
        rows = await asyncio.to_thread(self._rows)
        now = self._clock()
        delay = self.poll_s
        for task in self.tasks:
            with self._lock:
                if task.name in self._running:
                    continue
            held_back = started + task.start_delay_s - time.monotonic()
            if held_back > 0:
                delay = min(delay, held_back)
                continue
            due = service.due_at(rows.get(task.name), task.interval_s, now)
            if due is None:  # another holder's lease is live: look again at the next poll
                continue
            wait = (due - now).total_seconds()
            if wait > 0:
                delay = min(delay, wait)
                continue
            runner = asyncio.create_task(self._run(task), name=f"ghaf-task-{task.name}")
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        return max(delay, 0.01)

    def _rows(self) -> dict[str, ScheduledTask]:
        with self.database.transaction(write=False) as session:
            return service.read_rows(session)

    async def _run(self, task: PeriodicTask[R]) -> None:
        try:
            await asyncio.to_thread(self.run_task, task)
        finally:
            if self._wake is not None:
                self._wake.set()

    # --- one run (in a worker thread) --------------------------------------------------

    def run_due(self) -> list[str]:
        """Run, here and now, every task that is due and free (tests, one-off use);
        returns the names of those this scheduler ran."""
        service.register(self.database, self.tasks)
        return [task.name for task in self.tasks if self.run_task(task)]

    def run_task(self, task: PeriodicTask[R]) -> bool:
        """Claim ``task``'s lease, run it, record the outcome; False if it was not due
        or another holder had it."""
        with self._lock:
            if task.name in self._running:
                return False
            self._running.add(task.name)
        try:
            return self._claim_and_run(task)
        finally:
            with self._lock:
                self._running.discard(task.name)

    def _claim_and_run(self, task: PeriodicTask[R]) -> bool:
        run_id = new_id()
        started_at = self._clock()
        try:
            won = service.claim(
                self.database,
                task.name,
                holder=self.holder,
                interval_s=task.interval_s,
                lease_s=self.lease_s,
                now=started_at,
                run_id=run_id,
            )
        except Exception:
            log.exception("claiming periodic task %s failed", task.name)
            return False
        if not won:
            return False
        done = threading.Event()
        renewer = threading.Thread(
            target=self._renew_until, args=(task.name, done), name=f"ghaf-lease-{task.name}"
        )
        renewer.daemon = True
        renewer.start()
        ok, message = True, ""
        try:
            message = task.run(self.runtime) or ""
        except Exception as exc:  # recorded and logged; never takes the server down
            ok, message = False, f"{type(exc).__name__}: {exc}"
            log.exception("periodic task %s failed; next try in %.0fs", task.name, task.interval_s)
        finally:
            done.set()
            renewer.join()
        try:
            service.finish(
                self.database,
                task.name,
                holder=self.holder,
                run_id=run_id,
                started_at=started_at,
                finished_at=self._clock(),
                ok=ok,
                message=message,
            )
        except Exception:  # the lease expires on its own; the run ran
            log.exception("recording the outcome of periodic task %s failed", task.name)
        return True

    def _renew_until(self, name: str, done: threading.Event) -> None:
        while not done.wait(self.lease_s / 3):
            try:
                if not service.renew(
                    self.database, name, holder=self.holder, lease_s=self.lease_s, now=self._clock()
                ):
                    log.warning("lost the lease on periodic task %s: it lapsed", name)
                    return
            except Exception:
                log.warning("renewing the lease on periodic task %s failed", name, exc_info=True)
