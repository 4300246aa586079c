"""The Celery app shared by the scheduler, the workers and the estimator.

Messages are JSON only. Results do not go through Celery: workers write them
to Postgres, the source of truth, so no result backend is configured.
"""
from __future__ import annotations

import os

from celery import Celery

from shared.config import Settings

INFER_TASK = "greenctl.infer"
REFIT_TASK = "greenctl.estimator.refit"
ESTIMATOR_QUEUE = "estimator"
SCHEDULER_QUEUE = "scheduler"
RECONCILE_TASK = "greenctl.scheduler.reconcile"
# Seconds between reconcile passes of the scheduler service (tests shorten it).
RECONCILE_SECONDS = float(os.environ.get("GREENCTL_RECONCILE_SECONDS") or 30.0)

# Celery beat, embedded in `greenctl scheduler`: Postgres is the truth, so every
# RECONCILE_SECONDS the scheduler re-sends what the broker may have lost.
BEAT_SCHEDULE = {
    "greenctl-reconcile": {
        "task": RECONCILE_TASK, "schedule": RECONCILE_SECONDS,
        # A pass no one ran in time is dropped: the next one does the same work.
        "options": {"queue": SCHEDULER_QUEUE, "expires": RECONCILE_SECONDS * 0.9},
    },
}

app = Celery("greenctl")


def celery_settings(broker_url: str, lease_seconds: int) -> dict:
    return dict(
        broker_url=broker_url,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        # Ack after the result row is written: a worker killed mid-task leaves the
        # message to be redelivered, and the unique result row absorbs duplicates.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # One inference at a time per host: energy is measured for the whole machine.
        worker_concurrency=1,
        # Redelivery after the lease: the same number the reconcile job uses.
        broker_transport_options={"visibility_timeout": lease_seconds},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # Off by default: 1 ms per task (bench P1). Flower turns worker events on by remote
        # control when it runs; `greenctl worker --events` sets them from the start.
        worker_send_task_events=False,
        task_send_sent_event=False,
        include=["worker.tasks", "estimator.tasks", "scheduler.tasks"],
        beat_schedule=BEAT_SCHEDULE,
    )


def configure(broker_url: str, database_url: str, settings: Settings | None = None) -> Celery:
    """Point the app at the broker; remember the database for tasks run in this process."""
    settings = settings or Settings.from_env()
    app.conf.update(celery_settings(broker_url, settings.lease_seconds))
    os.environ["GREENCTL_DATABASE_URL"] = database_url
    os.environ["GREENCTL_BROKER_URL"] = broker_url
    return app


def database_url() -> str:
    """The database URL of this process, set by `configure` (workers) or the environment."""
    url = os.environ.get("GREENCTL_DATABASE_URL")
    if not url:
        raise RuntimeError("GREENCTL_DATABASE_URL is not set: start workers with `greenctl worker`")
    return url
