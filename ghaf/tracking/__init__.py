"""Experiment tracking: experiments, runs, params, metrics, artifacts and lineage."""
