"""Deployments: named endpoints serving model variants, with splits, shadows, canaries
and A/B tests."""
