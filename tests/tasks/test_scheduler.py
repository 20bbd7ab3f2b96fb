"""The task scheduler: intervals, outcomes, leases across servers, restarts, listing."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from ghaf.cli.main import app
from ghaf.console import output
from ghaf.core.clock import as_utc, utcnow
from ghaf.core.database import Database
from ghaf.core.errors import PermissionDenied
from ghaf.core.migrate import upgrade
from ghaf.tasks import PeriodicTask, Scheduler, service
from ghaf.tasks.models import TaskRun
from tests.conftest import Databases, Platform


@dataclass
class Host:
    """What a server's runtime is to the scheduler: something with a database."""

    database: Database


@pytest.fixture
def url(databases: Databases) -> str:
    url = databases.new_url()
    database = Database(url)
    upgrade(database)
    database.dispose()
    return url


@pytest.fixture
def hosts(url: str) -> Iterator[Callable[[], Host]]:
    """``hosts()`` -> a new "server" (its own engine) on the one database."""
    opened: list[Host] = []

    def make() -> Host:
        host = Host(Database(url))
        opened.append(host)
        return host

    yield make
    for host in opened:
        host.database.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _runs(host: Host, name: str) -> list[TaskRun]:
    with host.database.transaction(write=False) as session:
        return list(
            session.scalars(
                select(TaskRun).where(TaskRun.task_name == name).order_by(TaskRun.started_at)
            )
        )


def _status(host: Host, task: PeriodicTask[Host]) -> service.TaskOut:
    with host.database.transaction(write=False) as session:
        listed = service.statuses(session, [task], now=utcnow())
    return next(t for t in listed if t.name == task.name)


def test_a_task_runs_again_only_after_its_interval(hosts: Callable[[], Host]) -> None:
    clock = Clock()
    calls: list[datetime] = []
    task = PeriodicTask[Host]("t.hourly", 3600, lambda _h: calls.append(clock()) or None)
    scheduler = Scheduler(hosts(), [task], clock=clock)
    assert scheduler.run_due() == ["t.hourly"]  # never ran: due at once
    clock.advance(1800)
    assert scheduler.run_due() == []
    clock.advance(1799)
    assert scheduler.run_due() == []
    clock.advance(2)
    assert scheduler.run_due() == ["t.hourly"]
    assert len(calls) == 2


def test_the_loop_runs_each_task_on_its_interval(hosts: Callable[[], Host]) -> None:
    starts: list[float] = []
    fast = PeriodicTask[Host]("t.fast", 0.25, lambda _h: starts.append(time.monotonic()) or "ran")
    slow = PeriodicTask[Host]("t.slow", 3600, lambda _h: "slow ran")

    async def main() -> None:
        scheduler = Scheduler(hosts(), [fast, slow], poll_s=0.05)
        scheduler.start()
        await asyncio.sleep(1.5)
        await scheduler.stop()

    asyncio.run(main())
    assert 3 <= len(starts) <= 7, starts
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.24, gaps
    host = hosts()
    assert len(_runs(host, "t.slow")) == 1


def test_each_outcome_is_recorded(hosts: Callable[[], Host]) -> None:
    def boom(_host: Host) -> str:
        raise ValueError("the disk is full")

    good = PeriodicTask[Host]("t.good", 60, lambda _h: "purged 2 project(s)")
    bad = PeriodicTask[Host]("t.bad", 60, boom)
    host = hosts()
    # The failing task comes first: it must not keep the other from running.
    assert Scheduler(host, [bad, good]).run_due() == ["t.bad", "t.good"]
    ok, failed = _status(host, good), _status(host, bad)
    assert ok.state == "ok" and ok.last_message == "purged 2 project(s)"
    assert failed.state == "error" and failed.last_message == "ValueError: the disk is full"
    for status in (ok, failed):
        assert status.last_started_at and status.last_finished_at
        assert status.last_duration_s is not None and status.last_duration_s >= 0
        assert status.next_run_at is not None
        assert status.next_run_at - status.last_finished_at == timedelta(seconds=60)
    (run,) = _runs(host, "t.bad")
    assert run.ok is False and run.finished_at is not None and "disk is full" in run.message
    (run,) = _runs(host, "t.good")
    assert run.ok is True and run.duration_s is not None


