"""Which tasks need a message again: Postgres is the truth, the broker may forget.

Two cases, both selected here as plain queries (no Celery):

- lost: `queued`, sent more than a lease ago and still not claimed. The message
  was probably lost (a broker restarted without persistence, a queue purged).
- orphaned: `running` with `lease_until` in the past. Its worker died.

Sending a task twice is harmless: the worker's claim skips a task another
worker holds under a live lease or that is finished, and a task has at most one
result row. `resend` sends and stamps `enqueued_at`, so a task is sent again at
most once per lease (or once per expired lease).
"""
from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from shared.celery_app import INFER_TASK
from shared.db import session_scope
from shared.models import Task, TaskStatus, Variant, utcnow


def lost_task_ids(db: str, lease_seconds: int, now: datetime | None = None,
                  queues: list[str] | None = None) -> list[int]:
    """Queued tasks sent more than `lease_seconds` ago (only on `queues` when given)."""
    cutoff = (now or utcnow()) - timedelta(seconds=lease_seconds)
    query = (sa.select(Task.id).join(Variant, Variant.id == Task.variant_id)
             .where(Task.status == TaskStatus.QUEUED, Task.enqueued_at < cutoff)
             .order_by(Task.id))
    if queues is not None:
        query = query.where(Variant.queue.in_(queues))
    with session_scope(db) as s:
        return list(s.execute(query).scalars())


def orphaned_task_ids(db: str, lease_seconds: int, now: datetime | None = None) -> list[int]:
    """Running tasks whose lease expired (their worker stopped without a word) and
    that were not re-sent since, or not within the last lease."""
    now = now or utcnow()
    with session_scope(db) as s:
        return list(s.execute(
            sa.select(Task.id)
            .where(Task.status == TaskStatus.RUNNING, Task.lease_until < now,
                   sa.or_(Task.enqueued_at.is_(None), Task.enqueued_at < Task.lease_until,
                          Task.enqueued_at < now - timedelta(seconds=lease_seconds)))
            .order_by(Task.id)).scalars())


def queue_of_tasks(db: str, task_ids: list[int]) -> dict[int, str]:
    """The worker queue of each task (its variant's)."""
    if not task_ids:
        return {}
    with session_scope(db) as s:
        return dict(s.execute(
            sa.select(Task.id, Variant.queue).join(Variant, Variant.id == Task.variant_id)
            .where(Task.id.in_(task_ids))).all())


def resend(db: str, app, task_ids: list[int]) -> int:
    """Send one inference message per task and stamp `enqueued_at`; how many were sent."""
    queues = queue_of_tasks(db, task_ids)
    if not queues:
        return 0
    # Pipelined publishing, as enqueue_pending does (bench fleet: one message at a time cost ~7 ms each).
    with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
        for task_id, queue in queues.items():
            app.send_task(INFER_TASK, args=[task_id], queue=queue, producer=producer)
    with session_scope(db) as s:
        s.execute(sa.update(Task).where(Task.id.in_(list(queues))).values(enqueued_at=utcnow()))
    return len(queues)
