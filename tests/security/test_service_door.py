"""The enforcement door, checked from the source: every public user action authorises.

docs/conventions.md ("Code"): a user action is one public function in a domain's
``service.py`` or ``flows.py`` that takes a ``Context`` first and authorises through
``ctx.require(...)`` (or ``ctx.in_project(...)``). This test reads every such module and
fails for a public function whose first parameter is ``ctx`` when nothing in its body
reaches the door: a door call of its own, a function of the same module that reaches it
(transitively, private helpers included), or a *public* function of another service or
flows module that does. Helpers that must not be called without a check are private
(``_name``) and are never counted as a door for another module.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import ghaf
from ghaf.client import Client
from ghaf.core.errors import NotFound, PermissionDenied, Unauthenticated
from ghaf.security import service as security
from ghaf.security.context import Caller, Context
from ghaf.security.schemas import PrincipalOut, TokenCreate
from tests.conftest import Platform, unique

GHAF = Path(ghaf.__file__).parent

DOOR_METHODS = frozenset({"require", "in_project"})
"""Methods of a context (the first parameter, or a context narrowed from it with
``in_project``) that authorise: ghaf/security/context.py."""

DOOR_FUNCTIONS: Mapping[str, str] = {
    "ghaf.security.standing.require_authenticated": (
        "a caller acting on itself (whoami, its own tokens): any authenticated caller may "
        "read itself, a read-only token may not change itself; anonymous and system "
        "contexts are refused (docs/security.md)"
    ),
}
"""Functions outside the checked modules that are a door themselves, with why."""

ALLOWED: Mapping[str, str] = {
    "ghaf.security.service.authenticate": (
        "turns a bearer token into the caller: there is nobody to authorise yet; every "
        "refusal is audited"
    ),
    "ghaf.security.service.login": (
        "exchanges a name and password for a token (establishes identity, as in OAuth): "
        "rate-limited, locked out after repeated failures, audited"
    ),
}
"""Public ctx-taking functions that are not behind the door, each with its reason."""


@dataclass
class Module:
    """One parsed module: its top-level functions and what its names import."""

    name: str
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef]
    imports: dict[str, str] = field(default_factory=dict)


def parse_module(name: str, source: str) -> Module:
    tree = ast.parse(source)
    functions = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    imports: dict[str, str] = {}
    for node in ast.walk(tree):  # imports inside functions (cycle breakers) count too
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                imports[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    imports[alias.asname] = alias.name
    return Module(name, functions, imports)


def _first_parameter(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    params = [*fn.args.posonlyargs, *fn.args.args]
    return params[0].arg if params else None


def _contexts(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """The first parameter and every local name bound to ``<context>.in_project(...)``."""
    first = _first_parameter(fn)
    names = {first} if first else set()
    grew = True
    while grew:
        grew = False
        for node in ast.walk(fn):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign | ast.NamedExpr) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            if not _narrows(value, names):
                continue
            for target in targets:
                if isinstance(target, ast.Name) and target.id not in names:
                    names.add(target.id)
                    grew = True
    return names


def _narrows(value: ast.expr, contexts: set[str]) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "in_project"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in contexts
        for node in ast.walk(value)
    )


def _callee(call: ast.Call, module: Module) -> str | None:
    """The qualified name a call resolves to, where the module's names tell."""
    func = call.func
    if isinstance(func, ast.Name):
        if func.id in module.functions:
            return f"{module.name}.{func.id}"
        return module.imports.get(func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        target = module.imports.get(func.value.id)
        return f"{target}.{func.attr}" if target else None
    return None


def _opens_door(
    fn: ast.FunctionDef | ast.AsyncFunctionDef, module: Module, door_functions: Iterable[str]
) -> bool:
    contexts = _contexts(fn)
    doors = set(door_functions)
    for node in ast.walk(fn):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr in DOOR_METHODS
            and isinstance(func.value, ast.Name)
            and func.value.id in contexts
        ):
            return True
        if _callee(node, module) in doors:
            return True
    return False


