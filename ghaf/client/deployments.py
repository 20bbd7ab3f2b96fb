"""SDK for deployments: ``client.deployments``.

A variant is a dict (or :class:`~ghaf.deployments.schemas.VariantSpec`) such as
``{"name": "champion", "model": "churn", "version": "@champion", "weight": 50}``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import BaseModel

from ghaf.core.paging import Page
from ghaf.deployments.schemas import DeploymentOut, RevisionOut, VariantSpec

if TYPE_CHECKING:
    from ghaf.client.client import Client

API = "/api/v1"
Variant = Mapping[str, Any] | VariantSpec


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)


class Deployments:
    """Named endpoints serving model variants; every change is a numbered revision."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _url(self, project: str, name: str = "", suffix: str = "") -> str:
        url = f"{API}/projects/{quote(project, safe='')}/deployments"
        if name:
            url += f"/{quote(name, safe='')}"
        return url + suffix

    def create(
        self,
        project: str,
        name: str,
        *,
        variants: Sequence[Variant],
        production: bool = False,
        sticky: Mapping[str, str] | None = None,
        host: str = "embedded",
        description: str = "",
        reason: str = "",
    ) -> DeploymentOut:
        """A new deployment at revision 1; ``sticky`` is ``{"header": ...}`` or
        ``{"field": ...}``."""
        body = {
            "name": name,
            "variants": [_plain(v) for v in variants],
            "production": production,
            "sticky": dict(sticky) if sticky is not None else None,
            "host": host,
            "description": description,
            "reason": reason,
        }
        return self._client._model(DeploymentOut, "POST", self._url(project), json=body)

    def get(self, project: str, name: str) -> DeploymentOut:
        return self._client._model(DeploymentOut, "GET", self._url(project, name))

    def list(self, project: str, *, page_size: int = 100) -> builtins.list[DeploymentOut]:
        """Every deployment of the project, ``page_size`` per request."""
        return builtins.list(
            self._client._paged(DeploymentOut, self._url(project), page_size=page_size)
        )

    def page(
        self, project: str, *, page_size: int = 100, cursor: str | None = None
    ) -> Page[DeploymentOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(
            DeploymentOut, self._url(project), page_size=page_size, cursor=cursor
        )

    def update(
        self,
        project: str,
        name: str,
        *,
        variants: Sequence[Variant] | None = None,
        production: bool | None = None,
        sticky: Mapping[str, str] | None = None,
        clear_sticky: bool = False,
        host: str | None = None,
        description: str | None = None,
        reason: str = "",
    ) -> DeploymentOut:
        """A new revision with these changes; what is left out stays as it is."""
        body: dict[str, Any] = {"reason": reason, "clear_sticky": clear_sticky}
        if variants is not None:
            body["variants"] = [_plain(v) for v in variants]
        for key, value in (
            ("production", production),
            ("sticky", dict(sticky) if sticky is not None else None),
            ("host", host),
            ("description", description),
        ):
            if value is not None:
                body[key] = value
        return self._client._model(DeploymentOut, "PATCH", self._url(project, name), json=body)

    def delete(self, project: str, name: str) -> None:
        self._client.request("DELETE", self._url(project, name))

    def revisions(
        self, project: str, name: str, *, page_size: int = 100
    ) -> builtins.list[RevisionOut]:
        """The deployment's history, newest first."""
        return builtins.list(
            self._client._paged(
                RevisionOut, self._url(project, name, "/revisions"), page_size=page_size
            )
        )

    def revisions_page(
        self, project: str, name: str, *, page_size: int = 100, cursor: str | None = None
    ) -> Page[RevisionOut]:
        return self._client._page(
            RevisionOut,
            self._url(project, name, "/revisions"),
            page_size=page_size,
            cursor=cursor,
        )

    def revision(self, project: str, name: str, revision: int) -> RevisionOut:
        return self._client._model(
            RevisionOut, "GET", self._url(project, name, f"/revisions/{int(revision)}")
        )

    def rollback(
        self, project: str, name: str, revision: int, *, reason: str = ""
    ) -> DeploymentOut:
        """Return to ``revision``'s spec and versions, as a new revision."""
        return self._client._model(
            DeploymentOut,
            "POST",
            self._url(project, name, ":rollback"),
            json={"revision": revision, "reason": reason},
        )
