"""The ``ghaf`` command's top level, known without importing a single command module.

``ghaf --help`` lists these and imports none of them; running a command imports only
the module that holds it (``module:attribute``: a Typer group or a command function).
So ``ghaf --help`` answers at once, and ``ghaf projects ls`` does not import the server.

The commands themselves stay where they are declared (the platform's own in
``ghaf/cli/``, each domain's group in its manifest's ``cli``); this is their table of
contents. tests/cli/test_help.py proves it matches ``build_cli()`` (names, order, help
text, the very objects), so a group added to a manifest without its line here fails
the tests, and until then it still runs (ghaf/cli/main.py falls back to the domains).
"""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    """One top-level command: where it lives and its help's first paragraph (what
    ``ghaf --help`` shows of it)."""

    name: str
    target: str  # "module:attribute"
    help: str


COMMANDS: tuple[Entry, ...] = (
    # In the order ``ghaf --help`` lists them, Typer's: the commands (the platform's own,
    # ghaf/cli/main.py: _PLATFORM, then the domains'), then the groups.
    Entry(
        "server", "ghaf.cli.admin:serve", "Run the API server (uvicorn) until SIGINT or SIGTERM."
    ),
    Entry(
        "login",
        "ghaf.cli.session:login",
        "Check the credentials against the server and store them (mode 0600).",
    ),
    Entry("logout", "ghaf.cli.session:logout", "Forget the stored credentials."),
    Entry(
        "whoami",
        "ghaf.cli.session:whoami",
        "Who the stored (or GHAF_URL/GHAF_TOKEN) credentials authenticate as.",
    ),
    Entry(
        "demo",
        "ghaf.cli.demo:demo",
        "Run the lifecycle end to end on a local platform home (GHAF_HOME, else ./.ghaf).",
    ),
    # A domain's command of its own (not a group): Typer lists commands before groups.
    Entry(
        "serve",
        "ghaf.serving.cli:serve",
        "Serve a registered model version over OIP v2 and /predict until stopped.",
    ),
    Entry(
        "admin",
        "ghaf.cli.admin:admin",
        "Install, upgrade and recover an installation (local access).",
    ),
    # Each domain's groups, in ghaf/domains.py order.
    Entry(
        "projects",
        "ghaf.projects.cli:projects",
        "Create, list, show, delete and restore projects.",
    ),
    Entry("members", "ghaf.projects.cli:members", "Grant, change and remove roles in a project."),
    Entry(
        "service-accounts",
        "ghaf.projects.cli:service_accounts",
        "Non-human principals owned by a project.",
    ),
    Entry(
        "artifacts",
        "ghaf.storage.cli:artifacts",
        "Encrypted, content-addressed files in a project.",
    ),
    Entry(
        "keys", "ghaf.storage.cli:keys", "A project's key-encryption keys: versions and rotation."
    ),
    Entry(
        "datasets",
        "ghaf.datasets.cli:datasets",
        "Immutable, versioned datasets of files and folders.",
    ),
    Entry("experiments", "ghaf.tracking.cli:experiments", "Experiments: named groups of runs."),
    Entry(
        "runs",
        "ghaf.tracking.cli:runs",
        "Runs: params, metrics, artifacts and lineage of training code.",
    ),
    Entry(
        "models",
        "ghaf.registry.cli:models",
        "Model registry: versions, aliases, approvals, cards, lineage.",
    ),
    Entry("gates", "ghaf.registry.cli:gates", "Quality gates, for CI/CD pipelines."),
    Entry("users", "ghaf.security.cli:users", "Users (platform admins manage them)."),
    Entry(
        "groups",
        "ghaf.security.cli:groups",
        "Groups of users and service accounts; groups hold roles in projects.",
    ),
    Entry("tokens", "ghaf.security.cli:tokens", "Your API tokens."),
    Entry(
        "audit",
        "ghaf.security.audit.cli:audit",
        "Read, verify and export the tamper-evident audit trail.",
    ),
    Entry(
        "deploy",
        "ghaf.deployments.cli:deploy",
        "Deployments: named endpoints serving model variants (splits, shadows, rollbacks).",
    ),
)
