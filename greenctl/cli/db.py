"""Database setup: `greenctl db roles` creates the worker and scheduler roles."""
from __future__ import annotations

from pathlib import Path

import click

from greenctl.cli import common


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    password = path.read_text(encoding="utf-8").strip()
    if not password:
        raise click.BadParameter(f"{path} is empty: put the password on its first line", param_hint="password file")
    return password


@click.group()
def db() -> None:
    """Database setup (run as the database owner, the user that runs migrations)."""


@db.command("roles")
@click.option("--worker-role", default="greenctl_worker", show_default=True,
              help="Role of inference workers: claims tasks and writes results only.")
@click.option("--scheduler-role", default="greenctl_scheduler", show_default=True,
              help="Role of the CLI, scheduler and estimator: rows of every table, no DDL.")
@click.option("--worker-password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="File holding the worker role's password (passwords never go on a command line).")
@click.option("--scheduler-password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="File holding the scheduler role's password.")
@click.option("--drop", is_flag=True, help="Revoke and drop the two roles instead.")
def roles(worker_role: str, scheduler_role: str, worker_password_file: Path | None,
          scheduler_password_file: Path | None, drop: bool) -> None:
    """Create (or update) the worker and scheduler database roles and their grants on
    this database. Idempotent: run it again after an upgrade adds a table."""
    from shared.config import mask_url
    from shared.roles import RoleError, create_roles, drop_roles, role_url

    url = common.database_url(start=True)          # migrated first: the grants name the tables
    try:
        if drop:
            dropped = drop_roles(url, worker_role, scheduler_role)
            click.echo(f"dropped: {', '.join(dropped) or 'nothing (no such roles)'}")
            return
        created = create_roles(url, worker_role, scheduler_role,
                               _password(worker_password_file), _password(scheduler_password_file))
    except RoleError as exc:
        raise click.UsageError(str(exc)) from None
    except Exception as exc:   # e.g. no CREATEROLE: say so in one line, with the URL masked
        raise click.ClickException(f"could not set up roles on {mask_url(url)}: "
                                   f"{str(exc).splitlines()[0]}: run this as the database owner")
    for role, new in created.items():
        click.echo(f"{role:<20} {'created' if new else 'updated'}")
    click.echo(f"workers:   GREENCTL_DATABASE_URL={mask_url(role_url(url, worker_role, 'PASSWORD'))}")
    click.echo(f"scheduler: GREENCTL_DATABASE_URL={mask_url(role_url(url, scheduler_role, 'PASSWORD'))}")


commands = [db]
