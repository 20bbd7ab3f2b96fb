"""Model registry: registered models, versions and aliases, safe model formats, model
cards, lineage, four-eyes approvals and quality gates (see docs/registry.md)."""