def test_a_failing_task_does_not_stop_the_loop(hosts: Callable[[], Host]) -> None:
    count = {"n": 0}

    def flaky(_host: Host) -> str:
        count["n"] += 1
        raise RuntimeError("nope")

    async def main() -> None:
        scheduler = Scheduler(hosts(), [PeriodicTask[Host]("t.flaky", 0.1, flaky)], poll_s=0.05)
        scheduler.start()
        await asyncio.sleep(0.6)
        await scheduler.stop()

    asyncio.run(main())
    assert count["n"] >= 3
    assert all(r.ok is False for r in _runs(hosts(), "t.flaky"))


def test_two_servers_never_run_one_task_at_once(hosts: Callable[[], Host]) -> None:
    lock = threading.Lock()
    active = {"now": 0, "most": 0, "runs": 0}

    def work(_host: Host) -> str:
        with lock:
            active["now"] += 1
            active["most"] = max(active["most"], active["now"])
            active["runs"] += 1
        time.sleep(0.15)
        with lock:
            active["now"] -= 1
        return "worked"

    task = PeriodicTask[Host]("t.exclusive", 0.01, work)

    async def main() -> None:
        servers = [Scheduler(hosts(), [task], poll_s=0.02) for _ in range(3)]
        for server in servers:
            server.start()
        await asyncio.sleep(1.5)
        for server in servers:
            await server.stop()

    asyncio.run(main())
    assert active["most"] == 1
    assert active["runs"] >= 4
    runs = [r for r in _runs(hosts(), "t.exclusive") if r.finished_at is not None]
    for earlier, later in itertools.pairwise(runs):
        assert as_utc(later.started_at) >= as_utc(earlier.finished_at)  # type: ignore[arg-type]