def authorising(
    modules: Iterable[Module], *, door_functions: Iterable[str] = DOOR_FUNCTIONS
) -> set[str]:
    """Qualified names of the checked functions that reach the door."""
    modules = list(modules)
    by_name = {m.name: m for m in modules}
    doors = set(door_functions)
    calls: dict[str, set[str]] = {}
    found: set[str] = set()
    for module in modules:
        for name, fn in module.functions.items():
            qualified = f"{module.name}.{name}"
            if _opens_door(fn, module, doors):
                found.add(qualified)
            calls[qualified] = {
                callee
                for node in ast.walk(fn)
                if isinstance(node, ast.Call)
                and (callee := _callee(node, module)) is not None
                and _counts(callee, module.name, by_name)
            }
    grew = True
    while grew:  # a fixpoint: terminates on recursion, as the set only grows
        grew = False
        for qualified, callees in calls.items():
            if qualified not in found and callees & found:
                found.add(qualified)
                grew = True
    return found


def _counts(callee: str, caller_module: str, modules: Mapping[str, Module]) -> bool:
    """A callee counts as a door if it is in the same module (private helpers too) or a
    public function of another checked module."""
    owner, _, name = callee.rpartition(".")
    if owner not in modules or name not in modules[owner].functions:
        return False
    return owner == caller_module or not name.startswith("_")


def unguarded(
    modules: Iterable[Module],
    *,
    door_functions: Iterable[str] = DOOR_FUNCTIONS,
    allowed: Iterable[str] = ALLOWED,
) -> list[str]:
    """Public functions taking ``ctx`` first that never reach the door, not allowed."""
    modules = list(modules)
    found = authorising(modules, door_functions=door_functions)
    exempt = set(allowed)
    return sorted(
        f"{module.name}.{name}"
        for module in modules
        for name, fn in module.functions.items()
        if not name.startswith("_")
        and _first_parameter(fn) == "ctx"
        and f"{module.name}.{name}" not in found
        and f"{module.name}.{name}" not in exempt
    )


def ghaf_modules() -> list[Module]:
    """Every ``service.py`` and ``flows.py`` under ghaf/."""
    paths = sorted({*GHAF.rglob("service.py"), *GHAF.rglob("flows.py")})
    return [
        parse_module(
            ".".join(("ghaf", *path.relative_to(GHAF).with_suffix("").parts)),
            path.read_text(encoding="utf-8"),
        )
        for path in paths
    ]


# --- ghaf itself -----------------------------------------------------------------------


def test_every_public_service_function_authorises() -> None:
    missing = unguarded(ghaf_modules())
    assert not missing, (
        "public service/flow functions that take ctx but never reach ctx.require / "
        "ctx.in_project (make them private, or authorise them):\n  " + "\n  ".join(missing)
    )


def test_the_checked_modules_include_every_domain() -> None:
    names = {m.name for m in ghaf_modules()}
    for expected in (
        "ghaf.security.service",
        "ghaf.security.audit.service",
        "ghaf.projects.service",
        "ghaf.storage.service",
        "ghaf.tasks.service",
    ):
        assert expected in names


def test_the_allow_list_names_only_functions_that_need_it() -> None:
    """A stale entry (gone, renamed, or now authorising) would hide a future one."""
    modules = ghaf_modules()
    found = authorising(modules)
    defined = {f"{m.name}.{n}" for m in modules for n in m.functions}
    for name, reason in ALLOWED.items():
        assert name in defined, f"{name} is allowed but no longer exists"
        assert name not in found, f"{name} authorises now; drop it from ALLOWED"
        assert reason


def test_the_door_functions_exist() -> None:
    import importlib

    for qualified in DOOR_FUNCTIONS:
        module, _, name = qualified.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name))


# --- the checker itself, on small synthetic modules ----------------------------------


def _module(name: str, source: str) -> Module:
    return parse_module(name, textwrap.dedent(source))


