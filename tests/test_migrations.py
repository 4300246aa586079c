"""Migrations: head matches the models, and every step goes down and up again."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from shared.db import alembic_config, get_engine


def test_head_matches_the_models_and_downgrades_cleanly(fresh_db_url):
    with get_engine(fresh_db_url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
    cfg = alembic_config(fresh_db_url)
    command.downgrade(cfg, "base")
    command.upgrade(cfg, "head")
