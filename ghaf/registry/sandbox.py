"""Running a checker job (ghaf/registry/checker.py) in a child process with limits.

The child confines itself first (ghaf/registry/confine.py): it can read only the
interpreter's files, write only the job folder, and has no network. The server tells it
which paths must stay out of reach whatever the layout (:func:`protect`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from sqlalchemy.engine import make_url

from ghaf.core.errors import InvalidInput

if TYPE_CHECKING:
    from ghaf.core.settings import Settings

FILE_LIMIT_BYTES = 4 * 1024**3
CHECKER = Path(__file__).with_name("checker.py")

# Never readable by the child: each installation this process opened adds its own.
_PROTECTED: set[str] = set()


def protect(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Add ``paths`` to what no checker child may ever read (a folder: all inside it)."""
    _PROTECTED.update(os.path.realpath(os.fspath(p)) for p in paths)


def installation_paths(settings: Settings) -> list[Path]:
    """An installation's secrets and data: its home (database, master key, keyring,
    artifacts, config), and wherever settings moved any of them."""
    paths = [settings.home, settings.master_key_path, settings.keyring_path]
    paths += [settings.artifacts_dir]
    database = make_url(settings.resolved_database_url)
    if database.get_backend_name() == "sqlite" and database.database not in (None, "", ":memory:"):
        db = Path(database.database)
        paths += [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))]
    storage = urlparse(settings.resolved_storage_url)
    if storage.scheme == "file":
        paths.append(Path(unquote(storage.path)))
    if settings.tls_key is not None:
        paths.append(settings.tls_key)
    return paths


def protect_installation(settings: Settings) -> None:
    protect(installation_paths(settings))


def protected() -> list[str]:
    """What the child is told to keep out of reach: every registered installation, and
    the default home and ``GHAF_HOME``/``GHAF_CONFIG`` of this process."""
    defaults = [".ghaf", os.environ.get("GHAF_HOME"), os.environ.get("GHAF_CONFIG")]
    return sorted(_PROTECTED | {os.path.realpath(p) for p in defaults if p})


def _environment(folder: Path) -> dict[str, str]:
    """Only what an interpreter needs: no GHAF_* settings, keys or tokens."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    return keep | {
        "HOME": str(folder),
        "TMPDIR": str(folder),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "JOBLIB_MULTIPROCESSING": "0",  # no process pools (nor their /dev/shm) in the child
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run(job: dict[str, Any], *, folder: Path, timeout_s: float, what: str) -> dict[str, Any]:
    """Run ``job`` in a fresh interpreter inside ``folder``; its answer, or InvalidInput
    naming ``what`` failed (the model's error, a timeout, or a crash)."""
    # The child sets these limits and its confinement on itself before it reads the model
    # (a preexec_fn could deadlock: the server forks from a threaded process).
    job = job | {
        "cpu_limit_s": max(1, int(timeout_s * 2)),
        "file_limit_bytes": FILE_LIMIT_BYTES,
        "folder": str(folder),
        "protected": protected(),
    }
    try:
        done = subprocess.run(  # noqa: S603 - this interpreter, our own script
            # The checker runs as a script, not with -m: importing the ghaf package
            # loads numpy (and its threads) before the child could confine itself.
            [sys.executable, "-I", str(CHECKER)],
            input=json.dumps(job).encode(),
            capture_output=True,
            timeout=timeout_s,
            cwd=folder,
            env=_environment(folder),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidInput(
            f"{what}: the model did not finish within {timeout_s:g} s; refused", field="path"
        ) from None
    try:
        answer: dict[str, Any] = json.loads(done.stdout.decode() or "null")
    except ValueError:
        answer = {}
    if not answer:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        reason = " / ".join(tail) or f"exit status {done.returncode}"
        raise InvalidInput(f"{what}: the model process failed: {reason}", field="path")
    if not answer.get("ok"):
        raise InvalidInput(f"{what}: {answer.get('error')}", field="path")
    return answer
