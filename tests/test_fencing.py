"""Issue 16, the result fence: a worker paused past its lease (SIGSTOP, a laptop asleep) while
another worker takes its task over must, once it runs again, neither duplicate nor overwrite the
result: its write is conditional on still holding the current attempt (task running, task.worker
itself, task.attempts its attempt); a stale write is dropped, logged with its reason, never counted.

First the fence on its own, with worker/store.py against real Postgres and both orders of the
two writes; then two real `greenctl worker` processes on loopback (their own Valkey, a real
scheduler re-sending the expired task), one SIGSTOPped mid-inference past a short lease and
resumed while the other runs the task. The other order (resumed after the takeover wrote) runs
across hosts in tests/test_multihost.py's sleep test.
"""
from __future__ import annotations

import os
import signal
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.processes import DATASET, worker
from tests.test_faults import LABELS, fault_env, query, results, scheduler, spec_for, submit, valkey, wait_until

pytestmark = pytest.mark.timeout(240)
LEASE_S = 8


# -- the fence itself --------------------------------------------------------------------

def _experiment(db: str, n: int) -> list[int]:
    from scheduler.dataset import load_samples
    from scheduler.spec import parse_spec
    from scheduler.submit import write_experiment
    from tests.processes import DATASET, MODEL

    spec = parse_spec({"name": "fence", "dataset": {"path": str(DATASET), "labels": ["positive", "negative",
                                                                                       "neutral"], "sample": n},
                       "models": [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}]})
    samples, examples = load_samples(spec.dataset)
    eid = write_experiment(db, spec, samples, examples)
    return [r[0] for r in query(db, "SELECT id FROM task WHERE experiment_id = :e ORDER BY id", e=eid)]


def _row(job, worker_name: str) -> dict:
    return dict(task_id=job.task_id, experiment_id=job.experiment_id, variant_id=job.variant_id,
                worker=worker_name, prediction=job.label, energy_method="forced", energy_kwh=1e-5, co2_kg=1e-6)


def _expire_lease(db: str, task_id: int) -> None:
    """What a paused worker's silence does: its lease runs out (no heartbeat extends it)."""
    from shared.models import utcnow

    engine = sa.create_engine(db, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE task SET lease_until = :t WHERE id = :id"),
                     {"t": utcnow() - timedelta(seconds=1), "id": task_id})
    engine.dispose()


def _task(db: str, task_id: int):
    return query(db, "SELECT status, worker, attempts FROM task WHERE id = :t", t=task_id)[0]


def _result_workers(db: str, task_id: int) -> list[str]:
    return [r[0] for r in query(db, "SELECT worker FROM result WHERE task_id = :t", t=task_id)]


def test_a_stale_attempt_can_write_neither_before_nor_after_the_attempt_that_took_over(fresh_db_url):
    from worker import store

    db = fresh_db_url
    first, second = _experiment(db, 2)
    # Late result FIRST: A claims, stalls past its lease, B takes over; A's write arrives while B runs.
    a = store.claim(db, first, "host:a", LEASE_S)
    _expire_lease(db, first)
    b = store.claim(db, first, "host:b", LEASE_S)
    assert (a.attempt, b.attempt) == (1, 2)
    with pytest.raises(store.StaleAttempt, match=r"now running, attempt 2 by host:b .*attempt 1 by host:a"):
        store.write_result(db, _row(a, "host:a"), attempt=a.attempt)
    assert _result_workers(db, first) == [] and tuple(_task(db, first)) == ("running", "host:b", 2)
    # A stale failure (say its engine errored on resume) must not flip B's task either.
    assert store.fail(db, first, a.experiment_id, "engine died", worker="host:a", attempt=a.attempt) is False
    assert tuple(_task(db, first)) == ("running", "host:b", 2)
    assert store.write_result(db, _row(b, "host:b"), attempt=b.attempt) is False     # one task still open
    assert _result_workers(db, first) == ["host:b"] and _task(db, first).status == "done"

    # Late result AFTER: B has already written; A's write is dropped, B's row stays as it was.
    a = store.claim(db, second, "host:a", LEASE_S)
    _expire_lease(db, second)
    b = store.claim(db, second, "host:b", LEASE_S)
    assert store.write_result(db, _row(b, "host:b"), attempt=b.attempt) is True      # the last: closes it
    with pytest.raises(store.StaleAttempt, match="now done, attempt 2 by host:b"):
        store.write_result(db, _row(a, "host:a"), attempt=a.attempt)
    assert _result_workers(db, second) == ["host:b"] and tuple(_task(db, second)) == ("done", "host:b", 2)
    assert query(db, "SELECT count(*), count(DISTINCT task_id) FROM result")[0] == (2, 2)
    assert query(db, "SELECT status FROM experiment")[0][0] == "done"
    # The same attempt writing twice (a retry after a commit whose answer was lost) is not stale.
    assert store.write_result(db, _row(b, "host:b"), attempt=b.attempt) is False
    assert _result_workers(db, second) == ["host:b"]


def test_a_connection_postgres_ended_costs_one_retry_not_the_result(fresh_db_url):
    """The claim and the write run on the worker thread's own kept connection (one round trip
    each). When Postgres ends it (a restart, an idle timeout, an admin), the write is retried on a
    new connection and stored once, and the next claim works."""
    from worker import store

    db = fresh_db_url
    first, second = _experiment(db, 2)
    a = store.claim(db, first, "host:a", LEASE_S)

    def end_the_workers_connections() -> int:
        return query(db, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                         "AND application_name = '' AND state = 'idle'")[0][0]

    assert end_the_workers_connections() >= 1
    assert store.with_db_retry(store.write_result, db, _row(a, "host:a"), None, a.attempt) is False
    assert _result_workers(db, first) == ["host:a"] and tuple(_task(db, first)) == ("done", "host:a", 1)
    assert end_the_workers_connections() >= 1
    with pytest.raises(store.DB_DOWN):      # the worker's task retries it (worker.tasks.infer)
        store.claim(db, second, "host:a", LEASE_S)
    b = store.claim(db, second, "host:a", LEASE_S)
    assert store.write_result(db, _row(b, "host:a"), attempt=b.attempt) is True
    assert query(db, "SELECT count(*), count(DISTINCT task_id) FROM result")[0] == (2, 2)


