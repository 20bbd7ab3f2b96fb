"""``client.experiments`` and ``client.runs``: the tracking API over HTTP.

For logging from training code use :func:`ghaf.start_run`, which buffers and sends in
the background; these are the direct, synchronous calls it is built on.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghaf.client import spool
from ghaf.client.files import download_target, file_sha256, write_verified
from ghaf.core.errors import GhafError, IntegrityFailure, InvalidInput, NotFound
from ghaf.core.paging import Page
from ghaf.tracking.schemas import (
    ExperimentOut,
    LogResult,
    MetricHistory,
    RunArtifactOut,
    RunOut,
)

if TYPE_CHECKING:
    from ghaf.client.client import Client
    from ghaf.tracking.batches import LogBatch

# The Arrow wire form (ghaf.tracking.batches, pyarrow) is imported where a batch is sent,
# so ``import ghaf`` and ``ghaf.Client()`` do not pay for pyarrow.

API = "/api/v1"


class RunList(builtins.list[RunOut]):
    """A page of runs; ``next_cursor`` fetches the next one (``None`` on the last)."""

    next_cursor: str | None = None

    def to_pandas(self) -> Any:
        """One row per run: id, name, status, then ``params.*``, ``metrics.*``, ``tags.*``."""
        import pandas as pd

        return pd.DataFrame([_flat(run) for run in self])


def _flat(run: RunOut) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run.id,
        "experiment": run.experiment,
        "name": run.name,
        "status": run.status,
        "start_time": run.start_time,
        "end_time": run.end_time,
    }
    row.update({f"params.{k}": v for k, v in run.params.items()})
    row.update({f"metrics.{k}": v for k, v in run.metrics.items()})
    row.update({f"tags.{k}": v for k, v in run.tags.items()})
    return row


@dataclass
class Comparison:
    """Runs side by side: the params that differ and every run's latest metrics."""

    runs: builtins.list[RunOut]
    params: dict[str, builtins.list[str | None]] = field(default_factory=dict)
    metrics: dict[str, builtins.list[float | None]] = field(default_factory=dict)

    @classmethod
    def of(cls, runs: builtins.list[RunOut]) -> Comparison:
        keys = sorted({k for run in runs for k in run.params})
        params = {k: [run.params.get(k) for run in runs] for k in keys}
        differing = {k: values for k, values in params.items() if len(set(values)) > 1}
        metric_keys = sorted({k for run in runs for k in run.metrics})
        metrics = {k: [run.metrics.get(k) for run in runs] for k in metric_keys}
        return cls(runs=runs, params=differing, metrics=metrics)


