"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import signal
import sys


def die_with_parent() -> None:
    """In a child before exec (``preexec_fn``; Linux): SIGTERM when the parent dies,
    even by SIGKILL, so no replica outlives the server holding its key and no server
    outlives the demo, test or benchmark that started it. Elsewhere, nothing."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
