"""The worker's reads and writes. Every write is idempotent: a redelivered task
never makes a second result row, and a finished task is never run again."""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from shared.db import get_engine, session_scope
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


def _autocommit(db: str):
    """A pooled connection in autocommit: each statement is its own transaction, so one
    statement costs one round trip (no BEGIN, no COMMIT; psycopg2 sends both separately)."""
    return get_engine(db).connect().execution_options(isolation_level="AUTOCOMMIT")


# The claim, one statement after `SET LOCAL synchronous_commit TO OFF` in the same implicit
# transaction (one simple-query string, one round trip): its commit does not wait for the WAL
# flush (2-4 ms on a VM disk, bench P1). Safe: a claim is visible to every worker at commit
# either way, and a result write, which is synchronous, flushes every WAL record before it,
# its claim included. A claim lost with a Postgres crash leaves the task queued (or under its
# old lease): the reconcile job re-sends it, and this attempt's fenced write is dropped with a
# log line.
_CLAIM = sa.text(
    "SET LOCAL synchronous_commit TO OFF; "
    "UPDATE task SET status = :running, attempts = attempts + 1, worker = :worker, "
    "lease_until = :lease_until, updated_at = :now "
    # queued, or running under a lease that expired (its worker died): a duplicate
    # message for a task another worker is running is ignored.
    "WHERE id = :id AND (status = :queued OR (status = :running AND lease_until < :now)) "
    "RETURNING experiment_id, variant_id, text, label, attempts")


def claim(db: str, task_id: int, worker: str, lease_s: int, known: dict | None = None) -> Job | None:
    """Mark the task running under a lease; None when it is finished, unknown or
    being run by another worker.

    `known` caches per variant what never changes after submit (model, params,
    the experiment's spec), so a task costs one UPDATE ... RETURNING: one round trip,
    committed without waiting for the WAL flush (_CLAIM says why that is safe).
    """
    known = {} if known is None else known
    now = utcnow()
    with _autocommit(db) as conn:
        row = conn.execute(_CLAIM, dict(id=task_id, worker=worker, now=now,
                                        lease_until=now + timedelta(seconds=lease_s),
                                        running=str(TaskStatus.RUNNING), queued=str(TaskStatus.QUEUED))).first()
        if row is None:
            held = conn.execute(sa.select(Task.lease_until).where(
                Task.id == task_id, Task.status == TaskStatus.RUNNING)).scalar()
            if held is not None:
                raise LeaseHeld(max(0.0, (held - utcnow()).total_seconds()))
            return None
        experiment_id, variant_id, text, label, attempts = row
        if variant_id not in known:
            conn.execute(sa.update(Experiment)
                         .where(Experiment.id == experiment_id, Experiment.status == ExperimentStatus.QUEUED)
                         .values(status=ExperimentStatus.RUNNING))
            v = conn.execute(sa.select(Variant.model, Variant.engine, Variant.variant, Variant.params,
                                       Experiment.spec)
                             .join(Experiment, Experiment.id == Variant.experiment_id)
                             .where(Variant.id == variant_id)).one()
            known[variant_id] = dict(model=v.model, engine=v.engine, variant=v.variant,
                                     params=dict(v.params), spec=dict(v.spec))
    return Job(task_id=task_id, experiment_id=experiment_id, variant_id=variant_id,
               text=text, label=label, attempt=attempts, **known[variant_id])


def _close_if_done(experiment_id: int):
    """The statement closing the experiment when no task is left to run (one row or none)."""
    # held: a later round of a stop-when-decided experiment; the scheduler releases or cancels it.
    still_open = sa.exists().where(Task.experiment_id == experiment_id,
                                   Task.status.in_([TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.HELD]))
    return (sa.update(Experiment)
            .where(Experiment.id == experiment_id, Experiment.finished_at.is_(None),
                   Experiment.status != ExperimentStatus.CANCELLED, ~still_open)
            .values(status=ExperimentStatus.DONE, finished_at=utcnow()))


