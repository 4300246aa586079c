"""What every command needs: the servers' URLs and a configured Celery app."""
from __future__ import annotations

import dataclasses
import sys

import click

from shared import embedded
from shared.config import Settings


def settings() -> Settings:
    """This command's settings, from the environment (shared.config is its only reader)."""
    return Settings.from_env()


EMBEDDED_NAMES = {"postgres": "Postgres", "valkey": "Valkey (the broker)"}


def urls(need_db: bool = True, need_broker: bool = True, s: Settings | None = None,
         start: bool = False) -> tuple[str | None, str | None]:
    """(database URL, broker URL): from the settings, else the embedded servers.

    Only a command that runs work (`start=True`: submit, demo, up, worker, scheduler)
    starts embedded servers, and it says so; any other command that finds them
    stopped says what to run instead of starting them behind the user's back."""
    s = s or settings()
    db, broker = s.database_url, s.broker_url
    want_db, want_broker = need_db and not db, need_broker and not broker
    if want_db or want_broker:
        wanted = [n for n, w in (("postgres", want_db), ("valkey", want_broker)) if w]
        running = embedded.running(s.state_dir)
        stopped = [n for n in wanted if n not in running]
        if stopped and not start:
            raise click.ClickException(
                f"the embedded {' and '.join(EMBEDDED_NAMES[n] for n in stopped)} "
                f"{'is' if len(stopped) == 1 else 'are'} not running (state dir {s.state_dir}): "
                "start the local cluster with `greenctl up`, or point GREENCTL_DATABASE_URL and "
                "GREENCTL_BROKER_URL at your servers")
        try:
            services = embedded.ensure(s.state_dir, need_db=want_db, need_broker=want_broker) if stopped \
                else running
        except Exception as exc:  # servers that won't start are the user's problem to see
            raise click.ClickException(f"could not start the embedded servers under {s.state_dir}: {exc}")
        if stopped:
            err_console().print(f"started the embedded {' and '.join(EMBEDDED_NAMES[n] for n in stopped)} "
                                f"under {s.state_dir} (`greenctl down` stops them)", highlight=False)
        if want_db:
            db = services["postgres"]["url"]
        if want_broker:
            broker = services["valkey"]["url"]
    return db, broker


def database_url(s: Settings | None = None, start: bool = False) -> str:
    """The database URL, migrated to the newest schema (see `urls` for `start`)."""
    from shared.db import migrate

    db, _ = urls(need_broker=False, s=s, start=start)
    try:
        migrate(db)
    except Exception as exc:
        from shared.config import mask_url
        raise click.ClickException(f"database {mask_url(db)} is unreachable or not migratable: "
                                   f"{str(exc).splitlines()[0]}")
    return db


def celery_app(start: bool = False):
    """The Celery app configured for this machine's broker and database."""
    from shared.celery_app import configure

    db = database_url(start=start)
    _, broker = urls(need_db=False, start=start)
    return configure(broker, db, settings())


def service_app(broker: str | None, db: str | None):
    """(database URL, Celery app) for a long-running service started with optional
    --broker/--db overrides (a laptop joining a cluster passes both)."""
    from shared.celery_app import configure

    refuse_password_flags(broker=broker, db=db)
    s = settings()
    s = dataclasses.replace(s, broker_url=broker or s.broker_url, database_url=db or s.database_url)
    db_url = database_url(s, start=True)
    _, broker_url = urls(need_db=False, s=s, start=True)
    return db_url, configure(broker_url, db_url, dataclasses.replace(s, database_url=db_url, broker_url=broker_url))


PASSWORD_FLAG_FIX = {"broker": "GREENCTL_BROKER_URL", "db": "GREENCTL_DATABASE_URL"}


def refuse_password_flags(**flags: str | None) -> None:
    """A URL with a password given as --broker/--db is refused (exit 2): `ps` shows a
    process's command line to every local user. The fix names the variable to use."""
    from urllib.parse import urlsplit

    bad = [f"--{name}: the URL has a password, and a command line is visible to every local user "
           f"(ps): unset --{name} and export {PASSWORD_FLAG_FIX[name]} instead (e.g. from a 0600 file "
           f"you source)" for name, url in flags.items() if url and urlsplit(url).password is not None]
    if bad:
        raise BadInput("\n".join(bad))


class BadInput(click.UsageError):
    """Bad input (a spec, a flag, an unknown id): exit code 2 and one line per mistake,
    `Error: <field>: <problem>: <fix>` (no usage stanza). The README promises it."""

    def show(self, file=None) -> None:
        for line in self.format_message().splitlines():
            click.echo(f"Error: {line}", file=file, err=True)


def unknown_experiment(experiment_id: int) -> BadInput:
    """The one message for an experiment id that does not exist, whichever command was given it."""
    return BadInput(f"EXPERIMENT_ID: no experiment with id {experiment_id}: run `greenctl status` to list them")


WIDE_OPTION = dict(is_flag=True, help="Every column, at full width (default: fits 80 columns).")


def table_console(wide: bool = False):
    """Where tables go: the terminal's width, 80 columns when piped, or room for every column."""
    from rich.console import Console

    if wide:
        return Console(width=200)
    console = Console()
    return console if console.is_terminal else Console(width=80)


def short_time(iso: str) -> str:
    """'2026-12-01T11:31:09+00:00' -> '12-01 11:31' (UTC, as stored)."""
    return f"{iso[5:10]} {iso[11:16]}"


def err_console():
    from rich.console import Console

    return Console(file=sys.stderr)
