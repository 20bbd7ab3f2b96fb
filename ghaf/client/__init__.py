"""The Python SDK: talks to a ghaf server over HTTP with a token."""

from ghaf.client.client import Client

__all__ = ["Client"]