def test_racing_claims_elect_one_holder(hosts: Callable[[], Host]) -> None:
    """Many servers find the task due at the same instant: exactly one runs it."""
    ran: list[str] = []
    task = PeriodicTask[Host]("t.race", 3600, lambda _h: ran.append("x") or None)
    servers = [Scheduler(hosts(), [task]) for _ in range(6)]
    service.register(servers[0].database, [task])
    barrier = threading.Barrier(len(servers))
    won: list[bool] = []

    def go(server: Scheduler[Host]) -> None:
        barrier.wait()
        won.append(server.run_task(task))

    threads = [threading.Thread(target=go, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 5 + [True]
    assert ran == ["x"]


def test_a_running_task_keeps_its_lease(hosts: Callable[[], Host]) -> None:
    started, release = threading.Event(), threading.Event()

    def long(_host: Host) -> str:
        started.set()
        release.wait(10)
        return "done"

    task = PeriodicTask[Host]("t.long", 0.01, long)
    first = Scheduler(hosts(), [task], lease_s=0.3)
    second = Scheduler(hosts(), [task], lease_s=0.3)
    service.register(first.database, [task])
    worker = threading.Thread(target=first.run_task, args=(task,))
    worker.start()
    assert started.wait(5)
    time.sleep(0.7)  # more than twice the lease: renewals keep it
    assert second.run_task(task) is False
    assert _status(second.runtime, task).state == "running"
    release.set()
    worker.join()
    assert _status(second.runtime, task).state == "ok"


def test_a_crashed_holders_lease_expires_and_another_takes_over(
    hosts: Callable[[], Host],
) -> None:
    ran: list[str] = []
    task = PeriodicTask[Host]("t.crash", 60, lambda _h: ran.append("b") or "recovered")
    dead, alive = hosts(), hosts()
    service.register(dead.database, [task])
    # The first server claims the task and dies before finishing (no renewals, no record).
    assert service.claim(
        dead.database,
        task.name,
        holder="dead-host:1:x",
        interval_s=task.interval_s,
        lease_s=0.4,
        now=utcnow(),
        run_id="00000000-0000-7000-8000-000000000001",
    )
    survivor = Scheduler(alive, [task], lease_s=0.4)
    assert survivor.run_due() == []  # the lease is still live
    assert _status(alive, task).holder == "dead-host:1:x"
    time.sleep(0.5)
    assert survivor.run_due() == ["t.crash"]
    assert ran == ["b"]
    crashed, recovered = _runs(alive, task.name)
    assert crashed.holder == "dead-host:1:x" and crashed.finished_at is None
    assert recovered.holder == survivor.holder and recovered.ok is True


def test_a_restart_does_not_rerun_a_task_that_is_not_due(hosts: Callable[[], Host]) -> None:
    calls: list[str] = []
    hourly = PeriodicTask[Host]("t.hourly", 3600, lambda _h: calls.append("h") or None)
    Scheduler(hosts(), [hourly]).run_due()
    assert calls == ["h"]

    async def restarted() -> None:
        scheduler = Scheduler(hosts(), [hourly], poll_s=0.05)  # a new process
        scheduler.start()
        await asyncio.sleep(0.4)
        await scheduler.stop()

    asyncio.run(restarted())
    assert calls == ["h"]
    # ...but one that fell due while the server was away runs at once.
    clock = Clock()
    clock.advance(3601)
    assert Scheduler(hosts(), [hourly], clock=clock).run_due() == ["t.hourly"]
    assert calls == ["h", "h"]


def test_run_history_is_bounded(hosts: Callable[[], Host], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "KEEP_RUNS", 3)
    clock = Clock()
    task = PeriodicTask[Host]("t.often", 1, lambda _h: None)
    scheduler = Scheduler(hosts(), [task], clock=clock)
    for _ in range(6):
        assert scheduler.run_due() == ["t.often"]
        clock.advance(2)
    assert len(_runs(scheduler.runtime, task.name)) == 3


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        PeriodicTask[Host]("t.never", 0, lambda _h: None)
    task = PeriodicTask[Host]("t.twice", 1, lambda _h: None)
    with pytest.raises(ValueError, match="unique"):
        Scheduler(Host(Database("sqlite://")), [task, task])


# --- the server's own tasks, the CLI, REST and the SDK --------------------------------


SERVER_TASKS = [
    "audit.witness",
    "deployments.rollouts",
    "deployments.traffic-prune",
    "projects.purge",
    "tracking.reap-stale-runs",
]


def _wait_for_runs(platform: Platform, names: list[str]) -> None:
    deadline = time.monotonic() + 10
    while True:
        done = {t.name for t in platform.admin.admin.tasks() if t.state == "ok"}
        if set(names) <= done:
            return
        assert time.monotonic() < deadline, f"only {done} ran"
        time.sleep(0.05)


def test_the_server_schedules_its_tasks(platform: Platform) -> None:
    _wait_for_runs(platform, ["audit.witness", "projects.purge"])  # both run at start-up
    tasks = {t.name: t for t in platform.admin.admin.tasks()}
    assert sorted(tasks) == SERVER_TASKS
    purge = tasks["projects.purge"]
    assert purge.interval_s == 3600 and purge.last_message is not None
    assert purge.next_run_at is not None and purge.last_finished_at is not None
    assert purge.next_run_at - purge.last_finished_at == timedelta(hours=1)
    assert tasks["tracking.reap-stale-runs"].interval_s == 30


def test_only_platform_admins_list_tasks(platform: Platform) -> None:
    _user, client = platform.new_user()
    with pytest.raises(PermissionDenied, match="platform:admin"):
        client.admin.tasks()
    raw = client._http.get("/api/v1/admin/tasks")  # as a REST caller sees it
    assert raw.status_code == 403


def test_admin_tasks_cli(platform: Platform, monkeypatch: pytest.MonkeyPatch) -> None:
    _wait_for_runs(platform, ["projects.purge"])
    monkeypatch.setenv("GHAF_HOME", str(platform.settings.home))
    monkeypatch.setenv("GHAF_DATABASE_URL", platform.settings.resolved_database_url)
    runner = CliRunner()
    result = runner.invoke(app, ["admin", "tasks", "--json"])
    assert result.exit_code == 0, result.output
    listed = {t["name"]: t for t in json.loads(result.stdout)}
    assert sorted(listed) == SERVER_TASKS
    assert listed["projects.purge"]["state"] == "ok"
    assert listed["projects.purge"]["next_run_at"]
    # Wide enough for every column: the console is the process's own, sized once, so an
    # in-process invocation cannot resize it through COLUMNS.
    monkeypatch.setattr(output.console, "width", 200)
    table = runner.invoke(app, ["admin", "tasks"])
    assert table.exit_code == 0, table.output
    assert "projects.purge" in table.output and "next_run_at" in table.output


def test_admin_tasks_page_by_name(platform: Platform) -> None:
    admin = platform.admin
    names: list[str] = []
    cursor: str | None = None
    while True:
        params = {"page_size": 1, **({"cursor": cursor} if cursor else {})}
        page = admin.request("GET", "/api/v1/admin/tasks", params=params).json()
        assert len(page["items"]) == 1
        names += [t["name"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == SERVER_TASKS == [t.name for t in admin.admin.tasks(page_size=2)]
    bad = admin._http.get("/api/v1/admin/tasks", params={"cursor": "bm9wZQ"})
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"
