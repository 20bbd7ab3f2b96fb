"""A CPU burner beside a benchmark: one busy process per core, so that both sides of a
comparison run on a machine whose cores are all taken (as on a loaded CI runner)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_SPIN = "while True: pass"


@contextmanager
def burning(processes: int | None = None) -> Iterator[int]:
    """Keep ``processes`` (default: one per CPU) busy-looping Python processes running
    for the block; yields how many run."""
    count = processes or os.cpu_count() or 1
    burners = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(count)]
    try:
        time.sleep(0.5)  # let them reach the CPU before the timed work starts
        yield count
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()
