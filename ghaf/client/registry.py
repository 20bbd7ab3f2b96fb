"""SDK for the model registry: ``client.models``.

Wherever a version is expected, give a number, ``latest``, an alias, or write the model
as ``name@alias`` and leave the version out.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ghaf.client.files import download_target, write_verified
from ghaf.core.errors import InvalidInput, PermissionDenied
from ghaf.core.paging import Page
from ghaf.registry.cards import ModelCard
from ghaf.registry.schemas import (
    AliasOut,
    CardOut,
    GateReport,
    LineageOut,
    ModelOut,
    PolicyOut,
    ReviewOut,
    VersionOut,
)

if TYPE_CHECKING:
    from ghaf.client.client import Client

API = "/api/v1"


def split(name: str, version: int | str | None) -> tuple[str, str]:
    """(model, version reference) from ``churn@champion`` or ``churn`` + a version."""
    model, at, alias = name.partition("@")
    if at:
        if version is not None:
            raise InvalidInput(f"give {name!r} or a version, not both", field="version")
        return model, f"@{alias}"
    return model, "latest" if version is None else str(version)


def _signature(specs: Any) -> list[dict[str, Any]] | None:
    if specs is None:
        return None
    return [dict(spec) for spec in specs]


class Models:
    """Registered models, their versions, aliases, reviews, cards, lineage and gates."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _url(self, project: str, model: str = "", version: str | None = None) -> str:
        url = f"{API}/projects/{quote(project, safe='')}/models"
        if model:
            url += f"/{quote(model, safe='')}"
        if version is not None:
            url += f"/versions/{quote(version, safe='@')}"
        return url

    # --- models ---------------------------------------------------------------------

    def create(self, project: str, name: str, *, description: str = "") -> ModelOut:
        return self._client._model(
            ModelOut, "POST", self._url(project), json={"name": name, "description": description}
        )

    def get(self, project: str, name: str) -> ModelOut:
        return self._client._model(ModelOut, "GET", self._url(project, name))

    def list(self, project: str, *, page_size: int = 100) -> builtins.list[ModelOut]:
        """Every model of the project, ``page_size`` per request."""
        return builtins.list(self._client._paged(ModelOut, self._url(project), page_size=page_size))

    def page(
        self, project: str, *, page_size: int = 100, cursor: str | None = None
    ) -> Page[ModelOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(ModelOut, self._url(project), page_size=page_size, cursor=cursor)

    def delete(self, project: str, name: str) -> None:
        self._client.request("DELETE", self._url(project, name))

    # --- versions -------------------------------------------------------------------

    def register(
        self,
        project: str,
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
    ) -> VersionOut:
        """Register a new version of ``name`` (created if new) from a local file
        (``path``) or a run's artifact (``run``, ``artifact``); with both, the file is
        registered and the run linked for lineage.

        ``sample`` is a few rows of real input (an array, a mapping of named arrays, or a
        DataFrame): the server loads the model in a child process and predicts it. From a
        run, autolog's ``model/sample.npz`` is used when no sample is given. Pickle files
        are refused unless the project's policy allows scanned pickles.

        ``inputs`` and ``outputs`` declare the signature, a list of ``{"name", "dtype",
        "shape"}`` entries (otherwise the file's own, or the sample's); an input entry may
        add ``"allow_nan": True`` so that serving accepts NaN and infinities in it.
        """
        body: dict[str, Any] = {
            "description": description,
            "tags": dict(tags or {}),
            "convert_onnx": convert_onnx,
            "inputs": _signature(inputs),
            "outputs": _signature(outputs),
        }
        if path is not None:
            digest, size = self._client.artifacts.put_blob(project, Path(path))
            body["file"] = {"sha256": digest, "size": size, "filename": Path(path).name}
            if run is not None:
                body["link_run"] = run
        elif run is not None:
            body["run"] = {"run": run, "artifact": artifact}
        else:
            raise InvalidInput("give path (a model file) or run (a run id)", field="path")
        if sample is not None:
            from ghaf.registry import tensors  # numpy: only for a sample

            body["sample"] = tensors.to_wire(tensors.from_user(sample))
        if card is not None:
            body["card"] = card.model_dump() if isinstance(card, ModelCard) else dict(card)
        return self._client._model(
            VersionOut, "POST", self._url(project, name) + "/versions", json=body
        )

    def versions(
        self, project: str, name: str, *, page_size: int = 100
    ) -> builtins.list[VersionOut]:
        """Every version, newest first, ``page_size`` per request."""
        return builtins.list(
            self._client._paged(
                VersionOut, self._url(project, name) + "/versions", page_size=page_size
            )
        )

    def versions_page(
        self, project: str, name: str, *, page_size: int = 100, cursor: str | None = None
    ) -> Page[VersionOut]:
        """One page of :meth:`versions`; pass its ``next_cursor`` back as ``cursor``."""
        url = self._url(project, name) + "/versions"
        return self._client._page(VersionOut, url, page_size=page_size, cursor=cursor)

    def version(self, project: str, name: str, version: int | str | None = None) -> VersionOut:
        """``version(p, "churn@champion")``, ``version(p, "churn", 3)`` or ``"latest"``."""
        model, ref = split(name, version)
        return self._client._model(VersionOut, "GET", self._url(project, model, ref))

    def update(
        self,
        project: str,
        name: str,
        version: int | str | None = None,
        *,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        archive: bool = False,
    ) -> VersionOut:
        model, ref = split(name, version)
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if tags is not None:
            body["tags"] = dict(tags)
        if archive:
            body["status"] = "archived"
        return self._client._model(VersionOut, "PATCH", self._url(project, model, ref), json=body)

    def download(
        self,
        project: str,
        name: str,
        version: int | str | None = None,
        *,
        destination: str | Path = ".",
        onnx: bool = False,
        bundle: bool = False,
    ) -> Path:
        """Download the model file (or its ONNX conversion), checking its SHA-256.

        With ``bundle=True``, ``destination`` is a new or empty folder that receives a
        self-describing bundle (the file, its signature and SHA-256, the version's
        metadata and card, and a ``manifest.json``) which ``ghaf serve --bundle`` serves
        with no platform reachable; the folder is returned.
        """
        if bundle:
            if onnx:
                raise InvalidInput(
                    "a bundle holds the registered file; bundle the ONNX conversion by "
                    "registering it as a version of its own",
                    field="onnx",
                )
            return self._bundle(project, name, version, Path(destination))
        found = self.version(project, name, version)
        if onnx and found.onnx is None:
            raise InvalidInput(
                f"version {found.version} of {found.model!r} has no ONNX conversion", field="onnx"
            )
        sha256 = found.onnx.sha256 if onnx and found.onnx else found.sha256
        filename = Path(found.filename).stem + ".onnx" if onnx else found.filename
        target = download_target(destination, filename, what="model file")
        url = self._url(project, found.model, str(found.version)) + "/file"
        write_verified(
            self._pieces(url, onnx), target, sha256, name=f"{found.model} v{found.version}"
        )
        return target

    def _bundle(self, project: str, name: str, version: int | str | None, folder: Path) -> Path:
        from ghaf.serving import bundle  # numpy, skops: only for a bundle

        found = self.version(project, name, version)  # one version, whatever moves later
        card = self.card(project, found.model, found.version)
        try:
            policy_types = self.policy(project).policy.get("trusted_types", ())
        except PermissionDenied:  # then only the built-in safe types will load
            policy_types = ()
        url = self._url(project, found.model, str(found.version)) + "/file"
        return bundle.write_bundle(
            folder,
            found,
            self._pieces(url, False),
            card_markdown=card.markdown,
            policy_types=policy_types,
            source=str(self._client.url),
        )

    def _pieces(self, url: str, onnx: bool) -> Iterator[bytes]:
        with self._client.streaming("GET", url, params={"onnx": onnx}) as response:
            yield from response.iter_bytes(1 << 20)

    # --- aliases --------------------------------------------------------------------

    def set_alias(self, project: str, name: str, alias: str, version: int) -> AliasOut:
        """Point ``alias`` at ``version`` (protected aliases need approval and gates)."""
        return self._client._model(
            AliasOut,
            "PUT",
            self._url(project, name) + f"/aliases/{quote(alias, safe='')}",
            json={"version": int(version)},
        )

    def delete_alias(self, project: str, name: str, alias: str) -> None:
        self._client.request(
            "DELETE", self._url(project, name) + f"/aliases/{quote(alias, safe='')}"
        )

    # --- reviews --------------------------------------------------------------------

    def _review(
        self, action: str, project: str, name: str, version: int | str | None, comment: str
    ) -> VersionOut:
        model, ref = split(name, version)
        return self._client._model(
            VersionOut,
            "POST",
            self._url(project, model, ref) + f":{action}",
            json={"comment": comment},
        )

    def request_approval(
        self, project: str, name: str, version: int | str | None = None, *, comment: str = ""
    ) -> VersionOut:
        return self._review("request-approval", project, name, version, comment)

    def approve(
        self, project: str, name: str, version: int | str | None = None, *, comment: str = ""
    ) -> VersionOut:
        """Approve as this principal (needs model:approve; not your own version)."""
        return self._review("approve", project, name, version, comment)

    def reject(
        self, project: str, name: str, version: int | str | None = None, *, comment: str
    ) -> VersionOut:
        return self._review("reject", project, name, version, comment)

    def reviews(
        self, project: str, name: str, version: int | str | None = None, *, page_size: int = 100
    ) -> builtins.list[ReviewOut]:
        """Every review of the version (requests, approvals, rejections), oldest first."""
        model, ref = split(name, version)
        url = self._url(project, model, ref) + "/reviews"
        return builtins.list(self._client._paged(ReviewOut, url, page_size=page_size))

    # --- cards, lineage, gates, policy ----------------------------------------------

    def card(self, project: str, name: str, version: int | str | None = None) -> CardOut:
        model, ref = split(name, version)
        return self._client._model(CardOut, "GET", self._url(project, model, ref) + "/card")

    def update_card(
        self, project: str, name: str, version: int | str | None = None, **fields: Any
    ) -> CardOut:
        """Set card fields: intended_use, limitations, training_data (``dataset@3``),
        evaluation, ethical_considerations, fairness, owners."""
        model, ref = split(name, version)
        return self._client._model(
            CardOut, "PATCH", self._url(project, model, ref) + "/card", json=fields
        )

    def lineage(self, project: str, name: str, version: int | str | None = None) -> LineageOut:
        model, ref = split(name, version)
        return self._client._model(LineageOut, "GET", self._url(project, model, ref) + "/lineage")

    def check_gates(self, project: str, name: str, version: int | str | None = None) -> GateReport:
        """Measure every quality gate of the project's policy on this version."""
        model, ref = split(name, version)
        return self._client._model(
            GateReport, "POST", self._url(project, model, ref) + "/gates:check"
        )

    def policy(self, project: str) -> PolicyOut:
        """The project's registry policy (its YAML text and what it means)."""
        return self._client._model(PolicyOut, "GET", self._policy_url(project))

    def set_policy(self, project: str, text: str) -> PolicyOut:
        """Replace the registry policy with this YAML (needs policy:write)."""
        return self._client._model(PolicyOut, "PUT", self._policy_url(project), json={"text": text})

    @staticmethod
    def _policy_url(project: str) -> str:
        return f"{API}/projects/{quote(project, safe='')}/model-policy"
