"""``ghaf.runs`` and ``ghaf.models``: module-level tracking and registry calls with the
stored login (or GHAF_URL and GHAF_TOKEN) and ``project=`` or ``$GHAF_PROJECT``, for notebooks
and scripts.

Each method takes the same arguments, in the same order and with the same defaults, as
the client method it wraps, except that ``project`` moves to a keyword at the end
(tests/registry/test_shortcuts.py holds them to it).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ghaf.client.active_run import default_project
from ghaf.client.client import Client
from ghaf.client.tracking import Comparison, RunList
from ghaf.registry.cards import ModelCard
from ghaf.registry.schemas import AliasOut, GateReport, ModelOut, VersionOut
from ghaf.tracking.schemas import RunOut


class RunsShortcut:
    """The :class:`ghaf.client.tracking.Runs` calls without a client in hand."""

    def search(
        self,
        experiments: str | Sequence[str] | None = None,
        *,
        filter: str = "",
        order_by: Sequence[str] | None = None,
        page_size: int = 100,
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
                page_size=page_size,
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


class ModelsShortcut:
    """The :class:`ghaf.client.registry.Models` calls without a client in hand."""

    def register(
        self,
        name: str,
        *,
        path: str | Path | None = None,
        run: str | None = None,
        artifact: str = "model/model.skops",
        sample: Any = None,
        inputs: Any = None,
        outputs: Any = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        card: ModelCard | Mapping[str, Any] | None = None,
        convert_onnx: bool = False,
        project: str | None = None,
    ) -> VersionOut:
        """See :meth:`ghaf.client.registry.Models.register`."""
        with Client() as client:
            return client.models.register(
                default_project(project),
                name,
                path=path,
                run=run,
                artifact=artifact,
                sample=sample,
                inputs=inputs,
                outputs=outputs,
                description=description,
                tags=tags,
                card=card,
                convert_onnx=convert_onnx,
            )

    def get(self, name: str, *, project: str | None = None) -> ModelOut:
        with Client() as client:
            return client.models.get(default_project(project), name)

    def list(self, *, page_size: int = 100, project: str | None = None) -> builtins.list[ModelOut]:
        with Client() as client:
            return client.models.list(default_project(project), page_size=page_size)

    def versions(
        self, name: str, *, page_size: int = 100, project: str | None = None
    ) -> builtins.list[VersionOut]:
        with Client() as client:
            return client.models.versions(default_project(project), name, page_size=page_size)

    def version(
        self, name: str, version: int | str | None = None, *, project: str | None = None
    ) -> VersionOut:
        """``version("churn@champion")`` or ``version("churn", 3)``."""
        with Client() as client:
            return client.models.version(default_project(project), name, version)

    def set_alias(
        self, name: str, alias: str, version: int, *, project: str | None = None
    ) -> AliasOut:
        with Client() as client:
            return client.models.set_alias(default_project(project), name, alias, version)

    def approve(
        self,
        name: str,
        version: int | str | None = None,
        *,
        comment: str = "",
        project: str | None = None,
    ) -> VersionOut:
        with Client() as client:
            return client.models.approve(default_project(project), name, version, comment=comment)

    def check_gates(
        self, name: str, version: int | str | None = None, *, project: str | None = None
    ) -> GateReport:
        with Client() as client:
            return client.models.check_gates(default_project(project), name, version)

    def download(
        self,
        name: str,
        version: int | str | None = None,
        *,
        destination: str | Path = ".",
        onnx: bool = False,
        bundle: bool = False,
        project: str | None = None,
    ) -> Path:
        with Client() as client:
            return client.models.download(
                default_project(project),
                name,
                version,
                destination=destination,
                onnx=onnx,
                bundle=bundle,
            )


models = ModelsShortcut()
