"""What every command needs: the servers' URLs and a configured Celery app."""
from __future__ import annotations

import sys

import click

from shared import embedded
from shared.config import Settings


def settings() -> Settings:
    return Settings.from_env()


def urls(need_db: bool = True, need_broker: bool = True) -> tuple[str | None, str | None]:
    """(database URL, broker URL): from the environment, else embedded servers."""
    s = settings()
    db, broker = s.database_url, s.broker_url
    want_db, want_broker = need_db and not db, need_broker and not broker
    if want_db or want_broker:
        try:
            services = embedded.ensure(s.state_dir, need_db=want_db, need_broker=want_broker)
        except Exception as exc:  # servers that won't start are the user's problem to see
            raise click.ClickException(f"could not start the embedded servers under {s.state_dir}: {exc}")
        if want_db:
            db = services["postgres"]["url"]
        if want_broker:
            broker = services["valkey"]["url"]
    return db, broker


def database_url() -> str:
    """The database URL, migrated to the newest schema."""
    from shared.db import migrate

    db, _ = urls(need_broker=False)
    try:
        migrate(db)
    except Exception as exc:
        from shared.config import mask_url
        raise click.ClickException(f"database {mask_url(db)} is unreachable or not migratable: "
                                   f"{str(exc).splitlines()[0]}")
    return db


def celery_app():
    """The Celery app configured for this machine's broker and database."""
    from shared.celery_app import configure

    db = database_url()
    _, broker = urls(need_db=False)
    return configure(broker, db, settings())


def service_app(broker: str | None, db: str | None):
    """(database URL, Celery app) for a long-running service started with optional
    --broker/--db overrides (a laptop joining a cluster passes both)."""
    import os

    from shared.celery_app import configure

    if broker:
        os.environ["GREENCTL_BROKER_URL"] = broker
    if db:
        os.environ["GREENCTL_DATABASE_URL"] = db
    db_url = database_url()
    _, broker_url = urls(need_db=False)
    return db_url, configure(broker_url, db_url, settings())


def err_console():
    from rich.console import Console

    return Console(file=sys.stderr)