def finish_experiment_if_done(db: str, experiment_id: int) -> bool:
    """Close the experiment when no task is left to run; True when this call closed it.

    Run after the task's own transaction has committed: two workers finishing
    the last two tasks at once would otherwise each still see the other's task
    open and neither would close the experiment. The `finished_at IS NULL`
    guard lets exactly one of them close it.
    """
    with _autocommit(db) as conn:
        return bool(conn.execute(_close_if_done(experiment_id)).rowcount)


def round_over(db: str, experiment_id: int) -> bool:
    """No task of the experiment is queued or running: a stop-when-decided round is over
    (the scheduler then looks and releases the next round or stops; scheduler.rounds)."""
    with session_scope(db) as s:
        return not s.execute(sa.select(sa.exists().where(
            Task.experiment_id == experiment_id,
            Task.status.in_([TaskStatus.QUEUED, TaskStatus.RUNNING])))).scalar()


class StaleAttempt(Exception):
    """This worker no longer holds the attempt it ran (its lease ran out and another worker
    took the task over, or the task was reset): its result is dropped, never counted."""


# The statuses in which the attempt that claimed a task may still write it: running, or
# cancelled while it ran ("an inference already running finishes and its result is kept").
_WRITABLE = (TaskStatus.RUNNING, TaskStatus.CANCELLED)


@functools.lru_cache(maxsize=32)
def _fenced_write(columns: tuple[str, ...], fenced: bool):
    """One statement: the task -> done if the worker still holds its attempt (status running
    or cancelled, task.worker and task.attempts its own), and the result row inserted only
    then (once per task). Selects (tasks marked done, rows inserted). Parameters: the result's
    `columns` as r_<column>, and f_task, f_worker, f_attempt, f_now. `fenced` False: no fence (a
    writer that never claimed, e.g. bench P6). Built once per column set (the worker's rows
    always have the same columns), compiled once by SQLAlchemy's cache."""
    # f_*: never a column's name (an UPDATE would take such a parameter into its SET).
    held = [Task.id == sa.bindparam("f_task")]
    if fenced:
        held += [Task.status.in_(_WRITABLE), Task.worker == sa.bindparam("f_worker"),
                 Task.attempts == sa.bindparam("f_attempt")]
    done = (sa.update(Task).where(*held)
            .values(status=TaskStatus.DONE, error=None, lease_until=None, updated_at=sa.bindparam("f_now"))
            .returning(Task.id).cte("done"))
    table = Result.__table__
    row = sa.select(*[sa.cast(sa.bindparam(f"r_{k}", type_=table.c[k].type), table.c[k].type)
                      for k in columns]).where(sa.exists(sa.select(done.c.id)))
    inserted = (insert(table).from_select(list(columns), row, include_defaults=False)
                .on_conflict_do_nothing(index_elements=["task_id"]).returning(table.c.id).cte("inserted"))
    return sa.select(sa.select(sa.func.count()).select_from(done).scalar_subquery(),
                     sa.select(sa.func.count()).select_from(inserted).scalar_subquery())


def _with_defaults(result: dict) -> dict:
    """The result with the column defaults of the columns it leaves out (an INSERT ... SELECT
    in a CTE gets none of SQLAlchemy's Python-side defaults)."""
    out = dict(result)
    for col in Result.__table__.c:
        if col.name not in out and col.default is not None and not col.primary_key:
            out[col.name] = col.default.arg(None) if col.default.is_callable else col.default.arg
    return out


def _stale_reason(conn, result: dict, attempt: int) -> str | None:
    """Why `attempt` of the task by `result["worker"]` may no longer write it, in one line;
    None when that attempt itself already wrote it (a retry after a commit whose answer was lost)."""
    now = conn.execute(sa.select(Task.status, Task.worker, Task.attempts)
                       .where(Task.id == result["task_id"])).first()
    if now is None:
        return f"task {result['task_id']} is no longer in the database"
    if (now.status, now.worker, now.attempts) == (TaskStatus.DONE, result["worker"], attempt):
        return None
    return (f"task {result['task_id']} is now {now.status}, attempt {now.attempts} by {now.worker} "
            f"(this was attempt {attempt} by {result['worker']}: its lease ran out while it was paused "
            f"or slow, and the task was taken over or reset)")


