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


@pytest.fixture(scope="session")
def broker_url() -> str:
    import redis

    # Concurrent test sessions on one machine each take their own Redis database.
    db = int(os.environ.get("GREENCTL_TEST_REDIS_DB", "5"))
    url = f"{SYSTEM_REDIS}/{db}"
    redis.Redis.from_url(url).flushdb()
    return url
