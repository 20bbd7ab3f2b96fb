"""``ghaf.start_run``: a run whose log calls return at once.

``log_metric`` and friends append to an in-memory buffer. A background thread sends the
buffer every ``flush_interval`` seconds (sooner when it grows large) as one compressed
Arrow batch with a sequence number, retrying transient failures; the server applies each
batch number once. Between batches it sends heartbeats, so a run whose process died is
marked failed. If the server cannot be reached, batches go to a local spool file
(fsynced) and are sent when it answers again, or by ``ghaf runs sync``.

Leaving the ``with`` block, normally or by an exception, sends everything still buffered
and ends the run before ``start_run``'s block returns: every logged point is then durable
on the server or in the spool.
"""

from __future__ import annotations

import logging
import numbers
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from ghaf.client import provenance, spool
from ghaf.client.client import Client
from ghaf.client.files import file_sha256
from ghaf.client.tracking import _create_body
from ghaf.core.errors import GhafError, InvalidInput, Unavailable
from ghaf.core.ids import new_id
from ghaf.tracking.keys import validate_key
from ghaf.tracking.schemas import MAX_PARAM_VALUE, RunArtifactOut, RunOut

if TYPE_CHECKING:
    from ghaf.tracking.batches import LogBatch


def _batches() -> ModuleType:
    """The Arrow wire form (ghaf.tracking.batches: pyarrow), loaded when a run starts,
    not by ``import ghaf``."""
    from ghaf.tracking import batches

    return batches


log = logging.getLogger("ghaf.client")
BATCH_POINTS = 50_000  # send early when this many points wait
RETRIES = 3
RETRY_PAUSE_S = 0.5
DEFAULT_HEARTBEAT_S = 30.0
_active: list[ActiveRun] = []


@lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    from importlib import metadata

    return metadata.packages_distributions()


@lru_cache(maxsize=4096)
def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _packages() -> dict[str, str]:
    """Versions of the installed distributions this process has imported: what the
    run's code can actually depend on (the whole environment would be noise)."""
    found = {}
    by_module = _distributions()
    for module in [name for name in list(sys.modules) if "." not in name]:
        for dist in by_module.get(module, []):
            version = _version(dist)
            if version is not None:
                found[dist.lower()] = version
    return dict(sorted(found.items()))


@lru_cache(maxsize=8)
def _provenance(where: str) -> dict[str, Any]:
    """Git commit, host and Python (once per folder and process: git costs a process)."""
    return provenance.capture(Path(where))


@dataclass
class _Points:
    """Buffered points as columns (key codes, values, steps, timestamps in ms)."""

    codes: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)


def default_project(project: str | None) -> str:
    found = project or os.environ.get("GHAF_PROJECT")
    if not found:
        raise InvalidInput("pass project=... or set GHAF_PROJECT", field="project")
    return found


def active_run() -> ActiveRun | None:
    """The innermost run started with ``start_run`` in this process, if any."""
    return _active[-1] if _active else None


