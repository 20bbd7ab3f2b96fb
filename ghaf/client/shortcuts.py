"""``ghaf.runs``: module-level tracking calls with the stored login (or GHAF_URL and
GHAF_TOKEN) and ``project=`` or ``$GHAF_PROJECT``, for notebooks and scripts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ghaf.client.active_run import default_project
from ghaf.client.client import Client
from ghaf.client.tracking import Comparison, RunList
from ghaf.tracking.schemas import RunOut


class RunsShortcut:
    """The :class:`ghaf.client.tracking.Runs` calls without a client in hand."""

    def search(
        self,
        experiments: str | Sequence[str] | None = None,
        *,
        filter: str = "",
        order_by: Sequence[str] | None = None,
        max_results: int = 100,
        cursor: str | None = None,
        include_deleted: bool = False,
        project: str | None = None,
    ) -> RunList:
        with Client() as client:
            return client.runs.search(
                default_project(project),
                experiments,
                filter=filter,
                order_by=order_by,
                max_results=max_results,
                cursor=cursor,
                include_deleted=include_deleted,
            )

    def get(self, run: str, *, project: str | None = None) -> RunOut:
        with Client() as client:
            return client.runs.get(default_project(project), run)

    def history(
        self, run: str, keys: str | Sequence[str] | None = None, *, project: str | None = None
    ) -> Any:
        with Client() as client:
            return client.runs.history(default_project(project), run, keys)

    def compare(self, runs: Iterable[str], *, project: str | None = None) -> Comparison:
        with Client() as client:
            return client.runs.compare(default_project(project), runs)


runs = RunsShortcut()
