"""The Celery app shared by the scheduler, the workers and the estimator.

Messages are JSON only. Results do not go through Celery: workers write them
to Postgres, the source of truth, so no result backend is configured.
"""
from __future__ import annotations

from celery import Celery

from shared.config import Settings

INFER_TASK = "greenctl.infer"
REFIT_TASK = "greenctl.estimator.refit"
ESTIMATOR_QUEUE = "estimator"
SCHEDULER_QUEUE = "scheduler"
RECONCILE_TASK = "greenctl.scheduler.reconcile"
# Sent by the worker that finished a round of a stop-when-decided experiment (scheduler.rounds).
ADVANCE_TASK = "greenctl.scheduler.advance_experiment"
ENQUEUE_TASK = "greenctl.scheduler.enqueue_experiment"


def beat_schedule(reconcile_seconds: float) -> dict:
    """Celery beat, embedded in `greenctl scheduler`: Postgres is the truth, so every
    `reconcile_seconds` the scheduler re-sends what the broker may have lost."""
    return {
        "greenctl-reconcile": {
            "task": RECONCILE_TASK, "schedule": reconcile_seconds,
            # A pass no one ran in time is dropped: the next one does the same work.
            "options": {"queue": SCHEDULER_QUEUE, "expires": reconcile_seconds * 0.9},
        },
    }


app = Celery("greenctl")


def celery_settings(broker_url: str, lease_seconds: int, reconcile_seconds: float = 30.0) -> dict:
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
        # Two messages held, one executed (solo pool): the next message is already here when a
        # task ends instead of a broker round trip after its ack (bench P1). A prefetched
        # message is not an inference in flight: it is claimed, leased and measured only when
        # it runs; if this worker dies, acks_late redelivers it (visibility timeout) and the
        # reconcile job re-sends what stays queued past a lease.
        worker_prefetch_multiplier=2,
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
        beat_schedule=beat_schedule(reconcile_seconds),
        # greenctl's own: how often the scheduler reconciles (its liveness key lasts three passes).
        greenctl_reconcile_seconds=reconcile_seconds,
    )


def configure(broker_url: str, database_url: str | None, settings: Settings | None = None) -> Celery:
    """Point the app at the broker; remember the database and settings for tasks run in this process.

    Called once at a process's start (a command, `greenctl worker`, a service):
    tasks then read `database_url()` and `process_settings()`, never the environment.
    """
    settings = settings or Settings.from_env()
    app.conf.update(celery_settings(broker_url, settings.lease_seconds, settings.reconcile_seconds))
    app.conf.update(greenctl_database_url=database_url, greenctl_settings=settings)
    return app


def process_settings() -> Settings:
    """The settings `configure` was given; read from the environment once for a process
    started by plain `celery` (its entry module is the edge)."""
    settings = app.conf.get("greenctl_settings")
    if settings is None:
        settings = Settings.from_env()
        app.conf.update(greenctl_settings=settings)
    return settings


def database_url() -> str:
    """The database URL of this process, given to `configure` at its start."""
    url = app.conf.get("greenctl_database_url") or process_settings().database_url
    if not url:
        raise RuntimeError("no database URL: start workers with `greenctl worker`, or set GREENCTL_DATABASE_URL")
    return url
