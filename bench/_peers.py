"""The peer tools benchmarks compare against, each in its own venv under `.bench/`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peer_venv(name: str) -> Path:
    return ROOT / ".bench" / name


def ensure_peer(name: str, *, install: bool) -> bool:
    """Whether `.bench/<name>` has the peer (pip package ``name``), installing it once
    when ``install`` (never a project dependency)."""
    venv = peer_venv(name)
    if (venv / "bin" / name).exists():
        return True
    if not install:
        return False
    print(f"installing {name} into {venv} (once)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", name], check=True)
    return True
