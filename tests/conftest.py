"""Fixtures: real servers only.

`db_url`: a fresh database on the system Postgres (127.0.0.1:5432, trust auth),
migrated to head, dropped at the end of the session. `broker_url`: a Redis
database on the system Redis, flushed first. Embedded servers are started by
the end-to-end tests themselves, as a user's machine would.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SYSTEM_PG = os.environ.get("GREENCTL_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
SYSTEM_REDIS = os.environ.get("GREENCTL_TEST_REDIS", "redis://127.0.0.1:6379")


def _admin_engine() -> sa.Engine:
    return sa.create_engine(SYSTEM_PG, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def make_database() -> str:
    """Create an empty database on the system Postgres and return its URL."""
    name = f"greenctl_test_{uuid.uuid4().hex[:10]}"
    with _admin_engine().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return SYSTEM_PG.rsplit("/", 1)[0] + f"/{name}"


def drop_database(url: str) -> None:
    from shared.db import get_engine

    get_engine(url).dispose()
    name = url.rsplit("/", 1)[1]
    with _admin_engine().connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def db_url() -> str:
    from shared.db import migrate

    url = make_database()
    migrate(url)
    yield url
    drop_database(url)


@pytest.fixture()
def fresh_db_url() -> str:
    """A database of its own for a test that counts rows."""
    from shared.db import migrate

    url = make_database()
    migrate(url)
    yield url
    drop_database(url)


# The system Redis has databases 0-15; the tests that use it take theirs from redis_db(), here,
# so no number is written twice. 0 is left to whatever else uses this Redis, and bench/servers.py
# claims an empty one of BROKER_DBS (13-15) for each benchmark run (tests/test_bench_smoke.py):
# that leaves 12. Under pytest-xdist (`make test`: -n 3 --dist loadfile) every xdist worker
# (PYTEST_XDIST_WORKER gw0, gw1, ...) has a block of its own: two files running at once never
# share a database. Within one worker, files run one after the other, as in a serial run, so the
# names of one slot share a database: each of them leaves it as the next one needs it (test_flower
# only listens; test_reconcile deletes its keys; test_bad_input flushes before and after;
# test_vocabulary's submit is refused before it writes; test_worker_cli only calibrates).
REDIS_SLOTS = (("session",), ("examples",), ("end_to_end",), ("nothing_silent",), ("flower+reconcile",),
               ("bad_input", "vocabulary+worker_cli"))


def _free_redis_dbs() -> list[int]:
    from bench.servers import BROKER_DBS

    return [db for db in range(1, 16) if db not in BROKER_DBS]


def xdist_worker() -> tuple[int, int]:
    """(index, count) of this pytest-xdist worker; (0, 1) without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not name:
        return 0, 1
    return int(name.removeprefix("gw")), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def redis_db(name: str) -> int:
    """The system Redis database number for `name` (in REDIS_SLOTS) in this pytest worker."""
    index, count = xdist_worker()
    free = _free_redis_dbs()
    per_worker = min(len(REDIS_SLOTS), len(free) // count)
    if per_worker == 0:
        raise pytest.UsageError(f"{count} xdist workers: more than the {len(free)} Redis databases "
                                f"the tests may use ({free}); use -n {len(free)} or fewer")
    slot = next(i for i, names in enumerate(REDIS_SLOTS) if name in names)
    # More workers than blocks of len(REDIS_SLOTS) fit: slots share within a worker (one file at a time).
    return free[index * per_worker + slot % per_worker]


@pytest.fixture(scope="session")
def broker_url() -> str:
    import redis

    # Concurrent test sessions on one machine each take their own Redis database: a serial run
    # may name its own with GREENCTL_TEST_REDIS_DB; under xdist each worker already has its own.
    chosen = os.environ.get("GREENCTL_TEST_REDIS_DB")
    if chosen and xdist_worker()[1] > 1:
        pytest.fail("GREENCTL_TEST_REDIS_DB names one Redis database, but with pytest -n every xdist "
                    "worker takes its own (tests/conftest.py redis_db): unset it", pytrace=False)
    db = int(chosen) if chosen else redis_db("session")
    url = f"{SYSTEM_REDIS}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url


def pytest_sessionfinish(session):
    """This pytest process's measuring lock file (tests/processes.py measure_lock) goes with it."""
    from tests.processes import measure_lock

    measure_lock().unlink(missing_ok=True)
