"""The scheduler service's Celery tasks, run by `greenctl scheduler` on the
`scheduler` queue (one at a time: solo pool), with Celery beat in the same
process sending `reconcile` every `reconcile_seconds` (shared.celery_app.beat_schedule).

- reconcile: send what Postgres says is waiting and the broker may not hold:
  never-sent tasks (in batches), lost ones, orphaned ones (scheduler.reconcile).
- enqueue_experiment: send an experiment's tasks in batches, so `greenctl
  submit` returns once its one transaction is written (scheduler.submit.enqueue_or_hand_off).
- advance_experiment: a round of a stop-when-decided experiment is over: look,
  then release the next round or stop (scheduler.rounds); every reconcile tries it too.

Every reconcile also stamps a key in the broker that says the service is alive
(scheduler.liveness); `submit` hands enqueueing over only while that key exists.
"""
from __future__ import annotations

import logging

from scheduler import reconcile as rec
from scheduler import rounds
from scheduler.liveness import broker_backlog, mark_alive
from scheduler.submit import enqueue_pending
from shared.celery_app import ADVANCE_TASK, ENQUEUE_TASK, RECONCILE_TASK, app, database_url, process_settings

log = logging.getLogger("greenctl.scheduler")


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
    # A round whose advance message was lost (or sent while no scheduler ran) is looked at here.
    for experiment_id in rounds.waiting_experiment_ids(db):
        try:
            rounds.advance(db, celery_app, experiment_id)
        except Exception:  # one experiment's bad look must not stop the reconcile of the others
            log.exception("experiment %s: looking at its finished round failed", experiment_id)
    return counts


@app.task(name=RECONCILE_TASK, ignore_result=True)
def reconcile_task() -> dict:
    return reconcile_once(database_url(), app, process_settings().lease_seconds)


@app.task(name=ENQUEUE_TASK, ignore_result=True)
def enqueue_experiment_task(experiment_id: int) -> int:
    """Send the never-sent tasks of one experiment, in batches of scheduler.submit.BATCH."""
    if isinstance(experiment_id, bool) or not isinstance(experiment_id, int) or experiment_id <= 0:
        raise ValueError(f"experiment id must be a positive integer, got {experiment_id!r}")
    return enqueue_pending(database_url(), app, experiment_id)



@app.task(name=ADVANCE_TASK, ignore_result=True)
def advance_experiment_task(experiment_id: int) -> str:
    """A round of a stop-when-decided experiment may be over: look, then release or stop."""
    if isinstance(experiment_id, bool) or not isinstance(experiment_id, int) or experiment_id <= 0:
        raise ValueError(f"experiment id must be a positive integer, got {experiment_id!r}")
    return rounds.advance(database_url(), app, experiment_id)
