"""SDK for deployments: ``client.deployments``.

A variant is a dict (or :class:`~ghaf.deployments.schemas.VariantSpec`) such as
``{"name": "champion", "model": "churn", "version": "@champion", "weight": 50}``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import BaseModel

from ghaf.core.paging import Page
from ghaf.deployments.schemas import (
    AbTestReport,
    DeploymentOut,
    OutcomesResult,
    RevisionOut,
    RolloutOut,
    RolloutStep,
    VariantSpec,
)

if TYPE_CHECKING:
    from ghaf.client.client import Client

API = "/api/v1"
Variant = Mapping[str, Any] | VariantSpec


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else dict(value)


@dataclass(frozen=True)
class Answered:
    """A deployment's answer: the predictions, the variant that gave them, the id to
    post the request's outcome under (only this answer carries it), and the request id
    (for tracing, in the server's log)."""

    predictions: Any
    variant: str
    outcome_id: str
    request_id: str


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
        abtest: Mapping[str, Any] | None = None,
        description: str = "",
        reason: str = "",
    ) -> DeploymentOut:
        """A new deployment at revision 1; ``sticky`` is ``{"header": ...}`` or
        ``{"field": ...}``; ``abtest`` is ``{"kind": "binary", "control": NAME}``
        (``alpha``, ``higher_is_better`` optional)."""
        body = {
            "name": name,
            "variants": [_plain(v) for v in variants],
            "production": production,
            "sticky": dict(sticky) if sticky is not None else None,
            "host": host,
            "abtest": dict(abtest) if abtest is not None else None,
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
        abtest: Mapping[str, Any] | None = None,
        clear_abtest: bool = False,
        description: str | None = None,
        reason: str = "",
    ) -> DeploymentOut:
        """A new revision with these changes; what is left out stays as it is."""
        body: dict[str, Any] = {
            "reason": reason,
            "clear_sticky": clear_sticky,
            "clear_abtest": clear_abtest,
        }
        if variants is not None:
            body["variants"] = [_plain(v) for v in variants]
        for key, value in (
            ("production", production),
            ("sticky", dict(sticky) if sticky is not None else None),
            ("host", host),
            ("abtest", dict(abtest) if abtest is not None else None),
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

    def metrics(self, project: str) -> str:
        """The project's deployments as Prometheus text (by deployment and variant), as
        the server answering counted them."""
        return self._client.request("GET", self._url(project) + ":metrics").text

    # --- canary rollouts ------------------------------------------------------------

    def start_rollout(
        self,
        project: str,
        name: str,
        canary: Variant,
        *,
        stable: str | None = None,
        steps: Sequence[Mapping[str, Any] | RolloutStep] | None = None,
        max_failure_rate_increase: float | None = None,
        max_p99_increase: float | None = None,
        p99_slack_ms: float | None = None,
        reason: str = "",
    ) -> RolloutOut:
        """Roll ``canary`` (a variant) out in place of ``stable`` (default: the only live
        variant), through ``steps`` (default 5, 25, 50, 100% of its traffic, each held a
        minute and 100 canary answers), rolling back on its own when the canary fails or
        slows past the margins."""
        body: dict[str, Any] = {"canary": _plain(canary), "reason": reason}
        options = {
            "stable": stable,
            "max_failure_rate_increase": max_failure_rate_increase,
            "max_p99_increase": max_p99_increase,
            "p99_slack_ms": p99_slack_ms,
        }
        body.update({k: v for k, v in options.items() if v is not None})
        if steps is not None:
            body["steps"] = [_plain(step) for step in steps]
        return self._client._model(
            RolloutOut, "POST", self._url(project, name, "/rollout"), json=body
        )

    def get_rollout(self, project: str, name: str) -> RolloutOut:
        """The running rollout, or how the last one ended, with its evidence."""
        return self._client._model(RolloutOut, "GET", self._url(project, name, "/rollout"))

    def abort_rollout(self, project: str, name: str, *, reason: str = "") -> RolloutOut:
        """Stop the running rollout: the canary goes, the stable gets its share back."""
        return self._client._model(
            RolloutOut,
            "POST",
            self._url(project, name, "/rollout:abort"),
            json={"reason": reason},
        )

    # --- calling -------------------------------------------------------------------

    def predict(
        self,
        project: str,
        name: str,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Answered:
        """``body`` (records, columns or a 2-D list, as the serving runtime's
        ``/predict`` takes) through the deployment. ``headers`` may carry the sticky key
        (the header the spec names) or ``x-ghaf-variant`` (with deployment:debug)."""
        response = self._client.request(
            "POST", self._url(project, name, "/predict"), json=body, headers=dict(headers or {})
        )
        return Answered(
            predictions=response.json(),
            variant=response.headers.get("x-ghaf-variant", ""),
            outcome_id=response.headers.get("x-ghaf-outcome-id", ""),
            request_id=response.headers.get("x-request-id", ""),
        )

    # --- A/B tests ------------------------------------------------------------------

    def post_outcomes(
        self, project: str, name: str, outcomes: Mapping[str, float] | Sequence[tuple[str, float]]
    ) -> OutcomesResult:
        """Outcomes by the ``outcome_id`` of each answer (its ``x-ghaf-outcome-id``):
        1/0 for a conversion, or a numeric reward. Sent 10,000 per request."""
        pairs = list(outcomes.items()) if isinstance(outcomes, Mapping) else list(outcomes)
        counts = {"recorded": 0, "unknown": 0, "duplicate": 0, "shadow": 0}
        for start in range(0, len(pairs), 10_000):
            part = self._client._model(
                OutcomesResult,
                "POST",
                self._url(project, name, "/outcomes"),
                json={
                    "items": [
                        {"request_id": r, "value": v} for r, v in pairs[start : start + 10_000]
                    ]
                },
            )
            for key in counts:
                counts[key] += getattr(part, key)
        return OutcomesResult(**counts)

    def upload_outcomes(self, project: str, name: str, path: str | Path) -> OutcomesResult:
        """A Parquet file with ``request_id`` and ``value`` columns."""
        return self._client._model(
            OutcomesResult,
            "POST",
            self._url(project, name, "/outcomes:upload"),
            content=Path(path).read_bytes(),
            headers={"content-type": "application/octet-stream"},
        )

    def abtest_report(self, project: str, name: str) -> AbTestReport:
        return self._client._model(AbTestReport, "GET", self._url(project, name, "/abtest"))

    def promote(self, project: str, name: str, *, reason: str = "") -> DeploymentOut:
        """Give the A/B test's winner all live traffic, as a new revision."""
        return self._client._model(
            DeploymentOut,
            "POST",
            self._url(project, name, "/abtest:promote"),
            json={"reason": reason},
        )
