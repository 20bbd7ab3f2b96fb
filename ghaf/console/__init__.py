"""Output for people and scripts that every domain's CLI group uses (below the domains)."""
