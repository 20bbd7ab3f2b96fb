"""The request context: who is calling, in which project, with which role.

Every service function takes a :class:`Context`. ``ctx.require(permission)`` is the single
authorisation door; ``ctx.audit(...)`` records what happened. A denied call is audited in
its own committed transaction before the error propagates, so a refusal is never lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ghaf.core.database import Database
from ghaf.core.errors import NotFound, PermissionDenied
from ghaf.core.names import validate_name
from ghaf.security.audit.service import DENIED, SUCCESS, AuditWriter
from ghaf.security.cache import SecurityCache
from ghaf.security.models import USER, GroupMember
from ghaf.security.permissions import (
    PLATFORM_ADMIN,
    ROLE_PERMISSIONS,
    highest_role,
    is_read_permission,
)
from ghaf.security.tenancy import Project, ProjectMember

if TYPE_CHECKING:
    # For the type checker only: storage sits above security, and the runtime (which
    # composes both) hands a context its store.
    from ghaf.storage.store import Store

# Permissions every authenticated *user* holds outside any project.
USER_GLOBAL_PERMISSIONS = frozenset({"project:create"})


@dataclass(frozen=True)
class Caller:
    """The authenticated principal and the limits of the token it used."""

    principal_id: str
    name: str
    kind: str
    is_platform_admin: bool
    token_id: str | None = None
    token_project_id: str | None = None
    read_only: bool = False


class SessionSlot:
    """A context's session, opened on first use: a read answered from the epoch-checked
    caches never needs one. Contexts narrowed from one another share the slot."""

    def __init__(self, open_session: Callable[[], Session]) -> None:
        self._open = open_session
        self._session: Session | None = None

    def get(self) -> Session:
        if self._session is None:
            self._session = self._open()
        return self._session

    def close(self) -> None:
        """Close the session if one was opened (rolling back anything uncommitted)."""
        if self._session is not None:
            self._session.close()


class Context:
    """Principal + project + role + DB session + request id, passed to every service."""

    def __init__(
        self,
        *,
        database: Database,
        session: SessionSlot,
        audit_writer: AuditWriter,
        caller: Caller | None,
        request_id: str | None = None,
        client: str | None = None,
        project: Project | None = None,
        role: str | None = None,
        system_actor: str | None = None,
        cache: SecurityCache | None = None,
        epoch: int | None = None,
        store: Store | None = None,
        backends: Mapping[str, object] | None = None,
    ) -> None:
        self.database = database
        self._store = store
        self._backends = backends if backends is not None else {}
        self._session = session
        # Only read-only requests get a cache; see ghaf/security/cache.py.
        self.cache = cache
        self.epoch = epoch
        self.system_actor = system_actor
        self.audit_writer = audit_writer
        self.caller = caller
        self.request_id = request_id
        self.client = client
        self.project = project
        self.role = role

    @property
    def session(self) -> Session:
        return self._session.get()

    @property
    def store(self) -> Store:
        """The installation's artifact store (the runtime's backends travel with the
        context, so a flow never has them passed in)."""
        if self._store is None:
            raise RuntimeError("this context was opened without the runtime's backends")
        return self._store

    def backend(self, name: str) -> object:
        """What domain ``name`` keeps for the life of the server (its lifespan put it
        in the runtime), e.g. the deployments' replica fleet."""
        found = self._backends.get(name)
        if found is None:
            raise RuntimeError(f"this context was opened without the {name} backend")
        return found

    def close(self) -> None:
        """End the request's database work (uncommitted changes are rolled back)."""
        self._session.close()

    # --- who -------------------------------------------------------------------------

    @property
    def actor(self) -> str | None:
        """The caller's name; for work ghaf does itself (install, purge), a system name."""
        return self.caller.name if self.caller else self.system_actor

    @property
    def is_platform_admin(self) -> bool:
        return bool(self.caller and self.caller.is_platform_admin)

    @property
    def permissions(self) -> frozenset[str]:
        """What this context may do: the role's permissions, narrowed by the token.

        A context without a caller but with a system actor is ghaf's own in-process work
        (installation, scheduled purges) and holds platform authority; an anonymous
        request context holds nothing.
        """
        if self.caller is None:
            return ROLE_PERMISSIONS[PLATFORM_ADMIN] if self.system_actor else frozenset()
        if self.project is not None:
            granted = ROLE_PERMISSIONS.get(self.role or "", frozenset())
        elif self.caller.is_platform_admin and self.caller.token_project_id is None:
            # A project-limited token holds nothing outside its project, even an admin's.
            granted = ROLE_PERMISSIONS[PLATFORM_ADMIN]
        elif self.caller.kind == USER and self.caller.token_project_id is None:
            granted = USER_GLOBAL_PERMISSIONS
        else:
            granted = frozenset()
        if self.caller.read_only:
            granted = frozenset(p for p in granted if is_read_permission(p))
        return granted

    # --- authorisation -----------------------------------------------------------------

    def require(self, permission: str, *, resource: str) -> None:
        """Raise ``PermissionDenied`` (audited) unless this context holds ``permission``."""
        if permission in self.permissions:
            return
        where = f" in project {self.project.name!r}" if self.project else ""
        held = f"your role is {self.role}" if self.role else "you hold no role that grants it"
        if self.caller is not None and self.caller.read_only and not is_read_permission(permission):
            held = "your token is read-only"
        self.deny(
            permission,
            resource,
            PermissionDenied(f"{permission} is required{where}; {held}", permission=permission),
        )

    def deny(
        self, action: str, resource: str, error: Exception, *, project: str | None = None
    ) -> NoReturn:
        """Record a refused attempt durably in its own transaction, then raise ``error``.

        The request's own work is rolled back first: it is refused, and on SQLite its
        write lock must be released before the audit transaction can take it. A read
        request's session never writes (see ghaf/core/database.py), hence a new one.
        """
        # Read the project's id before the rollback expires the loaded project (a
        # refresh would re-open a transaction, and on SQLite take the write lock).
        project = project or (self.project.id if self.project else None)
        self.session.rollback()
        with self.database.transaction(write=True) as session:
            self._append(
                session,
                action,
                resource,
                outcome=DENIED,
                detail={"reason": str(error)},
                project=project,
            )
        raise error

    def in_project(self, name: str, *, include_deleted: bool = False) -> Context:
        """This context narrowed to project ``name``, with the caller's effective role.

        A project the caller cannot see answers exactly like one that does not exist.
        """
        validate_name(name, field="project")
        found = self._visible_project(name, include_deleted=include_deleted)
        if found is None:
            # Recorded against the project's id where one exists (its maintainers see
            # the attempt), never against the bare name (a later project may reuse it).
            self.deny(
                "project:access",
                f"project/{name}",
                NotFound(f"project {name!r} not found", field="project"),
                project=self.session.scalar(
                    select(Project.id).where(Project.name == name, Project.deleted_at.is_(None))
                ),
            )
        project, role = found
        return Context(
            database=self.database,
            session=self._session,
            audit_writer=self.audit_writer,
            caller=self.caller,
            request_id=self.request_id,
            client=self.client,
            project=project,
            role=role,
            system_actor=self.system_actor,
            cache=self.cache,
            epoch=self.epoch,
            store=self._store,
            backends=self._backends,
        )

    def _visible_project(self, name: str, *, include_deleted: bool) -> tuple[Project, str] | None:
        caller = self.caller
        if caller is None:
            return self._system_project(name, include_deleted=include_deleted)
        key = (caller.principal_id, caller.token_project_id, name, include_deleted)
        if self.cache is not None and self.epoch is not None:
            hit = self.cache.grant(self.epoch, key)
            if hit is not None:
                return hit
        found = self._load_grant(caller, name, include_deleted=include_deleted)
        if found is not None and self.cache is not None and self.epoch is not None:
            self.session.expunge(found[0])  # shared read-only across requests from now on
            self.cache.put_grant(self.epoch, key, found)
        return found

    def _system_project(self, name: str, *, include_deleted: bool) -> tuple[Project, str] | None:
        """ghaf's own work (purges, maintenance) sees every project; anonymous sees none."""
        if self.system_actor is None:
            return None
        statement = select(Project).where(Project.name == name)
        if not include_deleted:
            statement = statement.where(Project.deleted_at.is_(None))
        project = self.session.scalar(statement)
        return (project, PLATFORM_ADMIN) if project is not None else None

    def project_roles(self) -> dict[str, str]:
        """The caller's strongest role in each project, by project id, counting direct
        and group grants and honouring a project-limited token. Deleted projects are
        included; callers filter what they show."""
        caller = self.caller
        if caller is None:
            return {}
        statement = select(ProjectMember.project_id, ProjectMember.role).where(
            or_(
                ProjectMember.principal_id == caller.principal_id,
                ProjectMember.group_id.in_(
                    select(GroupMember.group_id).where(
                        GroupMember.principal_id == caller.principal_id
                    )
                ),
            )
        )
        if caller.token_project_id is not None:
            statement = statement.where(ProjectMember.project_id == caller.token_project_id)
        roles: dict[str, list[str]] = {}
        for project_id, role in self.session.execute(statement):
            roles.setdefault(project_id, []).append(role)
        return {
            project_id: strongest
            for project_id, granted in roles.items()
            if (strongest := highest_role(granted)) is not None
        }

    def _load_grant(
        self, caller: Caller, name: str, *, include_deleted: bool
    ) -> tuple[Project, str] | None:
        """One query: the project and every role the caller holds in it."""
        groups = select(GroupMember.group_id).where(GroupMember.principal_id == caller.principal_id)
        statement = (
            select(Project, ProjectMember.role)
            .outerjoin(
                ProjectMember,
                and_(
                    ProjectMember.project_id == Project.id,
                    or_(
                        ProjectMember.principal_id == caller.principal_id,
                        ProjectMember.group_id.in_(groups),
                    ),
                ),
            )
            .where(Project.name == name)
        )
        if not include_deleted:
            statement = statement.where(Project.deleted_at.is_(None))
        rows = self.session.execute(statement).all()
        if not rows:
            return None
        project = rows[0][0]
        if caller.token_project_id is not None and caller.token_project_id != project.id:
            return None
        if caller.is_platform_admin:
            return project, PLATFORM_ADMIN
        role = highest_role([r for _, r in rows if r is not None])
        return (project, role) if role is not None else None

    # --- audit -------------------------------------------------------------------------

    def audit(
        self,
        action: str,
        resource: str,
        *,
        outcome: str = SUCCESS,
        detail: dict[str, Any] | None = None,
        project: str | None = None,
    ) -> None:
        """Append an audit row in this context's transaction. ``project`` is a project
        *id* (rows name projects by id); it defaults to this context's project."""
        self._append(
            self.session, action, resource, outcome=outcome, detail=detail, project=project
        )

    def _append(
        self,
        session: Session,
        action: str,
        resource: str,
        *,
        outcome: str,
        detail: dict[str, Any] | None,
        project: str | None,
    ) -> None:
        self.audit_writer.append(
            session,
            action=action,
            resource=resource,
            outcome=outcome,
            actor=self.actor,
            actor_id=self.caller.principal_id if self.caller else None,
            project=project or (self.project.id if self.project else None),
            request_id=self.request_id,
            client=self.client,
            detail=detail,
        )

    def commit(self) -> None:
        self.session.commit()
