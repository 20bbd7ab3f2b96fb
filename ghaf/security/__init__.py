"""Identities, tokens, groups, RBAC policy, the request context, audit and keys."""