def test_the_checker_catches_a_function_that_skips_the_door() -> None:
    module = _module(
        "pkg.notes.service",
        """
        def read_note(ctx, project, name):
            pctx = ctx.in_project(project)
            pctx.require("note:read", resource=name)
            return name

        def delete_note(ctx, project, name):
            ctx.session.execute("DELETE ...")

        def note_count(session, project):
            return 0
        """,
    )
    assert unguarded([module]) == ["pkg.notes.service.delete_note"]


def test_the_checker_follows_helpers_of_the_same_module() -> None:
    module = _module(
        "pkg.notes.service",
        """
        def _project(ctx, project):
            pctx = ctx.in_project(project)
            pctx.require("note:write", resource=project)
            return pctx

        def _write(pctx, name):
            pctx.session.add(name)

        def _loop_a(ctx):
            return _loop_b(ctx)

        def _loop_b(ctx):
            return _loop_a(ctx)

        def create_note(ctx, project, name):
            _write(_project(ctx, project), name)

        async def rename_note(ctx, project, name):
            return create_note(ctx, project, name)

        def sneaky(ctx, name):
            _write(ctx, name)

        def circular(ctx):
            return _loop_a(ctx)
        """,
    )
    assert unguarded([module]) == ["pkg.notes.service.circular", "pkg.notes.service.sneaky"]


def test_only_a_narrowed_context_opens_the_door() -> None:
    module = _module(
        "pkg.notes.service",
        """
        def by_walrus(ctx, project):
            if (pctx := ctx.in_project(project)) is not None:
                pctx.require("note:read", resource=project)

        def on_something_else(ctx, policy):
            policy.require("note:read", resource="x")

        def in_project_alone(ctx, project):
            return ctx.in_project(project)
        """,
    )
    assert unguarded([module]) == ["pkg.notes.service.on_something_else"]


def test_another_domains_public_door_counts_its_private_helpers_do_not() -> None:
    below = _module(
        "pkg.security.service",
        """
        def add_account(ctx, name):
            ctx.require("account:write", resource=name)

        def _add_principal(ctx, name):
            ctx.require("account:write", resource=name)

        def _insert(ctx, name):
            ctx.session.add(name)
        """,
    )
    above = _module(
        "pkg.notes.service",
        """
        from pkg.security import service as security
        from pkg.security.service import add_account

        def via_alias(ctx, name):
            security.add_account(ctx, name)

        def via_import(ctx, name):
            add_account(ctx, name)

        def via_private(ctx, name):
            security._add_principal(ctx, name)

        def via_unchecked(ctx, name):
            security._insert(ctx, name)

        def via_unknown(ctx, name):
            security.no_such_function(ctx, name)
        """,
    )
    assert unguarded([below, above]) == [
        "pkg.notes.service.via_private",
        "pkg.notes.service.via_unchecked",
        "pkg.notes.service.via_unknown",
    ]


def test_door_functions_and_the_allow_list() -> None:
    module = _module(
        "pkg.security.service",
        """
        from pkg.security import standing

        def whoami(ctx):
            standing.require_authenticated(ctx, action="a", resource="r")

        def login(ctx, request):
            return request

        def whoever(ctx):
            standing.rank(ctx)
        """,
    )
    doors = ["pkg.security.standing.require_authenticated"]
    assert unguarded([module], door_functions=doors, allowed=["pkg.security.service.login"]) == [
        "pkg.security.service.whoever"
    ]
    assert unguarded([module], door_functions=[], allowed=[]) == [
        "pkg.security.service.login",
        "pkg.security.service.whoami",
        "pkg.security.service.whoever",
    ]


# --- the identity functions behind the door, called in-process ----------------------


@contextmanager
def _context(
    platform: Platform, *, caller: Caller | None = None, system_actor: str | None = None
) -> Iterator[Context]:
    ctx = platform.runtime.context(
        write=True, caller=caller, request_id=unique("door"), system_actor=system_actor
    )
    try:
        yield ctx
    finally:
        ctx.close()


