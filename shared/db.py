"""Database engine, sessions and migrations."""
from __future__ import annotations

import functools
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa
from sqlmodel import Session

MIGRATIONS = Path(__file__).parent / "migrations"


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs (what users paste) and use psycopg2."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


@functools.lru_cache(maxsize=8)
def get_engine(url: str) -> sa.Engine:
    return sa.create_engine(normalize_url(url), pool_pre_ping=True, future=True)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on any error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["url"] = normalize_url(url)
    return cfg


_migrated: set[str] = set()


def migrate(url: str) -> None:
    """Bring the schema to the newest migration (once per process and URL)."""
    if url in _migrated:
        return
    from alembic import command

    command.upgrade(alembic_config(url), "head")
    _migrated.add(url)
