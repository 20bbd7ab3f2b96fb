"""Periodic background work: domains declare tasks, one scheduler per server runs them."""

from ghaf.platform.manifest import PeriodicTask
from ghaf.tasks.scheduler import Scheduler

__all__ = ["PeriodicTask", "Scheduler"]
