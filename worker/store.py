"""The worker's reads and writes. Every write is idempotent: a redelivered task
never makes a second result row, and a finished task is never run again."""
from __future__ import annotations

import functools
import logging
import threading
import time
from contextlib import contextmanager
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


_held = threading.local()


@contextmanager
def _own_connection(db: str):
    """The calling thread's own autocommit connection to `db`, kept from one task to the next:
    the claim and the write of a task then cost one round trip each, without a pool checkout
    and its pre-ping (bench P1). On any error the connection is closed and forgotten (a
    multi-statement write that failed may leave its transaction open; Postgres may have
    restarted), and the next call opens a new one."""
    conns = _held.__dict__.setdefault("conns", {})
    conn = conns.get(db)
    if conn is None:
        conn = conns[db] = _autocommit(db)
    try:
        yield conn
    except BaseException:
        conns.pop(db, None)
        try:
            conn.invalidate()
            conn.close()
        except Exception:  # already broken: nothing left to close
            pass
        raise


# The claim, one statement after `SET LOCAL synchronous_commit TO OFF` in the same implicit
# transaction (one simple-query string, one round trip): its commit does not wait for the WAL
# flush (2-4 ms on a VM disk, bench P1). Safe: a claim is visible to every worker at commit
# either way, and a result write, which is synchronous, flushes every WAL record before it,
# its claim included. A claim lost with a Postgres crash leaves the task queued (or under its
# old lease): the reconcile job re-sends it, and this attempt's fenced write is dropped with a
# log line. Sent as the driver's SQL (no statement to compile per task).
_CLAIM = (
    "SET LOCAL synchronous_commit TO OFF; "
    "UPDATE task SET status = %(running)s, attempts = attempts + 1, worker = %(worker)s, "
    "lease_until = %(lease_until)s, updated_at = %(now)s "
    # queued, or running under a lease that expired (its worker died): a duplicate
    # message for a task another worker is running is ignored.
    "WHERE id = %(id)s AND (status = %(queued)s OR (status = %(running)s AND lease_until < %(now)s)) "
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
    with _own_connection(db) as conn:
        row = conn.exec_driver_sql(_CLAIM, dict(id=task_id, worker=worker, now=now,
                                                lease_until=now + timedelta(seconds=lease_s),
                                                running=str(TaskStatus.RUNNING),
                                                queued=str(TaskStatus.QUEUED))).first()
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


def finish_experiment_if_done(db: str, experiment_id: int) -> bool:
    """Close the experiment when no task is left to run; True when this call closed it.

    Run after the task's own transaction has committed: two workers finishing
    the last two tasks at once would otherwise each still see the other's task
    open and neither would close the experiment. The `finished_at IS NULL`
    guard lets exactly one of them close it.
    """
    with _autocommit(db) as conn:
        return bool(conn.exec_driver_sql(_closing(), dict(f_experiment=experiment_id, f_now=utcnow())).rowcount)


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


_OPEN = (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.HELD)


def _quoted(values) -> str:
    return ", ".join(f"'{v}'" for v in values)   # our own StrEnum words, never user input


def _held_by(fenced: bool) -> str:
    """The fence (driver SQL on table task): the writing attempt still holds the task."""
    return (" AND worker = %(f_worker)s AND attempts = %(f_attempt)s" if fenced else "")


@functools.lru_cache(maxsize=32)
def _fenced_write(columns: tuple[str, ...], fenced: bool) -> str:
    """One statement (driver SQL): the task -> done if the worker still holds its attempt (status
    running or cancelled, task.worker and task.attempts its own), and the result row inserted
    only then (once per task). Selects (tasks marked done, rows inserted). Parameters: the
    result's `columns` as r_<column>, and f_task, f_worker, f_attempt, f_now. `fenced` False: no
    fence (a writer that never claimed, e.g. bench P6). Built once per column set (the
    worker's rows always have the same columns); column types from the model (shared.models)."""
    from sqlalchemy.dialects import postgresql

    types = {c.name: c.type.compile(dialect=postgresql.dialect()) for c in Result.__table__.c}
    writable = f" AND status IN ({_quoted(_WRITABLE)})" if fenced else ""
    return (
        f"WITH done AS (UPDATE task SET status = '{TaskStatus.DONE}', error = NULL, lease_until = NULL, "
        f"updated_at = %(f_now)s WHERE id = %(f_task)s{writable}{_held_by(fenced)} RETURNING id), "
        f"inserted AS (INSERT INTO result ({', '.join(columns)}) "
        f"SELECT {', '.join(f'%(r_{k})s::{types[k]}' for k in columns)} WHERE EXISTS (SELECT 1 FROM done) "
        f"ON CONFLICT (task_id) DO NOTHING RETURNING id) "
        f"SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM inserted)")


def _closing(also: str = "") -> str:
    """The statement (driver SQL) closing experiment %(f_experiment)s at %(f_now)s when no task
    of it is left to run, and `also` (more conditions) holds; it returns the closed row's id.
    Held tasks are left to run: a later round of a stop-when-decided experiment, which the
    scheduler releases or cancels."""
    return (f"UPDATE experiment SET status = '{ExperimentStatus.DONE}', finished_at = %(f_now)s "
            f"WHERE id = %(f_experiment)s AND finished_at IS NULL AND status <> '{ExperimentStatus.CANCELLED}'{also} "
            f"AND NOT EXISTS (SELECT 1 FROM task WHERE experiment_id = %(f_experiment)s "
            f"AND status IN ({_quoted(_OPEN)})) RETURNING id")


@functools.lru_cache(maxsize=32)
def _write_and_close(columns: tuple[str, ...], fenced: bool) -> str:
    """The write and the close check in one simple-query string (one round trip): BEGIN ...
    COMMIT around the write, so it commits (synchronously) before the close statement runs;
    the answer is that statement's row (_close_and_look)."""
    return f"BEGIN; {_fenced_write(columns, fenced)}; COMMIT; {_close_and_look(fenced)}"


def _close_and_look(fenced: bool) -> str:
    """The statement after the write's commit (driver SQL): close the experiment if the task
    is done by the writing attempt and no task of the experiment is left to run; select the
    task's status, worker and attempts as they are now and whether this statement closed the
    experiment. (After the commit, not in the write's transaction: finish_experiment_if_done
    says why.) Parameters: f_task, f_worker, f_attempt, f_now, f_experiment."""
    ours = f" AND EXISTS (SELECT 1 FROM task WHERE id = %(f_task)s AND status = '{TaskStatus.DONE}'{_held_by(fenced)})"
    return (f"WITH closed AS ({_closing(ours)}) "
            f"SELECT status, worker, attempts, (SELECT count(*) FROM closed) FROM task WHERE id = %(f_task)s")


def _with_defaults(result: dict) -> dict:
    """The result with the column defaults of the columns it leaves out (an INSERT ... SELECT
    in a CTE gets none of SQLAlchemy's Python-side defaults)."""
    out = dict(result)
    for col in Result.__table__.c:
        if col.name not in out and col.default is not None and not col.primary_key:
            out[col.name] = col.default.arg(None) if col.default.is_callable else col.default.arg
    return out


def _stale_message(task_id: int, worker: str, attempt: int, now) -> str | None:
    """Why `attempt` of the task by `worker` may no longer write it, in one line, from the task's
    (status, worker, attempts) `now` (None: no such task); None when that attempt itself
    wrote it (e.g. a retry after a commit whose answer was lost)."""
    if now is None:
        return f"task {task_id} is no longer in the database"
    status, by, attempts = now
    if (status, by, attempts) == (TaskStatus.DONE, worker, attempt):
        return None
    return (f"task {task_id} is now {status}, attempt {attempts} by {by} "
            f"(this was attempt {attempt} by {worker}: its lease ran out while it was paused "
            f"or slow, and the task was taken over or reset)")


def _stale_reason(conn, result: dict, attempt: int) -> str | None:
    """_stale_message, reading the task on `conn`."""
    now = conn.execute(sa.select(Task.status, Task.worker, Task.attempts)
                       .where(Task.id == result["task_id"])).first()
    return _stale_message(result["task_id"], result["worker"], attempt, None if now is None else tuple(now))


def write_result(db: str, result: dict, sustain_minutes: float | None = None,
                 attempt: int | None = None) -> bool:
    """Insert the result (once per task) and mark the task done, in one statement and one
    commit, then close the experiment if that was its last open task (a second statement
    after the commit: finish_experiment_if_done says why), all in one round trip on this
    thread's own connection. Fenced by `attempt`: the write happens only while
    `result["worker"]` still holds that attempt of the task; otherwise nothing is written and
    StaleAttempt says why (a late result of a worker that was paused past its lease must
    neither duplicate nor overwrite the attempt that took over). In a sustained run
    (`sustain_minutes`, the spec's sustain.minutes) the last task of a pass writes the next
    pass in the same transaction while time is left (next_pass): no one ever sees the pass
    finished and the experiment done in between.

    Returns True when this write finished the experiment.
    """
    result = _with_defaults(result)
    fenced = attempt is not None
    params = {f"r_{k}": v for k, v in result.items()} | dict(
        f_task=result["task_id"], f_worker=result["worker"], f_attempt=attempt, f_now=utcnow(),
        f_experiment=result["experiment_id"])
    if sustain_minutes is None:
        with _own_connection(db) as conn:
            now = conn.exec_driver_sql(_write_and_close(tuple(result), fenced), params).first()
        if not fenced:
            return bool(now and now[3])
        stale = _stale_message(result["task_id"], result["worker"], attempt, None if now is None else tuple(now[:3]))
        if stale:
            raise StaleAttempt(stale)
        return bool(now[3])
    with session_scope(db) as s:
        exp = s.get(Experiment, result["experiment_id"], with_for_update=True)
        done, _ = s.connection().exec_driver_sql(_fenced_write(tuple(result), fenced), params).one()
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
