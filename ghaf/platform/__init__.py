"""What a domain plugs into: request plumbing for its router (``calls``, ``uploads``),
hot-route declarations, and the manifest type (``manifest``). Below every domain; at run
time it imports nothing above ``ghaf.core``."""
