"""API token secrets: ``ghaf_`` + 43 base64url characters (256 random bits).

The fixed prefix lets secret scanners (GitHub, gitleaks, trufflehog) recognise leaked
tokens. Only the SHA-256 hex digest of the whole token is stored.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

TOKEN_PREFIX = "ghaf_"  # noqa: S105 - a public prefix, not a secret
TOKEN_PATTERN = re.compile(r"ghaf_[A-Za-z0-9_-]{43}")


def generate_token() -> str:
    body = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return TOKEN_PREFIX + body


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_hint(token: str) -> str:
    """What lists show instead of the secret: the prefix and four characters."""
    return token[: len(TOKEN_PREFIX) + 4] + "..."


def looks_like_token(value: str) -> bool:
    return TOKEN_PATTERN.fullmatch(value) is not None