def write_result(db: str, result: dict, sustain_minutes: float | None = None,
                 attempt: int | None = None) -> bool:
    """Insert the result (once per task) and mark the task done, in one statement and one
    commit, then close the experiment if that was its last open task (a second statement on
    the same connection, after the commit: finish_experiment_if_done says why). Fenced by
    `attempt`: the write happens only while `result["worker"]` still holds that attempt of
    the task; otherwise nothing is written and StaleAttempt says why (a late result of a
    worker that was paused past its lease must neither duplicate nor overwrite the attempt
    that took over). In a sustained run (`sustain_minutes`, the spec's sustain.minutes) the
    last task of a pass writes the next pass in the same transaction while time is left
    (next_pass): no one ever sees the pass finished and the experiment done in between.

    Returns True when this write finished the experiment.
    """
    result = _with_defaults(result)
    stmt = _fenced_write(tuple(result), attempt is not None)
    params = {f"r_{k}": v for k, v in result.items()} | dict(
        f_task=result["task_id"], f_worker=result["worker"], f_attempt=attempt, f_now=utcnow())
    if sustain_minutes is None:
        with _autocommit(db) as conn:
            done, _ = conn.execute(stmt, params).one()
            if done:
                return bool(conn.execute(_close_if_done(result["experiment_id"])).rowcount)
            stale = None if attempt is None else _stale_reason(conn, result, attempt)
            if attempt is not None and stale is None:   # this attempt's own earlier write
                return bool(conn.execute(_close_if_done(result["experiment_id"])).rowcount)
        if stale:
            raise StaleAttempt(stale)
        return False
    with session_scope(db) as s:
        exp = s.get(Experiment, result["experiment_id"], with_for_update=True)
        done, _ = s.execute(stmt, params).one()
        if not done:
            stale = None if attempt is None else _stale_reason(s, result, attempt)
            if stale:
                raise StaleAttempt(stale)
            return False
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


def fail(db: str, task_id: int, experiment_id: int, reason: str, worker: str | None = None,
         attempt: int | None = None) -> bool:
    """Mark the task failed with a reason a person can act on (unless a result exists).
    With `worker` and `attempt`: only while that attempt still holds the task (running,
    task.worker and task.attempts its own); a stale attempt's failure is logged and dropped,
    it never flips the status of a task another worker took over."""
    held = [Task.id == task_id, Task.status != TaskStatus.DONE]
    if attempt is not None:
        held += [Task.status == TaskStatus.RUNNING, Task.worker == worker, Task.attempts == attempt]
    with session_scope(db) as s:
        failed = s.execute(sa.update(Task).where(*held)
                           .values(status=TaskStatus.FAILED, error=reason[:2000], lease_until=None,
                                   updated_at=utcnow())).rowcount
        if not failed and attempt is not None:
            log.warning("task %s: failure of a stale attempt dropped (%s): %s", task_id, reason.splitlines()[0],
                        _stale_reason(s, {"task_id": task_id, "worker": worker}, attempt) or "already done")
            return False
    extend_sustained(db, experiment_id)     # a failed last task of a pass ends the pass too
    return finish_experiment_if_done(db, experiment_id)


def release(db: str, task_id: int, reason: str, worker: str | None = None, attempt: int | None = None) -> None:
    """Give the task back to the queue (a retry is on its way); with `worker` and `attempt`,
    only while that attempt still holds it."""
    held = [Task.id == task_id, Task.status == TaskStatus.RUNNING]
    if attempt is not None:
        held += [Task.worker == worker, Task.attempts == attempt]
    with session_scope(db) as s:
        s.execute(sa.update(Task).where(*held)
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


def mark_offline(db: str, hostname: str, queue: str) -> None:
    """A worker that left (shut down after the task in hand): offline now, not after four
    missed heartbeats. worker_node has no stopped_at column, so its last heartbeat is set to
    the epoch (1970-01-01 UTC), older than any offline threshold; its next start
    (register_worker) sets a real one again."""
    with session_scope(db) as s:
        s.execute(sa.update(WorkerNode)
                  .where(WorkerNode.hostname == hostname, WorkerNode.queue == queue)
                  .values(last_heartbeat=sa.func.to_timestamp(0)))
