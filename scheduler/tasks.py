"""The scheduler service's Celery tasks, run by `greenctl scheduler` on the
`scheduler` queue (one at a time: solo pool), with Celery beat in the same
process sending `reconcile` every RECONCILE_SECONDS (shared.celery_app.BEAT_SCHEDULE).

- reconcile: send what Postgres says is waiting and the broker may not hold:
  never-sent tasks (in batches), lost ones, orphaned ones (scheduler.reconcile).
- enqueue_experiment: send an experiment's tasks in batches, so `greenctl
  submit` returns once its one transaction is written (scheduler.submit.enqueue_or_hand_off).

Every reconcile also stamps a key in the broker that says the service is alive;
`submit` hands enqueueing over only while that key exists.
"""
from __future__ import annotations

import logging
import time

from scheduler import reconcile as rec
from scheduler.submit import enqueue_pending
from shared.celery_app import RECONCILE_SECONDS, RECONCILE_TASK, app, database_url
from shared.config import Settings

log = logging.getLogger("greenctl.scheduler")

ENQUEUE_TASK = "greenctl.scheduler.enqueue_experiment"
# The service counts as alive for three missed reconciles.
ALIVE_KEY = "greenctl:scheduler:alive"
ALIVE_TTL_SECONDS = int(3 * RECONCILE_SECONDS)


def _redis(conn):
    """The Redis client under a kombu connection, or None on another transport."""
    return getattr(conn.default_channel, "client", None)


def mark_alive(celery_app) -> None:
    with celery_app.connection_for_write() as conn:
        client = _redis(conn)
        if client is not None:
            client.set(ALIVE_KEY, str(time.time()), ex=ALIVE_TTL_SECONDS)


def last_seen(celery_app) -> float | None:
    """Unix time of the scheduler's last reconcile, None when no scheduler is alive."""
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
            client = _redis(conn)
            value = client.get(ALIVE_KEY) if client is not None else None
    except Exception:  # no broker: no scheduler either; the caller enqueues itself
        return None
    return float(value) if value else None


def broker_backlog(celery_app, queue: str) -> int:
    """Messages waiting in `queue` (0 when the broker has no such queue)."""
    with celery_app.connection_for_write() as conn:
        try:
            return conn.default_channel.queue_declare(queue=queue, passive=True).message_count
        except Exception:  # a passive declare of an empty Redis queue fails: nothing waits
            return 0


def reconcile_once(db: str, celery_app, lease_seconds: int) -> dict:
    """One pass; returns the counts sent, by reason."""
    mark_alive(celery_app)
    # A lost message is only re-sent once its queue has drained (looked at before
    # this pass sends anything): while messages wait, a long queue rather than a
    # loss may be why a task is unclaimed, and re-sending every lease would pile
    # up duplicates.
    lost_ids = rec.lost_task_ids(db, lease_seconds)
    queue_of = rec.queue_of_tasks(db, lost_ids)
    drained = {q for q in set(queue_of.values()) if broker_backlog(celery_app, q) == 0}
    pending = enqueue_pending(db, celery_app)
    orphaned = rec.resend(db, celery_app, rec.orphaned_task_ids(db, lease_seconds))
    lost = rec.resend(db, celery_app, [i for i in lost_ids if queue_of.get(i) in drained])
    counts = {"pending": pending, "orphaned": orphaned, "lost": lost}
    if any(counts.values()):
        log.info("reconcile sent %s", counts)
    return counts


@app.task(name=RECONCILE_TASK, ignore_result=True)
def reconcile_task() -> dict:
    return reconcile_once(database_url(), app, Settings.from_env().lease_seconds)


@app.task(name=ENQUEUE_TASK, ignore_result=True)
def enqueue_experiment_task(experiment_id: int) -> int:
    """Send the never-sent tasks of one experiment, in batches of scheduler.submit.BATCH."""
    if isinstance(experiment_id, bool) or not isinstance(experiment_id, int) or experiment_id <= 0:
        raise ValueError(f"experiment id must be a positive integer, got {experiment_id!r}")
    return enqueue_pending(database_url(), app, experiment_id)

