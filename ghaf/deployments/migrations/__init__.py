"""Alembic revision scripts of the deployments domain (ghaf/core/migrate.py joins them)."""