class Experiments:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, project: str, name: str, *, description: str = "") -> ExperimentOut:
        return self._client._model(
            ExperimentOut,
            "POST",
            f"{API}/projects/{project}/experiments",
            json={"name": name, "description": description},
        )

    def get(self, project: str, name: str) -> ExperimentOut:
        return self._client._model(
            ExperimentOut, "GET", f"{API}/projects/{project}/experiments/{name}"
        )

    def list(self, project: str, *, page_size: int = 100) -> builtins.list[ExperimentOut]:
        """Every experiment of the project, ``page_size`` per request."""
        return builtins.list(
            self._client._paged(
                ExperimentOut, f"{API}/projects/{project}/experiments", page_size=page_size
            )
        )

    def page(
        self, project: str, *, page_size: int = 100, cursor: str | None = None
    ) -> Page[ExperimentOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(
            ExperimentOut,
            f"{API}/projects/{project}/experiments",
            page_size=page_size,
            cursor=cursor,
        )


class Runs:
    def __init__(self, client: Client) -> None:
        self._client = client

    def _url(self, project: str, run: str = "") -> str:
        return f"{API}/projects/{project}/runs" + (f"/{run}" if run else "")

    def create(
        self,
        project: str,
        experiment: str,
        *,
        name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        note: str = "",
        provenance: Mapping[str, Any] | None = None,
    ) -> RunOut:
        """Start a run (the experiment is created if it does not exist)."""
        body = _create_body(run_id, name, tags, note, provenance)
        return self._create(project, experiment, body)

    def _create(self, project: str, experiment: str, body: dict[str, Any]) -> RunOut:
        return self._client._model(
            RunOut, "POST", f"{API}/projects/{project}/experiments/{experiment}/runs", json=body
        )

    def get(self, project: str, run: str) -> RunOut:
        """``run`` is an id or a unique prefix of one (at least 8 characters)."""
        return self._client._model(RunOut, "GET", self._url(project, run))

    def search(
        self,
        project: str,
        experiments: str | Sequence[str] | None = None,
        *,
        filter: str = "",
        order_by: Sequence[str] | None = None,
        page_size: int = 100,
        cursor: str | None = None,
        include_deleted: bool = False,
    ) -> RunList:
        """One page of runs matching ``filter`` (see docs/tracking.md), ordered by
        ``order_by`` (e.g. ``["metrics.auc desc"]``); pass ``cursor=page.next_cursor``
        for the next page."""
        names = [experiments] if isinstance(experiments, str) else list(experiments or [])
        page = self._client.request(
            "POST",
            f"{API}/projects/{project}/runs:search",
            json={
                "experiments": names,
                "filter": filter,
                "order_by": list(order_by or []),
                "page_size": page_size,
                "cursor": cursor,
                "include_deleted": include_deleted,
            },
        ).json()
        found = RunList(RunOut.model_validate(item) for item in page["items"])
        found.next_cursor = page.get("next_cursor")
        return found

    def list(
        self,
        project: str,
        experiments: str | Sequence[str] | None = None,
        *,
        filter: str = "",
        order_by: Sequence[str] | None = None,
        include_deleted: bool = False,
        page_size: int = 1000,
    ) -> RunList:
        """Every matching run, fetching page after page."""
        everything = RunList()
        cursor = None
        while True:
            page = self.search(
                project,
                experiments,
                filter=filter,
                order_by=order_by,
                page_size=page_size,
                cursor=cursor,
                include_deleted=include_deleted,
            )
            everything.extend(page)
            cursor = page.next_cursor
            if cursor is None:
                return everything

    def update(
        self, project: str, run: str, *, name: str | None = None, note: str | None = None
    ) -> RunOut:
        body = {k: v for k, v in {"name": name, "note": note}.items() if v is not None}
        return self._client._model(RunOut, "PATCH", self._url(project, run), json=body)

    def end(self, project: str, run: str, status: str = "finished") -> RunOut:
        return self._client._model(
            RunOut, "PATCH", self._url(project, run), json={"status": status}
        )

    def delete(self, project: str, run: str) -> RunOut:
        return self._client._model(RunOut, "DELETE", self._url(project, run))

    def restore(self, project: str, run: str) -> RunOut:
        return self._client._model(RunOut, "POST", self._url(project, run) + ":restore")

    def log(self, project: str, run: str, batch: LogBatch) -> LogResult:
        """Send one batch (Arrow IPC, zstd) and wait until it is applied."""
        from ghaf.tracking import batches

        return self.log_encoded(project, run, batches.encode(batch))

    def log_encoded(self, project: str, run: str, body: bytes) -> LogResult:
        """Send one batch already in its Arrow IPC form (a spooled one, say)."""
        from ghaf.tracking import batches

        return self._client._model(
            LogResult,
            "POST",
            self._url(project, run) + ":log",
            content=body,
            headers={"Content-Type": batches.MEDIA_TYPE},
        )

    def history(self, project: str, run: str, keys: str | Sequence[str] | None = None) -> Any:
        """Metric history as a pandas DataFrame (key, step, value, timestamp), or a
        pyarrow Table when pandas is not installed."""
        wanted = [keys] if isinstance(keys, str) else builtins.list(keys or [])
        found = self._client._model(
            MetricHistory, "GET", self._url(project, run) + "/metrics", params={"key": wanted}
        )
        import pyarrow as pa

        table = pa.table(
            {
                "key": found.key,
                "step": pa.array(found.step, pa.int64()),
                "value": pa.array(found.value, pa.float64()),
                "timestamp": pa.array(found.timestamp, pa.int64()),
            }
        )
        try:
            import pandas  # noqa: F401
        except ImportError:
            return table
        return table.to_pandas()

    def compare(self, project: str, runs: Iterable[str]) -> Comparison:
        return Comparison.of([self.get(project, run) for run in runs])

    def log_artifact(
        self, project: str, run: str, source: str | Path | bytes, *, path: str | None = None
    ) -> RunArtifactOut:
        """Upload a file (or bytes, which need ``path``) as the run's artifact ``path``
        (default: the file's name). Stored encrypted; content the project holds is not
        sent again."""
        if isinstance(source, bytes) and path is None:
            raise InvalidInput("path is required when logging bytes", field="path")
        digest, size = self._client.artifacts.put_blob(project, source)
        target = path or Path(str(source)).name
        return self._client._model(
            RunArtifactOut,
            "POST",
            self._url(project, run) + "/artifacts",
            json={"path": target, "sha256": digest, "size": size},
        )

    def artifacts(
        self, project: str, run: str, *, page_size: int = 1000
    ) -> builtins.list[RunArtifactOut]:
        """Every artifact of the run, by path."""
        return builtins.list(
            self._client._paged(
                RunArtifactOut, self._url(project, run) + "/artifacts", page_size=page_size
            )
        )

    def download_artifact(self, project: str, run: str, path: str, destination: str | Path) -> Path:
        """Download an artifact to ``destination`` (a file, or a folder to put it in),
        checking its SHA-256 before it is moved into place."""
        found = {a.path: a for a in self.artifacts(project, run)}
        if path not in found:
            raise NotFound(f"run {run} has no artifact {path!r}", field="path")
        target = download_target(destination, path.rsplit("/", 1)[-1], what="run artifact")
        found_sha = found[path].sha256
        write_verified(
            self._client.artifacts.blob_pieces(project, found_sha), target, found_sha, name=path
        )
        return target

    def log_input(
        self, project: str, run: str, dataset: str, version: int | str = "latest"
    ) -> RunOut:
        return self._client._model(
            RunOut,
            "POST",
            self._url(project, run) + "/inputs",
            json={"dataset": dataset, "version": version},
        )

    def sync(self) -> SyncReport:
        """Send every spooled run log (see :mod:`ghaf.client.spool`) to this server."""
        report = SyncReport()
        for path in spool.pending():
            run_id = path.stem
            try:
                report.points += self.replay(spool.Spool(run_id))
                report.sent.append(run_id)
            except GhafError as exc:
                report.failed[run_id] = str(exc)
        return report

    def replay(self, run_spool: spool.Spool) -> int:
        """Send one run's spooled records in order; the file is removed once all are
        applied. Returns the number of metric points sent."""
        points = 0
        with run_spool.draining() as records:
            target: dict[str, Any] = {}
            for record in records:
                if record.kind == spool.CREATE:
                    target = record.json()
                    if target.get("url") not in (None, self._client.url):
                        raise InvalidInput(
                            f"spooled run belongs to {target['url']}, not {self._client.url}"
                        )
                    self._create(target["project"], target["experiment"], target["body"])
                    continue
                if not target:
                    raise IntegrityFailure(f"spool file {run_spool.path} has no run record")
                project, run_id = target["project"], target["body"]["id"]
                if record.kind == spool.BATCH:
                    points += self.log_encoded(project, run_id, record.payload).points
                elif record.kind == spool.FILE:
                    entry = record.json()
                    local = Path(entry["local"])
                    if not local.is_file() or file_sha256(local) != entry["sha256"]:
                        raise IntegrityFailure(
                            f"artifact {entry['path']!r} of run {run_id} was logged from "
                            f"{local}, which is gone or has changed since"
                        )
                    self.log_artifact(project, run_id, local, path=entry["path"])
                elif record.kind == spool.INPUT:
                    entry = record.json()
                    self.log_input(project, run_id, entry["dataset"], entry["version"])
        return points


@dataclass
class SyncReport:
    sent: builtins.list[str] = field(default_factory=builtins.list)
    failed: dict[str, str] = field(default_factory=dict)
    points: int = 0


def _create_body(
    run_id: str | None,
    name: str | None,
    tags: Mapping[str, str] | None,
    note: str,
    provenance: Mapping[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"note": note, "tags": dict(tags or {})}
    if run_id is not None:
        body["id"] = run_id
    if name is not None:
        body["name"] = name
    if provenance is not None:
        body["provenance"] = dict(provenance)
    return body
