"""Is the scheduler service alive, and what waits in a queue: what the broker says.

Every reconcile pass stamps ALIVE_KEY in the broker (`mark_alive`); `submit`
hands enqueueing over to the service only while that key exists (`last_seen`).
"""
from __future__ import annotations

import time

# The service counts as alive for three missed reconciles.
ALIVE_KEY = "greenctl:scheduler:alive"
MISSED_PASSES = 3


def _redis(conn):
    """The Redis client under a kombu connection, or None on another transport."""
    return getattr(conn.default_channel, "client", None)


def mark_alive(celery_app) -> None:
    with celery_app.connection_for_write() as conn:
        client = _redis(conn)
        if client is not None:
            client.set(ALIVE_KEY, str(time.time()),
                       ex=int(MISSED_PASSES * celery_app.conf.get("greenctl_reconcile_seconds", 30.0)))


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
