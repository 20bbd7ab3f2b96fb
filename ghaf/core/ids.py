"""Identifiers: UUIDv7 strings, time-ordered so that indexes stay append-mostly."""

from __future__ import annotations

import itertools
import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_id() -> str:
    """A UUIDv7 string (RFC 9562), monotonic within this process."""
    global _last_ms, _counter
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:  # rand_a exhausted inside one millisecond: borrow the next
                _last_ms += 1
                _counter = 0
            now_ms = _last_ms
        else:
            _last_ms = now_ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
        counter = _counter
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (now_ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand_b
    h = f"{value:032x}"  # what str(uuid.UUID(int=value)) gives, without building the object
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_request_prefix: str | None = None
_request_counter = itertools.count(1)


def _forget_request_prefix() -> None:
    global _request_prefix
    _request_prefix = None


# A forked child draws its own prefix (a getpid() on every id was a syscall a request).
os.register_at_fork(after_in_child=_forget_request_prefix)


def new_request_id() -> str:
    """A request id, unique across processes: a random per-process prefix and a counter.

    Every request gets one, and it is no secret and no database key, so it skips
    :func:`new_id`'s two ``getrandom`` calls (which showed as 9% of a cached read's
    server time in a profile of bench/registry.py).
    """
    global _request_prefix
    if _request_prefix is None:  # first use, or the first in a forked child
        _request_prefix = os.urandom(6).hex()
    return f"{_request_prefix}-{next(_request_counter):x}"
