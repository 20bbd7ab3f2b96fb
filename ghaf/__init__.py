"""ghaf: a secure-by-default MLOps platform.

The public SDK entry point is :class:`ghaf.Client`::

    import ghaf
    client = ghaf.Client(url="http://127.0.0.1:8080", token="ghaf_...")
    client.projects.create("risk")
"""

from ghaf.client.client import Client
from ghaf.core.errors import GhafError

__version__ = "0.1.0"

__all__ = ["Client", "GhafError", "__version__"]
