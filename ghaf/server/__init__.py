"""The FastAPI application: mounts each domain's router, auth, problems, metrics."""
