"""Task and experiment statuses: the words stored in Postgres and shown to users.

Pure vocabulary (stdlib only). Members are `str`, so they compare equal to the
stored text and serialize to JSON as themselves.
"""
from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """One task: one sample x variant x repeat."""
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Written but held back for a later round of a stop-when-decided experiment: never sent,
    # never claimed; released as queued, or cancelled when the experiment stops.
    HELD = "held"


# A task in one of these states will not run again unless resumed.
TASK_FINISHED: tuple[TaskStatus, ...] = (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED)


class ExperimentStatus(StrEnum):
    """One experiment: queued until a worker claims its first task, done when every task finished."""
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
