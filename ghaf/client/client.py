"""``ghaf.Client``: the same operations as the REST API, with typed results."""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from ghaf.client import credentials
from ghaf.client.datasets import Datasets
from ghaf.client.deployments import Deployments
from ghaf.client.files import (
    CHUNK,
    LocalFile,
    Progress,
    download_target,
    file_sha256,
    pack_body,
    read_file,
    write_verified,
)
from ghaf.client.registry import Models
from ghaf.client.tracking import Experiments, Runs
from ghaf.core.errors import (
    GhafError,
    IntegrityFailure,
    InvalidInput,
    NotFound,
    Unavailable,
    error_from_problem,
)
from ghaf.core.paging import Page
from ghaf.projects.schemas import MemberOut, ProjectOut
from ghaf.security.audit.schemas import AuditEventOut, VerifyResult
from ghaf.security.schemas import GroupOut, PrincipalOut, TokenCreated, TokenOut, WhoAmI
from ghaf.storage import packs
from ghaf.storage.paths import normalise_path
from ghaf.storage.schemas import (
    ArtifactOut,
    KeysOut,
    PackOut,
    RotationResult,
    StorageVerifyResult,
)

if TYPE_CHECKING:
    # ghaf.tasks' package imports its scheduler (SQLAlchemy): loaded by Admin.tasks only.
    from ghaf.tasks.schemas import TaskOut

M = TypeVar("M", bound=BaseModel)
API = "/api/v1"


