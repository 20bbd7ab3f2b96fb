"""What ``GET /admin/tasks`` and ``ghaf admin tasks`` show of each periodic task."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class TaskOut(BaseModel):
    name: str
    interval_s: float
    # "running" while a holder's lease is live; otherwise the last run's outcome.
    state: Literal["never run", "running", "ok", "error"]
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_duration_s: float | None = None
    last_message: str | None = None
    # When the task is next due (it runs at the first scheduler tick after it); None
    # while running. A task that never ran is due now.
    next_run_at: datetime | None = None
    holder: str | None = None
