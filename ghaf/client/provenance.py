"""Where a version came from: the command line, the host, and the git commit if any."""

from __future__ import annotations

import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def _git(args: list[str], cwd: Path) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        result = subprocess.run(  # noqa: S603 - fixed git arguments, no user input
            [git, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def capture(source: Path | None = None) -> dict[str, Any]:
    """Provenance of work done now, in the git repository holding ``source`` (or cwd)."""
    where = (
        source
        if source is not None and source.is_dir()
        else source.parent
        if source is not None
        else Path.cwd()
    )
    out: dict[str, Any] = {
        "command": shlex.join(sys.argv),
        "host": platform.node(),
        "python": platform.python_version(),
    }
    commit = _git(["rev-parse", "HEAD"], where) if where.exists() else None
    if commit:
        status = _git(["status", "--porcelain"], where)
        out["git_commit"] = commit
        out["git_dirty"] = bool(status)
    return out