class Client:
    """A connection to a ghaf server.

    ``Client()`` uses GHAF_URL / GHAF_TOKEN or the login stored by ``ghaf login``;
    ``Client(url=..., token=...)`` uses those.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        verify: bool | str = True,
    ) -> None:
        creds = credentials.load(url=url, token=token)
        self.url = creds.url
        self._http = httpx.Client(
            base_url=creds.url,
            headers={"Authorization": f"Bearer {creds.token}", "User-Agent": "ghaf-sdk"},
            timeout=timeout,
            verify=verify,
        )
        self.projects = Projects(self)
        self.members = Members(self)
        self.service_accounts = ServiceAccounts(self)
        self.users = Users(self)
        self.groups = Groups(self)
        self.tokens = Tokens(self)
        self.audit = Audit(self)
        self.artifacts = Artifacts(self)
        self.keys = Keys(self)
        self.datasets = Datasets(self)
        self.experiments = Experiments(self)
        self.runs = Runs(self)
        self.models = Models(self)
        self.deployments = Deployments(self)
        self.admin = Admin(self)

    @staticmethod
    def login(url: str, name: str, password: str, *, timeout: float = 30.0) -> TokenCreated:
        """Exchange a user name and password for a token (no token needed)."""
        with httpx.Client(base_url=credentials.normalise_url(url), timeout=timeout) as http:
            response = _send(
                http, "POST", f"{API}/auth/login", json={"name": name, "password": password}
            )
        return _validated(TokenCreated, response)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; any problem response is raised as its typed ``GhafError``."""
        return _send(self._http, method, path, **kwargs)

    @contextmanager
    def streaming(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives; an error status is raised (as
        the typed error of its problem document) before the body is handed over."""
        started = False
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error(response)
                started = True
                yield response
        except httpx.TransportError as exc:
            if started:
                # The server aborts a body whose stored object fails its integrity
                # check part-way (after the headers); a dropped connection looks alike.
                raise IntegrityFailure(
                    f"the response from {self.url} was cut short ({exc}): the server "
                    "stopped sending, which it does when a stored object fails its "
                    "integrity check mid-stream, or the connection dropped; nothing "
                    "incomplete was kept"
                ) from None
            raise Unavailable(f"cannot reach the ghaf server at {self.url}: {exc}") from None

    def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return _validated(model, self.request(method, path, **kwargs))

    def _models(self, model: type[M], method: str, path: str, **kwargs: Any) -> list[M]:
        response = self.request(method, path, **kwargs)
        answer = _json(response)
        if not isinstance(answer, list):
            raise _not_ghaf(response, "a JSON list was expected")
        return [_validated(model, response, item) for item in answer]

    def _paged(
        self,
        model: type[M],
        path: str,
        params: dict[str, Any] | None = None,
        *,
        page_size: int = 100,
    ) -> Iterator[M]:
        """Every item of a list, following ``next_cursor`` page by page."""
        cursor: str | None = None
        while True:
            page = self._page(model, path, params, page_size=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def _page(
        self,
        model: type[M],
        path: str,
        params: dict[str, Any] | None = None,
        *,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> Page[M]:
        """One page of a list, for callers that page themselves (``ls --cursor``)."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        query.update(page_size=page_size, **({"cursor": cursor} if cursor else {}))
        response = self.request("GET", path, params=query)
        answer = _json(response)
        if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
            raise _not_ghaf(response, "a page of items was expected")
        return Page[model](  # type: ignore[valid-type]
            items=[_validated(model, response, i) for i in answer["items"]],
            next_cursor=answer.get("next_cursor"),
        )

    def whoami(self) -> WhoAmI:
        return self._model(WhoAmI, "GET", f"{API}/whoami")

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/readyz").json()
        return result

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _send(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        response = http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise Unavailable(f"cannot reach the ghaf server at {http.base_url}: {exc}") from None
    if response.status_code >= 400:
        raise _error(response)
    return response


_GHAF_PROBLEM = "urn:ghaf:problem:"


def _where(response: httpx.Response) -> str:
    request = response.request
    return f"{request.method} {request.url.copy_with(query=None)}"


def _root_of(response: httpx.Response) -> str:
    """The URL the request was sent under, less ghaf's own part of the path."""
    url = response.request.url
    path = url.path
    cut = path.find(API + "/")
    if cut < 0:
        cut = path.rfind("/")
    return str(url.copy_with(path=path[:cut] or "/", query=None)).rstrip("/")


def _not_ghaf(response: httpx.Response, why: str) -> InvalidInput:
    """The answer came from something that is not a ghaf server (or not this version):
    the URL is the likely mistake, so the message names it."""
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    return InvalidInput(
        f"{_where(response)} answered HTTP {response.status_code} ({kind}), not as a "
        f"ghaf server would ({why}): check that the server URL is the root of a ghaf "
        f"server, e.g. {_root_of(response)} (GHAF_URL, or `ghaf login --url`)",
        field="url",
    )


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise _not_ghaf(response, "the body is not JSON") from None


def _validated(model: type[M], response: httpx.Response, item: Any = None) -> M:
    """``item`` (by default the whole JSON body) as ``model``, or an error naming the URL
    when the answer has another shape (another service, another version)."""
    try:
        return model.model_validate(_json(response) if item is None else item)
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        message = errors[0]["msg"] if errors else "unexpected shape"
        raise _not_ghaf(response, f"{where or model.__name__}: {message}") from None


def _error(response: httpx.Response) -> GhafError:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict) or not str(problem.get("type", "")).startswith(_GHAF_PROBLEM):
        # Not a ghaf problem document: a proxy, another service or a web page answered.
        text = " ".join(response.text[:200].split())
        if response.status_code in (404, 405):
            return _not_ghaf(response, "no such route")
        status = response.status_code
        return error_from_problem(
            {
                "detail": f"{_where(response)} answered HTTP {status}, not as a ghaf "
                f"server would (a proxy in between, or the wrong URL?): {text or 'no body'}"
            },
            status=status,
        )
    if problem["type"] == f"{_GHAF_PROBLEM}http-404":
        # ghaf itself, but it has no such route: the URL has a path it should not have,
        # or the server is an older ghaf.
        extra = {"request_id": problem["request_id"]} if problem.get("request_id") else {}
        return NotFound(
            f"the ghaf server has no route {_where(response)}: the server URL should be its "
            f"root (e.g. {_root_of(response)}), or the server runs an older ghaf",
            field="url",
            **extra,
        )
    return error_from_problem(problem, status=response.status_code)


class _Resource:
    def __init__(self, client: Client) -> None:
        self._client = client


class Projects(_Resource):
    def create(
        self, name: str, *, description: str = "", allowed_regions: list[str] | None = None
    ) -> ProjectOut:
        body: dict[str, Any] = {"name": name, "description": description}
        if allowed_regions is not None:
            body["allowed_regions"] = allowed_regions
        return self._client._model(ProjectOut, "POST", f"{API}/projects", json=body)

    def get(self, name: str) -> ProjectOut:
        return self._client._model(ProjectOut, "GET", f"{API}/projects/{name}")

    def list(self, *, deleted: bool = False, page_size: int = 100) -> builtins.list[ProjectOut]:
        """Every project you can see (``deleted``: those awaiting purge)."""
        return list(
            self._client._paged(
                ProjectOut, f"{API}/projects", {"deleted": deleted or None}, page_size=page_size
            )
        )

    def page(
        self, *, deleted: bool = False, page_size: int = 100, cursor: str | None = None
    ) -> Page[ProjectOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(
            ProjectOut,
            f"{API}/projects",
            {"deleted": deleted or None},
            page_size=page_size,
            cursor=cursor,
        )

    def update(
        self,
        name: str,
        *,
        description: str | None = None,
        allowed_regions: builtins.list[str] | None = None,
    ) -> ProjectOut:
        """Change the description, or (owners) where the project's data may live."""
        body = {"description": description, "allowed_regions": allowed_regions}
        return self._client._model(
            ProjectOut,
            "PATCH",
            f"{API}/projects/{name}",
            json={k: v for k, v in body.items() if v is not None},
        )

    def delete(self, name: str) -> ProjectOut:
        return self._client._model(ProjectOut, "DELETE", f"{API}/projects/{name}")

    def restore(self, name: str) -> ProjectOut:
        return self._client._model(ProjectOut, "POST", f"{API}/projects/{name}:restore")

    def purge(self) -> builtins.list[str]:
        """Permanently remove deleted projects past their retention (platform admins)."""
        purged: builtins.list[str] = self._client.request("POST", f"{API}/projects:purge").json()[
            "purged"
        ]
        return purged


class Members(_Resource):
    """Role grants in a project. ``member`` is a principal name or ``group:NAME``."""

    def list(self, project: str, *, page_size: int = 100) -> builtins.list[MemberOut]:
        return list(
            self._client._paged(MemberOut, f"{API}/projects/{project}/members", page_size=page_size)
        )

    def page(
        self, project: str, *, page_size: int = 100, cursor: str | None = None
    ) -> Page[MemberOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(
            MemberOut, f"{API}/projects/{project}/members", page_size=page_size, cursor=cursor
        )

    def add(
        self, project: str, *, role: str, principal: str | None = None, group: str | None = None
    ) -> MemberOut:
        body = {"role": role, "principal": principal, "group": group}
        return self._client._model(
            MemberOut,
            "POST",
            f"{API}/projects/{project}/members",
            json={k: v for k, v in body.items() if v is not None},
        )

    def update(self, project: str, member: str, *, role: str) -> MemberOut:
        """Change ``member``'s role."""
        return self._client._model(
            MemberOut, "PATCH", f"{API}/projects/{project}/members/{member}", json={"role": role}
        )

    def remove(self, project: str, member: str) -> None:
        self._client.request("DELETE", f"{API}/projects/{project}/members/{member}")


class ServiceAccounts(_Resource):
    def create(self, project: str, name: str, *, role: str = "member") -> PrincipalOut:
        return self._client._model(
            PrincipalOut,
            "POST",
            f"{API}/projects/{project}/service-accounts",
            json={"name": name, "role": role},
        )

    def list(self, project: str, *, page_size: int = 100) -> builtins.list[PrincipalOut]:
        return list(
            self._client._paged(
                PrincipalOut, f"{API}/projects/{project}/service-accounts", page_size=page_size
            )
        )

    def page(
        self, project: str, *, page_size: int = 100, cursor: str | None = None
    ) -> Page[PrincipalOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(
            PrincipalOut,
            f"{API}/projects/{project}/service-accounts",
            page_size=page_size,
            cursor=cursor,
        )

    def delete(self, project: str, name: str) -> None:
        self._client.request("DELETE", f"{API}/projects/{project}/service-accounts/{name}")

    def create_token(
        self,
        project: str,
        name: str,
        *,
        token_name: str,
        read_only: bool = False,
        expires_in_days: float | None = None,
    ) -> TokenCreated:
        return self._client._model(
            TokenCreated,
            "POST",
            f"{API}/projects/{project}/service-accounts/{name}/tokens",
            json=_token_body(token_name, None, read_only, expires_in_days),
        )

    def list_tokens(
        self, project: str, name: str, *, page_size: int = 100
    ) -> builtins.list[TokenOut]:
        return list(
            self._client._paged(
                TokenOut,
                f"{API}/projects/{project}/service-accounts/{name}/tokens",
                page_size=page_size,
            )
        )

    def revoke_token(self, project: str, name: str, token_name: str) -> None:
        self._client.request(
            "DELETE", f"{API}/projects/{project}/service-accounts/{name}/tokens/{token_name}"
        )


def _token_body(
    name: str, project: str | None, read_only: bool, expires_in_days: float | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "read_only": read_only}
    if project is not None:
        body["project"] = project
    if expires_in_days is not None:
        body["expires_in_days"] = expires_in_days
    return body


class Users(_Resource):
    def create(
        self,
        name: str,
        *,
        password: str | None = None,
        email: str | None = None,
        platform_admin: bool = False,
    ) -> PrincipalOut:
        body = {
            "name": name,
            "password": password,
            "email": email,
            "platform_admin": platform_admin,
        }
        return self._client._model(
            PrincipalOut,
            "POST",
            f"{API}/users",
            json={k: v for k, v in body.items() if v is not None},
        )

    def get(self, name: str) -> PrincipalOut:
        return self._client._model(PrincipalOut, "GET", f"{API}/users/{name}")

    def list(self, *, page_size: int = 100) -> builtins.list[PrincipalOut]:
        """Every user, ``page_size`` per request."""
        return list(self._client._paged(PrincipalOut, f"{API}/users", page_size=page_size))

    def page(self, *, page_size: int = 100, cursor: str | None = None) -> Page[PrincipalOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(PrincipalOut, f"{API}/users", page_size=page_size, cursor=cursor)

    def delete(self, name: str) -> None:
        self._client.request("DELETE", f"{API}/users/{name}")

    def set_password(self, name: str, password: str) -> None:
        self._client.request("PUT", f"{API}/users/{name}/password", json={"password": password})

    def unlock(self, name: str) -> PrincipalOut:
        """Lift a login lockout after repeated failed logins (platform admins)."""
        return self._client._model(PrincipalOut, "POST", f"{API}/users/{name}:unlock")

    def create_token(
        self,
        name: str,
        *,
        token_name: str,
        project: str | None = None,
        read_only: bool = False,
        expires_in_days: float | None = None,
    ) -> TokenCreated:
        return self._client._model(
            TokenCreated,
            "POST",
            f"{API}/users/{name}/tokens",
            json=_token_body(token_name, project, read_only, expires_in_days),
        )


class GroupMembers(_Resource):
    """The members of groups (``client.groups.members``)."""

    def add(self, group: str, member: str) -> GroupOut:
        """Add a user or service account to ``group``."""
        return self._client._model(
            GroupOut, "POST", f"{API}/groups/{group}/members", json={"member": member}
        )

    def remove(self, group: str, member: str) -> GroupOut:
        return self._client._model(GroupOut, "DELETE", f"{API}/groups/{group}/members/{member}")


class Groups(_Resource):
    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.members = GroupMembers(client)

    def create(self, name: str, *, description: str = "") -> GroupOut:
        return self._client._model(
            GroupOut, "POST", f"{API}/groups", json={"name": name, "description": description}
        )

    def get(self, name: str) -> GroupOut:
        return self._client._model(GroupOut, "GET", f"{API}/groups/{name}")

    def list(self, *, page_size: int = 100) -> builtins.list[GroupOut]:
        """Every group, ``page_size`` per request."""
        return list(self._client._paged(GroupOut, f"{API}/groups", page_size=page_size))

    def page(self, *, page_size: int = 100, cursor: str | None = None) -> Page[GroupOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(GroupOut, f"{API}/groups", page_size=page_size, cursor=cursor)

    def delete(self, name: str) -> None:
        self._client.request("DELETE", f"{API}/groups/{name}")


class Tokens(_Resource):
    """The caller's own tokens."""

    def create(
        self,
        name: str,
        *,
        project: str | None = None,
        read_only: bool = False,
        expires_in_days: float | None = None,
    ) -> TokenCreated:
        return self._client._model(
            TokenCreated,
            "POST",
            f"{API}/tokens",
            json=_token_body(name, project, read_only, expires_in_days),
        )

    def list(
        self, *, include_revoked: bool = False, page_size: int = 100
    ) -> builtins.list[TokenOut]:
        """Every token of yours, oldest first, ``page_size`` per request."""
        params = {"include_revoked": include_revoked}
        return list(self._client._paged(TokenOut, f"{API}/tokens", params, page_size=page_size))

    def page(
        self, *, include_revoked: bool = False, page_size: int = 100, cursor: str | None = None
    ) -> Page[TokenOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(
            TokenOut,
            f"{API}/tokens",
            {"include_revoked": include_revoked},
            page_size=page_size,
            cursor=cursor,
        )

    def revoke(self, name: str) -> None:
        self._client.request("DELETE", f"{API}/tokens/{name}")


class Audit(_Resource):
    def list(
        self,
        *,
        project: str | None = None,
        since: datetime | str | None = None,
        actor: str | None = None,
        page_size: int = 500,
    ) -> builtins.list[AuditEventOut]:
        """Every event that matches, in chain order, ``page_size`` per request."""
        params = _audit_filter(project, since, actor)
        return list(self._client._paged(AuditEventOut, f"{API}/audit", params, page_size=page_size))

    def page(
        self,
        *,
        project: str | None = None,
        since: datetime | str | None = None,
        actor: str | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> Page[AuditEventOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(
            AuditEventOut,
            f"{API}/audit",
            _audit_filter(project, since, actor),
            page_size=page_size,
            cursor=cursor,
        )

    def verify(self, *, anchor: str | None = None) -> VerifyResult:
        """Check the chain against the witness and, if given, ``anchor`` (``SEQ:HASH``)."""
        params = {"anchor": anchor} if anchor else None
        return self._client._model(VerifyResult, "POST", f"{API}/audit:verify", params=params)

    def export(self) -> Iterator[str]:
        """The trail as JSON lines, streamed."""
        with self._client.streaming("GET", f"{API}/audit:export") as response:
            yield from response.iter_lines()


def _audit_filter(
    project: str | None, since: datetime | str | None, actor: str | None
) -> dict[str, Any]:
    return {
        "project": project,
        "actor": actor,
        "since": since.isoformat() if isinstance(since, datetime) else since,
    }


class Admin(_Resource):
    """Operating the installation (platform admins)."""

    def tasks(self, *, page_size: int = 100) -> builtins.list[TaskOut]:
        """Every periodic background task by name: last run, its outcome, next run."""
        from ghaf.tasks.schemas import TaskOut

        return list(self._client._paged(TaskOut, f"{API}/admin/tasks", page_size=page_size))


def _artifact_url(project: str, path: str) -> str:
    # Checked here too: an HTTP client would otherwise resolve '..' in the URL itself.
    return f"{API}/projects/{project}/artifacts/{quote(normalise_path(path))}"


class Artifacts(_Resource):
    """Encrypted, content-addressed files in a project, streamed both ways."""

    def upload(
        self,
        project: str,
        path: str,
        source: str | Path | bytes,
        *,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> ArtifactOut:
        """Store a local file (or bytes) at ``path``. Content the project already holds
        is linked, not uploaded again."""
        if isinstance(source, bytes):
            digest = hashlib.sha256(source).hexdigest()
            body: bytes | Iterator[bytes] = source
        else:
            file = Path(source)
            digest = file_sha256(file)
            body = read_file(file, progress)
        if digest in self.present(project, [digest]):
            return self._client._model(
                ArtifactOut,
                "POST",
                f"{API}/projects/{project}/artifacts:link",
                json={"path": path, "sha256": digest, "overwrite": overwrite},
            )
        return self._client._model(
            ArtifactOut,
            "PUT",
            _artifact_url(project, path),
            content=body,
            params={"overwrite": overwrite},
            headers={"X-Ghaf-SHA256": digest, "Content-Type": "application/octet-stream"},
        )

    def put_pack(
        self,
        project: str,
        files: Sequence[LocalFile],
        *,
        progress: Progress | None = None,
        contents: Mapping[str, bytes] | None = None,
    ) -> PackOut:
        """Upload many small files (each at most 16 MiB) in one request, addressed by hash.

        ``contents`` maps SHA-256 to bytes already in memory, which are sent instead of
        reading those files again."""
        return self._client._model(
            PackOut,
            "POST",
            f"{API}/projects/{project}/blobs:pack",
            content=pack_body(files, progress, contents),
            headers={"Content-Type": packs.MEDIA_TYPE},
        )

    def fetch_pack(self, project: str, hashes: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Contents by SHA-256 in one streamed response, each checked against its hash."""
        wanted = set(hashes)
        frames = packs.FrameReader(members_max=len(wanted))
        with self._client.streaming(
            "POST", f"{API}/projects/{project}/blobs:fetch", json={"sha256": sorted(wanted)}
        ) as response:
            for piece in response.iter_bytes(CHUNK):
                for sha256, content in frames.feed(piece):
                    if sha256 == packs.ERROR_SHA256:
                        packs.raise_error_frame(content)
                    if sha256 not in wanted or hashlib.sha256(content).hexdigest() != sha256:
                        raise IntegrityFailure(
                            f"content {sha256} does not match its SHA-256: corrupted in transit"
                        )
                    yield sha256, content
        if frames.count != len(wanted) or not frames.empty:
            raise IntegrityFailure(
                f"the server sent {frames.count} of {len(wanted)} contents: the response "
                "was cut short"
            )

    def put_blob(self, project: str, source: str | Path | bytes) -> tuple[str, int]:
        """Store content addressed only by its SHA-256 (sent only if the project lacks
        it); returns (sha256, size) for the domain that will name it."""
        if isinstance(source, bytes):
            digest, size = hashlib.sha256(source).hexdigest(), len(source)
        else:
            local = Path(source)
            if not local.is_file():
                raise NotFound(f"{local} is not a file", field="path")
            digest, size = file_sha256(local), local.stat().st_size
        if digest not in self.present(project, [digest]):
            self._client.request(
                "PUT",
                f"{API}/projects/{project}/blobs/{digest}",
                content=source if isinstance(source, bytes) else read_file(Path(source)),
                headers={"X-Ghaf-SHA256": digest, "Content-Type": "application/octet-stream"},
            )
        return digest, size

    def blob_pieces(self, project: str, sha256: str) -> Iterator[bytes]:
        """Content by SHA-256, streamed in 1 MiB pieces (unchecked: see write_verified)."""
        with self._client.streaming("GET", f"{API}/projects/{project}/blobs/{sha256}") as response:
            yield from response.iter_bytes(CHUNK)

    def present(self, project: str, hashes: builtins.list[str]) -> set[str]:
        """Which of these SHA-256s the project already stores."""
        answer = self._client.request(
            "POST", f"{API}/projects/{project}/blobs:query", json={"sha256": hashes}
        ).json()
        return set(answer["present"])

    def download(
        self, project: str, path: str, destination: str | Path, *, progress: Progress | None = None
    ) -> ArtifactOut:
        """Download to ``destination``, checking the SHA-256 before it is moved into place."""
        target = download_target(destination, path.rsplit("/", 1)[-1], what="artifact")
        with self._client.streaming("GET", _artifact_url(project, path)) as response:
            write_verified(
                response.iter_bytes(CHUNK),
                target,
                response.headers.get("x-ghaf-sha256", ""),
                name=f"download of {path!r}",
                progress=progress,
            )
        return self.get(project, path)

    def read(
        self, project: str, path: str, *, start: int | None = None, end: int | None = None
    ) -> bytes:
        """The content (or bytes ``start``..``end`` inclusive) in memory."""
        headers = {}
        if start is not None or end is not None:
            headers["Range"] = f"bytes={start or 0}-{'' if end is None else end}"
        return self._client.request("GET", _artifact_url(project, path), headers=headers).content

    def get(self, project: str, path: str) -> ArtifactOut:
        """The artifact's metadata (size, SHA-256, region, who stored it, when)."""
        return self._client._model(
            ArtifactOut,
            "GET",
            _artifact_url(project, path),
            params={"metadata": True},
        )

    def get_by_id(self, project: str, artifact_id: str) -> ArtifactOut:
        return self._client._model(
            ArtifactOut, "GET", f"{API}/projects/{project}/artifact-ids/{artifact_id}"
        )

    def list(
        self, project: str, *, prefix: str | None = None, page_size: int = 100
    ) -> builtins.list[ArtifactOut]:
        return list(
            self._client._paged(
                ArtifactOut,
                f"{API}/projects/{project}/artifacts",
                {"prefix": prefix},
                page_size=page_size,
            )
        )

    def page(
        self,
        project: str,
        *,
        prefix: str | None = None,
        page_size: int = 100,
        cursor: str | None = None,
    ) -> Page[ArtifactOut]:
        """One page of :meth:`list`; pass its ``next_cursor`` back as ``cursor``."""
        return self._client._page(
            ArtifactOut,
            f"{API}/projects/{project}/artifacts",
            {"prefix": prefix},
            page_size=page_size,
            cursor=cursor,
        )

    def delete(self, project: str, path: str) -> None:
        self._client.request("DELETE", _artifact_url(project, path))

    def verify(self, project: str) -> StorageVerifyResult:
        return self._client._model(
            StorageVerifyResult, "POST", f"{API}/projects/{project}/artifacts:verify"
        )


class Keys(_Resource):
    """A project's key-encryption key versions."""

    def list(self, project: str, *, page_size: int = 100) -> KeysOut:
        """Every key version (all pages) and how many objects wait for re-wrapping."""
        path, query = f"{API}/projects/{project}/keys", {"page_size": page_size}
        keys = self._client._model(KeysOut, "GET", path, params=query)
        page = keys
        while page.next_cursor:
            page = self._client._model(
                KeysOut, "GET", path, params={**query, "cursor": page.next_cursor}
            )
            keys.items += page.items
        return keys.model_copy(update={"next_cursor": None})

    def rotate(self, project: str) -> RotationResult:
        return self._client._model(RotationResult, "POST", f"{API}/projects/{project}/keys:rotate")
