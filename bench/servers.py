"""Servers for the pipeline benchmarks: a fresh database, a broker, worker processes.

The system Postgres and Redis of this machine are used when they answer (a
fresh database, a Redis db number nobody uses, both removed afterwards);
otherwise embedded ones are started under a temporary state dir.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PG = os.environ.get("GREENCTL_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
SYSTEM_REDIS = os.environ.get("GREENCTL_TEST_REDIS", "redis://127.0.0.1:6379")
# Redis db numbers no test uses (tests take 5, 7, 8, 11, 12); an empty one is claimed.
BROKER_DBS = (15, 14, 13)


@dataclass
class Servers:
    db: str
    broker: str
    state_dir: Path
    kind: str          # "system" or "embedded"

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREENCTL_")}
        if "GREENCTL_CACHE_DIR" in os.environ:
            env["GREENCTL_CACHE_DIR"] = os.environ["GREENCTL_CACHE_DIR"]
        return env | {"GREENCTL_DATABASE_URL": self.db, "GREENCTL_BROKER_URL": self.broker,
                      "GREENCTL_STATE_DIR": str(self.state_dir)} | extra


def _admin() -> sa.Engine:
    return sa.create_engine(SYSTEM_PG, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool,
                            connect_args={"connect_timeout": 3})


def _system_available() -> bool:
    import redis

    try:
        with _admin().connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        redis.Redis.from_url(SYSTEM_REDIS, socket_timeout=3).ping()
        return True
    except Exception:  # either server missing: use embedded ones
        return False


@contextmanager
def _system_database():
    from shared.db import get_engine, migrate

    name = f"greenctl_bench_{uuid.uuid4().hex[:10]}"
    with _admin().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = SYSTEM_PG.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(url)
        yield url
    finally:
        get_engine(url).dispose()
        with _admin().connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def _system_broker():
    import redis

    for number in BROKER_DBS:
        client = redis.Redis.from_url(f"{SYSTEM_REDIS}/{number}")
        # Claim the db with a marker key so two benchmark runs do not share one.
        if client.dbsize() == 0 and client.set("greenctl-bench-lock", "1", nx=True):
            try:
                yield f"{SYSTEM_REDIS}/{number}"
            finally:
                client.flushdb()
            return
    raise RuntimeError(f"no empty Redis db among {list(BROKER_DBS)} on {SYSTEM_REDIS}")


@contextmanager
def servers():
    """Fresh database + broker, removed (or stopped) when the block ends."""
    with ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="greenctl-bench-")))
        if _system_available():
            db = stack.enter_context(_system_database())
            broker = stack.enter_context(_system_broker())
            yield Servers(db, broker, state, "system")
            return
        from shared import embedded
        from shared.db import migrate

        stack.callback(embedded.stop, state)
        services = embedded.ensure(state)
        migrate(services["postgres"]["url"])
        yield Servers(services["postgres"]["url"], services["valkey"]["url"], state, "embedded")


@contextmanager
def workers(env: dict, layout: list[tuple[str, int]], log_dir: Path, ready_timeout: float = 120):
    """Real `greenctl worker` processes, one per (queue, threads), started together and
    stopped (warm, then hard) when the block ends."""
    procs, logs = [], []
    try:
        for i, (queue, threads) in enumerate(layout):
            logs.append(log_dir / f"worker-{i}-{queue}.log")
            with open(logs[-1], "ab") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "greenctl", "worker", "--queue", queue, "--threads", str(threads)],
                    env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True))
        deadline = time.monotonic() + ready_timeout
        for proc, log in zip(procs, logs):
            while b"ready." not in log.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def greenctl(args: list[str], env: dict, timeout: float = 600) -> str:
    """Run a greenctl command as a user would; its stdout."""
    proc = subprocess.run([sys.executable, "-m", "greenctl", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"greenctl {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def wait_for_results(db: str, experiment_id: int, n: int, timeout: float, poll_s: float = 1.0) -> None:
    """Until the experiment has n finished tasks. Polls slowly: the bench must not steal CPU."""
    from shared.db import session_scope

    deadline = time.monotonic() + timeout
    query = sa.text("SELECT count(*) FROM task WHERE experiment_id = :e AND status IN ('done','failed')")
    while True:
        with session_scope(db) as s:
            if s.execute(query, {"e": experiment_id}).scalar_one() >= n:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"experiment {experiment_id}: fewer than {n} tasks finished in {timeout:.0f} s")
        time.sleep(poll_s)


def write_spec(path: Path, *, sample: int, queue: str, seed: int = 42, repeats: int = 1,
               dataset: Path | None = None, variants=("q4_0",)) -> Path:
    """An experiment file with greenctl's default protocol (demo.yaml) on `queue`."""
    import yaml

    from bench.workload import DATASET, DEFAULT_PARAMS, DEFAULT_PROMPT, LABELS, MODEL

    spec = {
        "name": path.stem,
        "dataset": {"path": str(dataset or DATASET), "labels": LABELS, "sample": sample,
                    "stratify": True, "seed": seed},
        "prompt": DEFAULT_PROMPT,
        "models": [{"name": MODEL, "engine": "embedded", "variants": list(variants),
                    "params": DEFAULT_PARAMS}],
        "carbon": {"country_iso_code": "CAN", "pue": 1.0},
        "placement": {"queue": queue},
        "repeats": repeats,
    }
    path.write_text(yaml.safe_dump(spec))
    return path