class ActiveRun:
    """A running run. Use it as a context manager, or call :meth:`end` yourself."""

    def __init__(
        self,
        client: Client,
        project: str,
        experiment: str,
        *,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        note: str = "",
        flush_interval: float = 1.0,
        system_metrics: bool = False,
        system_metrics_interval: float = 10.0,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.project = project
        self.experiment = experiment
        self.id = new_id()
        self._owns_client = owns_client
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._points = _Points()
        self._params: dict[str, str] = {}
        self._pending_params: dict[str, str] = {}
        self._pending_tags: dict[str, str] = {}
        self._steps: dict[str, int] = {}
        # Metric keys as codes into one dictionary per run: the buffer holds small ints,
        # and the batch's dictionary-encoded key column is built without hashing strings.
        self._codes: dict[str, int] = {}
        self._names: list[str] = []
        self._seq = 0
        self._errors: list[GhafError] = []
        self._ended = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._spool = spool.Spool(self.id)
        _batches()  # pyarrow now, not in the sender thread's first batch
        self._offline = False
        self._last_contact = time.monotonic()
        self._flush_interval = flush_interval
        body = _create_body(
            self.id,
            name,
            tags,
            note,
            _provenance(os.getcwd()) | {"command": _command(), "packages": _packages()},
        )
        self._create = {
            "url": client.url,
            "project": project,
            "experiment": experiment,
            "body": body,
        }
        self.info: RunOut | None = None
        try:
            self.info = client.runs._create(project, experiment, body)
        except Unavailable as exc:
            self._go_offline(exc)
        self.name = self.info.name if self.info else (name or f"run-{self.id[-6:]}")
        timeout = self.info.heartbeat_timeout_s if self.info else None
        self._heartbeat_s = timeout / 4 if timeout else DEFAULT_HEARTBEAT_S
        self._thread = threading.Thread(target=self._loop, name=f"ghaf-run-{self.id}", daemon=True)
        self._thread.start()
        self._sampler: Any = None
        if system_metrics:
            from ghaf.client.system_metrics import SystemSampler

            self._sampler = SystemSampler(self, interval=system_metrics_interval)
            self._sampler.start()
        _active.append(self)

    # --- logging (returns at once) -----------------------------------------------------

    def log_metric(
        self, key: str, value: float, step: int | None = None, *, timestamp: int | None = None
    ) -> None:
        """Buffer one point. ``step`` defaults to the key's previous step + 1 (from 0);
        ``timestamp`` is milliseconds since the epoch (default: now)."""
        code = self._codes.get(key)
        if code is None:
            validate_key(key, kind="metric")
            code = self._codes[key] = len(self._names)
            self._names.append(key)
        if type(value) is not float:
            value = _number(key, value)
        if step is None:
            step = self._steps.get(key, -1) + 1
        elif type(step) is not int:
            step = _integer(key, step)
        self._steps[key] = step
        stamp = timestamp if timestamp is not None else time.time_ns() // 1_000_000
        with self._lock:
            if self._ended:
                raise InvalidInput(f"run {self.id} has ended; start a new run to log more")
            points = self._points
            points.codes.append(code)
            points.values.append(value)
            points.steps.append(step)
            points.stamps.append(stamp)
            if len(points.codes) >= BATCH_POINTS:
                self._wake.set()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Buffer params. A param cannot change: a different value for a key already
        logged in this run raises here; one set elsewhere is refused at the next flush."""
        checked = {}
        for key, value in params.items():
            validate_key(key, kind="param")
            text = str(value)
            if len(text) > MAX_PARAM_VALUE:
                raise InvalidInput(
                    f"param {key!r} is {len(text):,} characters long; the limit is "
                    f"{MAX_PARAM_VALUE:,}. Log long values with log_text or log_artifact.",
                    field=f"params.{key}",
                )
            if key in self._params and self._params[key] != text:
                raise InvalidInput(
                    f"param {key!r} is already {self._params[key]!r} in run {self.id}; "
                    "params cannot change (use a tag or a metric)",
                    field=f"params.{key}",
                )
            checked[key] = text
        with self._lock:
            self._check_open()
            self._params.update(checked)
            self._pending_params.update(checked)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        checked = {validate_key(k, kind="tag"): str(v) for k, v in tags.items()}
        with self._lock:
            self._check_open()
            self._pending_tags.update(checked)

    def _check_open(self) -> None:
        if self._ended:
            raise InvalidInput(f"run {self.id} has ended; start a new run to log more")

    # --- synchronous calls ---------------------------------------------------------------

    def log_artifact(
        self, local_path: str | Path, *, path: str | None = None
    ) -> RunArtifactOut | None:
        """Upload a file now (encrypted at rest). Offline, it is remembered in the spool
        and uploaded by ``ghaf runs sync``; ``None`` is returned then."""
        local = Path(local_path)
        if not self._offline:
            try:
                self.flush()
                return self.client.runs.log_artifact(self.project, self.id, local, path=path)
            except Unavailable as exc:
                self._go_offline(exc)
        self._spool.append(
            spool.FILE,
            {
                "local": str(local.resolve()),
                "path": path or local.name,
                "sha256": file_sha256(local),
            },
        )
        return None

    def log_text(self, text: str, path: str) -> RunArtifactOut | None:
        """Store ``text`` as the artifact ``path`` (e.g. a long config)."""
        if self._offline:
            raise Unavailable("the server is unreachable; log_text needs it")
        return self.client.runs.log_artifact(self.project, self.id, text.encode(), path=path)

    def log_input(self, dataset: str, version: int | str = "latest") -> None:
        """Lineage: this run read ``dataset`` at ``version`` (number, tag or latest)."""
        if not self._offline:
            try:
                self.flush()
                self.client.runs.log_input(self.project, self.id, dataset, version)
                return
            except Unavailable as exc:
                self._go_offline(exc)
        self._spool.append(spool.INPUT, {"dataset": dataset, "version": version})

    def flush(self) -> None:
        """Send everything logged so far and wait until it is durable; raises if the
        server refused any batch."""
        self._send()
        self._raise_errors()

    def _raise_errors(self) -> None:
        """Raise the first refusal (as its own type), mentioning any others."""
        if self._errors:
            errors, self._errors = self._errors, []
            first = errors[0]
            if len(errors) > 1:
                first.detail += f" (and {len(errors) - 1} more refused batch(es))"
            first.detail = f"the server refused logged data: {first.detail}"
            raise first

    # --- the background sender -----------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._send(background=True)
            except Exception:  # the sender must survive anything; errors surface at flush
                log.exception("ghaf: sending run %s's log failed", self.id)

    def _take(self, status: str | None) -> LogBatch | None:
        with self._lock:
            points, self._points = self._points, _Points()
            params, self._pending_params = self._pending_params, {}
            tags, self._pending_tags = self._pending_tags, {}
            names = list(self._names)
        if not (points.codes or params or tags or status):
            return None
        self._seq += 1
        batches = _batches()
        table = batches.SCHEMA.empty_table()
        if points.codes:
            table = batches.coded_metrics_table(
                points.codes, names, points.values, points.steps, points.stamps
            )
        batch: LogBatch = batches.LogBatch(
            metrics=table, params=params, tags=tags, seq=self._seq, status=status
        )
        return batch

    def _send(self, status: str | None = None, *, background: bool = False) -> None:
        with self._send_lock:
            if background and self._stop.is_set():
                return  # end() sends the rest itself
            if self._offline and time.monotonic() - self._last_contact > 10:
                self._try_reconnect()
            batch = self._take(status)
            batches = _batches()
            if batch is None:
                if not self._offline and time.monotonic() - self._last_contact > self._heartbeat_s:
                    self._post(batches.encode(batches.LogBatch()), heartbeat=True)
                return
            body = batches.encode(batch)
            if self._offline:
                self._spool.append(spool.BATCH, body)
            else:
                self._post(body)

    def _post(self, body: bytes, *, heartbeat: bool = False) -> None:
        for attempt in range(RETRIES):
            try:
                self.client.runs.log_encoded(self.project, self.id, body)
                self._last_contact = time.monotonic()
                return
            except Unavailable as exc:
                if attempt == RETRIES - 1:
                    if not heartbeat:
                        self._go_offline(exc)
                        self._spool.append(spool.BATCH, body)
                    return
                time.sleep(RETRY_PAUSE_S * 2**attempt)
            except GhafError as exc:
                if exc.status >= 500 and attempt < RETRIES - 1:
                    time.sleep(RETRY_PAUSE_S * 2**attempt)
                    continue
                self._errors.append(exc)
                return

    def _go_offline(self, exc: Exception) -> None:
        if not self._offline:
            log.warning(
                "ghaf: server unreachable (%s); run %s logs to %s until it answers "
                "(or send it later with `ghaf runs sync`)",
                exc,
                self.id,
                self._spool.path,
            )
            if not self._spool.exists:
                self._spool.append(spool.CREATE, self._create)
        self._offline = True
        self._last_contact = time.monotonic()

    def _try_reconnect(self) -> None:
        try:
            self.client.runs.replay(self._spool)
        except Unavailable:
            self._last_contact = time.monotonic()
            return
        self._offline = False
        self._last_contact = time.monotonic()
        log.warning("ghaf: server reachable again; run %s's spooled log was sent", self.id)

    # --- ending --------------------------------------------------------------------------

    def end(self, status: str = "finished") -> None:
        """Send what is buffered, end the run with ``status`` and wait for both."""
        if self._ended:
            return
        if self._sampler is not None:
            self._sampler.stop()
        self._stop.set()
        self._wake.set()
        with self._lock:
            self._ended = True
        try:
            # The sender sends nothing once stopped (see _send), so the last batch goes
            # from here at once, while the sender exits; it is joined afterwards, which
            # seldom waits, instead of waiting first for it to wake up and exit.
            refused = len(self._errors)
            self._send(status=status)
            if len(self._errors) > refused:
                # The final batch was refused, end and all: still end the run, as failed.
                self._seq += 1
                batches = _batches()
                self._post(batches.encode(batches.LogBatch(seq=self._seq, status="failed")))
        finally:
            self._thread.join()
            if self in _active:
                _active.remove(self)
            if self._offline:
                print(
                    f"ghaf: run {self.id} was logged to {self._spool.path} because the server "
                    "was unreachable; send it with `ghaf runs sync`",
                    file=sys.stderr,
                )
            if self._owns_client:
                self.client.close()
        self._raise_errors()

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            status = "finished"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "killed"
        else:
            status = "failed"
        if exc_type is None:
            self.end(status)
            return
        try:
            self.end(status)
        except GhafError as error:  # don't hide the user's own exception
            log.error("ghaf: ending run %s: %s", self.id, error)


def _command() -> str:
    import shlex

    return shlex.join(sys.argv)


def _number(key: str, value: Any) -> float:
    if isinstance(value, numbers.Real) or (
        hasattr(value, "__float__") and not isinstance(value, str | bytes)
    ):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise InvalidInput(
        f"metric {key!r} value {value!r} is not a number ({type(value).__name__})",
        field=f"metrics.{key}",
    )


def _integer(key: str, step: Any) -> int:
    if isinstance(step, numbers.Integral) and not isinstance(step, bool):
        return int(step)
    raise InvalidInput(
        f"metric {key!r} step {step!r} is not an integer", field=f"metrics.{key}.step"
    )


def start_run(
    experiment: str,
    *,
    project: str | None = None,
    name: str | None = None,
    tags: Mapping[str, str] | None = None,
    note: str = "",
    client: Client | None = None,
    flush_interval: float = 1.0,
    system_metrics: bool = False,
    system_metrics_interval: float = 10.0,
) -> ActiveRun:
    """Start a run in ``experiment`` (created if needed) of ``project`` (default
    ``$GHAF_PROJECT``), with ``client`` or the stored login / GHAF_URL and GHAF_TOKEN.

    Use it as ``with ghaf.start_run(...) as run:``; leaving the block ends the run as
    finished, or failed (killed for Ctrl-C) if an exception escaped it.
    """
    return ActiveRun(
        client or Client(),
        default_project(project),
        experiment,
        name=name,
        tags=tags,
        note=note,
        flush_interval=flush_interval,
        system_metrics=system_metrics,
        system_metrics_interval=system_metrics_interval,
        owns_client=client is None,
    )
