"""Running a checker job (ghaf/registry/checker.py) in a child process with limits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ghaf.core.errors import InvalidInput

FILE_LIMIT_BYTES = 4 * 1024**3


def _environment(folder: Path) -> dict[str, str]:
    """Only what an interpreter needs: no GHAF_* settings, keys or tokens."""
    keep = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
    return keep | {
        "HOME": str(folder),
        "TMPDIR": str(folder),
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def run(job: dict[str, Any], *, folder: Path, timeout_s: float, what: str) -> dict[str, Any]:
    """Run ``job`` in a fresh interpreter inside ``folder``; its answer, or InvalidInput
    naming ``what`` failed (the model's error, a timeout, or a crash)."""
    # The child sets these limits on itself before it reads the model (a preexec_fn
    # could deadlock: the server forks from a threaded process).
    job = job | {"cpu_limit_s": max(1, int(timeout_s * 2)), "file_limit_bytes": FILE_LIMIT_BYTES}
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-m", "ghaf.registry.checker"],
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