def _caller(user: PrincipalOut) -> Caller:
    return Caller(user.id, user.name, user.kind, user.platform_admin)


def test_acting_on_oneself_needs_a_caller(platform: Platform, admin: Client) -> None:
    """Whoami and one's own tokens answer to any authenticated caller, and only to one:
    ghaf's own system contexts hold platform authority but have no self."""
    actor = f"system:{unique('door')}"
    for system_actor in (None, actor):
        calls: list[Callable[[Context], object]] = [
            security.whoami,
            security.list_own_tokens,
            lambda ctx: security.create_own_token(ctx, TokenCreate(name=unique("t"))),
        ]
        for call in calls:
            with (
                _context(platform, system_actor=system_actor) as ctx,
                pytest.raises(Unauthenticated),
            ):
                call(ctx)
    refused = [e for e in admin.audit.list(actor=actor) if e.outcome == "denied"]
    assert [e.action for e in refused] == ["auth:whoami", "token:list", "token:create"]
    user, client = platform.new_user()
    with _context(platform, caller=_caller(user)) as ctx:
        assert security.whoami(ctx).name == user.name
        items, next_cursor = security.list_own_tokens(ctx)
        assert [t.name for t in items] == ["test"] and next_cursor is None
    assert client.whoami().name == user.name


def test_a_read_only_token_reads_itself_but_changes_nothing(platform: Platform) -> None:
    _user, client = platform.new_user()
    reader = platform.client(client.tokens.create(unique("ro"), read_only=True).token)
    assert reader.whoami().read_only
    assert client.tokens.list() == reader.tokens.list()
    with pytest.raises(PermissionDenied, match="read-only token cannot create tokens"):
        reader.tokens.create(unique("t"))
    with pytest.raises(PermissionDenied, match="read-only token cannot revoke tokens"):
        reader.tokens.revoke("test")


def test_service_account_functions_authorise_themselves(
    platform: Platform, admin: Client, project: str
) -> None:
    """What projects calls to make accounts and their tokens checks for itself, so a
    caller that skipped the projects domain's checks still meets the door."""
    viewer, _ = platform.new_user()
    admin.members.add(project, principal=viewer.name, role="viewer")
    account = admin.service_accounts.create(project, unique("bot"))
    with _context(platform, caller=_caller(viewer)) as ctx:
        pctx = ctx.in_project(project)
        with pytest.raises(PermissionDenied, match="service-account:write"):
            security.add_service_account(pctx, name=unique("bot"))
    with _context(platform, caller=_caller(viewer)) as ctx:
        pctx = ctx.in_project(project)
        principal = security.get_principal(pctx.session, account.name)
        with pytest.raises(PermissionDenied, match="service-account:write"):
            security.issue_account_token(pctx, principal, TokenCreate(name=unique("t")))
    with _context(platform, caller=_caller(viewer)) as ctx:
        pctx = ctx.in_project(project)
        principal = security.get_principal(pctx.session, account.name)
        with pytest.raises(PermissionDenied, match="service-account:write"):
            security.revoke_account_token(pctx, principal, "any")
    other = admin.projects.create(unique("p")).name
    admin_user = admin.users.get(admin.whoami().name)
    with _context(platform, caller=_caller(admin_user)) as ctx:
        pctx = ctx.in_project(other)
        principal = security.get_principal(pctx.session, account.name)
        with pytest.raises(NotFound, match="no service account"):
            security.list_account_tokens(pctx, principal)


def test_bootstrap_needs_platform_authority(platform: Platform) -> None:
    user, _ = platform.new_user()
    with _context(platform, caller=_caller(user)) as ctx, pytest.raises(PermissionDenied):
        security.bootstrap_admin(ctx, name=unique("admin"))
    with _context(platform, system_actor="system:admin-init") as ctx:
        assert security.bootstrap_admin(ctx, name=unique("admin")) is None  # one exists
