"""Schemathesis hooks for tests/security/test_fuzz.py (loaded by the fuzzer's process
through SCHEMATHESIS_HOOKS): how to send the two binary media types the API documents
besides octet-stream. The fuzzer generates their bodies as strings or bytes; the server
must answer whatever arrives with a documented problem, never a 500."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ghaf-pack", "application/vnd.apache.arrow.stream")
def _as_bytes(ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogatepass")