# -- two real workers, one SIGSTOPped past its lease --------------------------------------

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Valkey, a scheduler (reconcile every 2 s) and two workers A and B consuming the queue
    `fence` (named by their first queues, fence-a and fence-b), for the module.

    Each worker has its own measuring lock: with the host-wide one, the stopped worker would hold
    it and B could never measure; the energy of this test's rows is meaningless anyway (two
    workers on one host measure each other's energy, see bench "scaling")."""
    from tests.conftest import drop_database, make_database

    from shared.db import migrate

    tmp = tmp_path_factory.mktemp("fence")
    db = make_database()
    migrate(db)
    try:
        with valkey(tmp / "valkey") as broker:
            env = fault_env(db, broker.url, tmp) | dict(GREENCTL_LEASE_SECONDS=str(LEASE_S),
                                                        GREENCTL_RECONCILE_SECONDS="2",
                                                        GREENCTL_HEARTBEAT_SECONDS="1")
            with scheduler(env, tmp):
                with worker(env | {"GREENCTL_MEASURE_LOCK": str(tmp / "lock-a")}, "fence-a", tmp / "worker-a.log",
                            "--queue", "fence", "--threads", "1") as proc_a, \
                     worker(env | {"GREENCTL_MEASURE_LOCK": str(tmp / "lock-b")}, "fence-b", tmp / "worker-b.log",
                            "--queue", "fence", "--threads", "1") as proc_b:
                    yield dict(db=db, env=env, tmp=tmp, procs={"fence-a": proc_a, "fence-b": proc_b},
                               logs={"fence-a": tmp / "worker-a.log", "fence-b": tmp / "worker-b.log"})
    finally:
        drop_database(db)


def _long_text(path, offset: int, sentences: int = 28):
    """A one-row dataset of ~1,000 tokens (seconds of prefill on one thread, so a stop lands
    mid-inference), from the bundled data's rows offset.. (each test its own text: a text
    a worker has seen is mostly in its prefix cache and runs in well under a second)."""
    import csv

    with open(DATASET, newline="") as f:
        rows = [row["text"] for row in csv.DictReader(f)][offset:offset + sentences]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], [" ".join(rows), LABELS[0]]])
    return path


def _one_task_running(pair, name: str, offset: int) -> tuple[int, int, str, str]:
    """Submit a one-task experiment on `fence`; once a worker runs it (mid-inference), SIGSTOP
    that worker. (experiment, task, the stopped worker's queue name, the other's)."""
    db, tmp = pair["db"], pair["tmp"]
    spec = spec_for(tmp / f"{name}.yaml", _long_text(tmp / f"{name}.csv", offset), "fence")
    eid = submit(spec, pair["env"])
    (task_id,) = query(db, "SELECT id FROM task WHERE experiment_id = :e", e=eid)[0]

    def claimed():
        t = _task(db, task_id)
        assert t.status in ("queued", "running"), f"task {task_id} is {t.status} before any stop: too short"
        return t.status == "running" and t.worker

    holder = wait_until(claimed, 90, "a worker claims the task", poll=0.05)
    stopped = holder.rsplit(":", 1)[1]
    time.sleep(0.5)
    os.kill(pair["procs"][stopped].pid, signal.SIGSTOP)
    other = "fence-b" if stopped == "fence-a" else "fence-a"
    return eid, task_id, stopped, other


def _assert_one_result_by(pair, eid: int, task_id: int, stopped: str, other: str) -> None:
    db = pair["db"]
    dropped = f"task {task_id}: result dropped, not counted"
    log = wait_until(lambda: dropped in pair["logs"][stopped].read_text() and pair["logs"][stopped].read_text(),
                     120, f"the resumed worker {stopped} drops its late result")
    (line,) = [x for x in log.splitlines() if dropped in x]          # one line, saying why
    assert "attempt 2 by " in line and f":{other} " in line and "this was attempt 1 by " in line
    wait_until(lambda: query(db, "SELECT status FROM experiment WHERE id = :e", e=eid)[0][0] == "done", 60,
               "the experiment is done")
    assert results(db, eid) == (1, 1)                                  # exactly one result
    status, holder, attempts = _task(db, task_id)
    (by,) = _result_workers(db, task_id)
    # The result is the attempt that held the lease when it wrote: the worker that took over.
    assert (status, attempts) == ("done", 2) and holder.endswith(":" + other) and by == holder


def test_a_late_result_while_the_takeover_runs_is_dropped(pair):
    eid, task_id, stopped, other = _one_task_running(pair, "during", offset=200)
    try:
        wait_until(lambda: (lambda t: t.status == "running" and t.worker.endswith(":" + other))(
            _task(pair["db"], task_id)), 120, f"{other} takes the task over")
    finally:
        # Resumed while the other runs it: its write (usually first, its inference was half done)
        # must lose, and must not mark the task done under the other's feet.
        os.kill(pair["procs"][stopped].pid, signal.SIGCONT)
    _assert_one_result_by(pair, eid, task_id, stopped, other)
