"""The worker's reads and writes. Every write is idempotent: a redelivered task
never makes a second result row, and a finished task is never run again."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from shared.db import session_scope
from shared.models import Experiment, Result, Task, Variant, WorkerNode, utcnow
from shared.status import ExperimentStatus, TaskStatus

log = logging.getLogger("greenctl.worker")
T = TypeVar("T")
DB_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError)


def with_db_retry(write: Callable[..., T], *args, give_up_after_s: float = 900.0) -> T:
    """Run `write`, retrying with exponential backoff while Postgres is unreachable.

    A measurement already cost energy: while the database is away the worker
    holds it (and its unacked message) instead of dropping it.
    """
    delay, deadline = 0.5, time.monotonic() + give_up_after_s
    while True:
        try:
            return write(*args)
        except DB_DOWN as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable (%s); retrying in %.1f s", str(exc).splitlines()[0], delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


@dataclass(frozen=True)
class Job:
    """A claimed task with what is needed to run it."""
    task_id: int
    experiment_id: int
    variant_id: int
    text: str
    label: str
    attempt: int
    model: str
    engine: str
    variant: str
    params: dict
    spec: dict


class LeaseHeld(Exception):
    """Another worker runs this task under a live lease; ask again after it expires."""

    def __init__(self, seconds_left: float):
        super().__init__(f"task held for {seconds_left:.0f} s more")
        self.seconds_left = seconds_left


def claim(db: str, task_id: int, worker: str, lease_s: int, known: dict | None = None) -> Job | None:
    """Mark the task running under a lease; None when it is finished, unknown or
    being run by another worker.

    `known` caches per variant what never changes after submit (model, params,
    the experiment's spec), so a task costs one UPDATE ... RETURNING.
    """
    known = {} if known is None else known
    with session_scope(db) as s:
        row = s.execute(
            sa.update(Task)
            .where(Task.id == task_id,
                   # queued, or running under a lease that expired (its worker died):
                   # a duplicate message for a task another worker is running is ignored.
                   sa.or_(Task.status == TaskStatus.QUEUED,
                          sa.and_(Task.status == TaskStatus.RUNNING, Task.lease_until < utcnow())))
            .values(status=TaskStatus.RUNNING, attempts=Task.attempts + 1, worker=worker,
                    lease_until=utcnow() + timedelta(seconds=lease_s), updated_at=utcnow())
            .returning(Task.experiment_id, Task.variant_id, Task.text, Task.label, Task.attempts)
        ).first()
        if row is None:
            held = s.execute(sa.select(Task.lease_until).where(
                Task.id == task_id, Task.status == TaskStatus.RUNNING)).scalar()
            if held is not None:
                raise LeaseHeld(max(0.0, (held - utcnow()).total_seconds()))
            return None
        if row.variant_id not in known:
            variant = s.get(Variant, row.variant_id)
            s.execute(sa.update(Experiment)
                      .where(Experiment.id == row.experiment_id, Experiment.status == ExperimentStatus.QUEUED)
                      .values(status=ExperimentStatus.RUNNING))
            spec = s.execute(sa.select(Experiment.spec).where(Experiment.id == row.experiment_id)).scalar()
            known[row.variant_id] = dict(model=variant.model, engine=variant.engine,
                                         variant=variant.variant, params=dict(variant.params),
                                         spec=dict(spec))
    return Job(task_id=task_id, experiment_id=row.experiment_id, variant_id=row.variant_id,
               text=row.text, label=row.label, attempt=row.attempts, **known[row.variant_id])


def finish_experiment_if_done(db: str, experiment_id: int) -> bool:
    """Close the experiment when no task is left to run; True when this call closed it.

    Run after the task's own transaction has committed: two workers finishing
    the last two tasks at once would otherwise each still see the other's task
    open and neither would close the experiment. The `finished_at IS NULL`
    guard lets exactly one of them close it.
    """
    # held: a later round of a stop-when-decided experiment; the scheduler releases or cancels it.
    still_open = sa.exists().where(Task.experiment_id == experiment_id,
                                   Task.status.in_([TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.HELD]))
    with session_scope(db) as s:
        closed = s.execute(
            sa.update(Experiment)
            .where(Experiment.id == experiment_id, Experiment.finished_at.is_(None),
                   Experiment.status != ExperimentStatus.CANCELLED, ~still_open)
            .values(status=ExperimentStatus.DONE, finished_at=utcnow())
        ).rowcount
    return bool(closed)


def round_over(db: str, experiment_id: int) -> bool:
    """No task of the experiment is queued or running: a stop-when-decided round is over
    (the scheduler then looks and releases the next round or stops; scheduler.rounds)."""
    with session_scope(db) as s:
        return not s.execute(sa.select(sa.exists().where(
            Task.experiment_id == experiment_id,
            Task.status.in_([TaskStatus.QUEUED, TaskStatus.RUNNING])))).scalar()


def write_result(db: str, result: dict, sustain_minutes: float | None = None) -> bool:
    """Insert the result (once per task) and mark the task done. In a sustained run
    (`sustain_minutes`, the spec's sustain.minutes) the last task of a pass writes the next
    pass in the same transaction while time is left (next_pass): no one ever sees the pass
    finished and the experiment done in between.

    Returns True when this write finished the experiment.
    """
    with session_scope(db) as s:
        exp = (s.get(Experiment, result["experiment_id"], with_for_update=True)
               if sustain_minutes is not None else None)
        s.execute(insert(Result).values(**result).on_conflict_do_nothing(index_elements=["task_id"]))
        s.execute(sa.update(Task).where(Task.id == result["task_id"])
                  .values(status=TaskStatus.DONE, error=None, lease_until=None, updated_at=utcnow()))
        if exp is not None:
            next_pass(s, exp, sustain_minutes)
    return finish_experiment_if_done(db, result["experiment_id"])


def extend_sustained(db: str, experiment_id: int) -> int:
    """next_pass for an experiment whose spec has `sustain:` (after a failed task); how many written."""
    with session_scope(db) as s:
        exp = s.get(Experiment, experiment_id, with_for_update=True)
        minutes = ((exp.spec or {}).get("sustain") or {}).get("minutes") if exp else None
        return 0 if minutes is None else next_pass(s, exp, float(minutes))


def next_pass(s, exp: Experiment, minutes: float) -> int:
    """A sustained run (`sustain: {minutes: m}`): when no task is open and less than m minutes
    have passed since the first inference's window opened, write another pass of the sample
    set (the first pass's tasks as repeat max+1, queued, not yet sent; take_unsent sends them).
    How many tasks were written (0: a task still open, the run closed or cancelled, or the
    time is spent).

    The caller holds the experiment's row lock (taken before its own writes): of two
    workers finishing the last two tasks at once, the second sees the first's new pass
    open and writes none."""
    if exp.finished_at is not None or exp.status == ExperimentStatus.CANCELLED:
        return 0
    if s.execute(sa.select(sa.exists().where(
            Task.experiment_id == exp.id,
            Task.status.in_([TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.HELD])))).scalar():
        return 0
    started = s.execute(sa.select(sa.func.min(Result.window_started_at))
                        .where(Result.experiment_id == exp.id)).scalar()
    if started is None or (utcnow() - started).total_seconds() >= minutes * 60.0:
        return 0
    last = s.execute(sa.select(sa.func.max(Task.repeat)).where(Task.experiment_id == exp.id)).scalar()
    first = s.execute(sa.select(Task.variant_id, Task.sample_index, Task.text, Task.label)
                      .where(Task.experiment_id == exp.id, Task.repeat == 0)).all()
    rows = [dict(experiment_id=exp.id, variant_id=v, sample_index=i, repeat=last + 1, text=t,
                 label=lab, status=TaskStatus.QUEUED, attempts=0) for v, i, t, lab in first]
    if rows:
        s.execute(sa.insert(Task), rows)
        exp.n_tasks = exp.n_tasks + len(rows)
    return len(rows)


def take_unsent(db: str, experiment_id: int) -> list[tuple[int, str]]:
    """(task id, queue) of the experiment's queued tasks never sent, marked sent in the same
    statement (so two workers never both send one), in the order enqueue_pending sends them."""
    with session_scope(db) as s:
        ids = s.execute(sa.update(Task)
                        .where(Task.experiment_id == experiment_id, Task.status == TaskStatus.QUEUED,
                               Task.enqueued_at.is_(None))
                        .values(enqueued_at=utcnow()).returning(Task.id)).scalars().all()
        if not ids:
            return []
        return [(tid, q) for tid, q in s.execute(
            sa.select(Task.id, Variant.queue).join(Variant, Variant.id == Task.variant_id)
            .where(Task.id.in_(ids)).order_by(Task.sample_index, Task.repeat, Task.variant_id)).all()]


def fail(db: str, task_id: int, experiment_id: int, reason: str) -> bool:
    """Mark the task failed with a reason a person can act on (unless a result exists)."""
    with session_scope(db) as s:
        s.execute(sa.update(Task)
                  .where(Task.id == task_id, Task.status != TaskStatus.DONE)
                  .values(status=TaskStatus.FAILED, error=reason[:2000], lease_until=None,
                          updated_at=utcnow()))
    extend_sustained(db, experiment_id)     # a failed last task of a pass ends the pass too
    return finish_experiment_if_done(db, experiment_id)


def release(db: str, task_id: int, reason: str) -> None:
    """Give the task back to the queue (a retry is on its way)."""
    with session_scope(db) as s:
        s.execute(sa.update(Task).where(Task.id == task_id, Task.status == TaskStatus.RUNNING)
                  .values(status=TaskStatus.QUEUED, error=reason[:2000], lease_until=None,
                          updated_at=utcnow()))


def record_model_info(db: str, variant_id: int, info: dict) -> None:
    with session_scope(db) as s:
        s.execute(sa.update(Variant).where(Variant.id == variant_id, Variant.model_info.is_(None))
                  .values(model_info=info))


def register_worker(db: str, node: dict) -> None:
    """Insert or refresh this worker's row (hostname, queue) with its hardware profile."""
    with session_scope(db) as s:
        values = node | {"last_heartbeat": utcnow(), "started_at": utcnow()}
        stmt = insert(WorkerNode).values(**values)
        s.execute(stmt.on_conflict_do_update(
            constraint="uq_worker_host_queue",
            set_={k: stmt.excluded[k] for k in values if k not in ("hostname", "queue")}))


def heartbeat(db: str, hostname: str, queue: str, task_id: int | None = None,
              worker: str = "", lease_s: int = 0, models: list[str] | None = None) -> None:
    """Say this worker is alive, and extend the lease of the task it is running
    (a long inference is not handed to another worker while this one lives);
    `models` (what it can run now) replaces the stored list unless None."""
    with session_scope(db) as s:
        s.execute(sa.update(WorkerNode)
                  .where(WorkerNode.hostname == hostname, WorkerNode.queue == queue)
                  .values(last_heartbeat=utcnow(), **({"models": models} if models is not None else {})))
        if task_id is not None:
            s.execute(sa.update(Task)
                      .where(Task.id == task_id, Task.status == TaskStatus.RUNNING, Task.worker == worker)
                      .values(lease_until=utcnow() + timedelta(seconds=lease_s)))


def set_idle_watts(db: str, hostname: str, queue: str, watts: float) -> None:
    with session_scope(db) as s:
        s.execute(sa.update(WorkerNode)
                  .where(WorkerNode.hostname == hostname, WorkerNode.queue == queue)
                  .values(idle_watts=watts))


def idle_watts(db: str, hostname: str) -> float | None:
    """The newest idle calibration of this host (any queue), if one was made."""
    with session_scope(db) as s:
        return s.execute(sa.select(WorkerNode.idle_watts)
                         .where(WorkerNode.hostname == hostname, WorkerNode.idle_watts.is_not(None))
                         .order_by(WorkerNode.last_heartbeat.desc()).limit(1)).scalar()


def task_status(db: str, task_id: int) -> str | None:
    """A task's status as stored (None when there is no such task)."""
    with session_scope(db) as s:
        return s.execute(sa.select(Task.status).where(Task.id == task_id)).scalar()


def good_fits(db: str, hardware_profile: str) -> dict[str, tuple[int, dict]]:
    """target -> (id, fit JSON) of the newest good estimator fit of a hardware profile."""
    from shared.models import EstimatorFit

    out: dict[str, tuple[int, dict]] = {}
    with session_scope(db) as s:
        rows = s.execute(sa.select(EstimatorFit.target, EstimatorFit.id, EstimatorFit.model)
                         .where(EstimatorFit.hardware_profile == hardware_profile, EstimatorFit.is_good.is_(True))
                         .order_by(EstimatorFit.version.desc())).all()
    for target, fit_id, model in rows:
        out.setdefault(target, (fit_id, model))
    return out


def variant_model_info(db: str, variant_id: int) -> dict:
    """What the worker recorded when it loaded the variant (parameter_count, bits_per_weight...)."""
    with session_scope(db) as s:
        return dict(s.execute(sa.select(Variant.model_info).where(Variant.id == variant_id)).scalar() or {})
