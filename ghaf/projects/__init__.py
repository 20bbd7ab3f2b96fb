"""Projects (tenants), their members and roles, and their policies."""
