"""Database roles: what each kind of process may do in Postgres (docs/security.md).

- admin (the database owner): runs migrations and `greenctl db roles`. Not created here.
- scheduler: the CLI, the scheduler service, the estimator and reports. Reads and
  writes rows in every table (submit, cancel, resume, reconcile, refit); no DDL.
- worker: inference workers. Claims tasks and writes results, nothing else:
  it cannot create experiments, delete anything, or touch another table.

Roles are cluster-wide in Postgres, grants are per database: `create_roles` is
idempotent (re-run it after a migration adds a table) and `drop_roles` undoes it.
Passwords are passed as bound values, never formatted into SQL or logged.
"""
from __future__ import annotations

import re

import sqlalchemy as sa

from shared.db import normalize_url

WORKER_ROLE = "greenctl_worker"
SCHEDULER_ROLE = "greenctl_scheduler"

# (privilege, table): exactly what worker/store.py and worker/runtime.py do.
WORKER_GRANTS = (
    ("SELECT", "alembic_version"),                   # `migrate` checks the schema is at head
    ("SELECT", "experiment"),                        # the spec of a claimed task
    ("UPDATE (status, finished_at)", "experiment"),  # running, then done with the last task
    ("SELECT", "variant"),
    ("UPDATE (model_info)", "variant"),              # file, sha256, bits per weight, once
    ("SELECT", "task"),                              # claim ... RETURNING
    ("UPDATE (status, attempts, worker, lease_until, error, updated_at)", "task"),
    # INSERT ... ON CONFLICT (task_id) DO NOTHING RETURNING id: the conflict target and the
    # new id must be readable; the measurements of other tasks are not.
    ("INSERT, SELECT (id, task_id)", "result"),
    ("SELECT, INSERT, UPDATE", "worker_node"),       # register (upsert), heartbeat, idle power
    # The fit in use, for the estimate expected before each inference (worker.expect); not its metrics.
    ("SELECT (id, hardware_profile, target, version, is_good, model)", "estimator_fit"),
)
WORKER_SEQUENCES = ("result_id_seq", "worker_node_id_seq")

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleError(ValueError):
    pass


def _ident(name: str) -> str:
    if not _NAME.match(name):
        raise RoleError(f"role name {name!r}: use lower-case letters, digits and _ (at most 63)")
    return f'"{name}"'


def _ensure_role(conn, name: str, password: str | None) -> bool:
    """Create the LOGIN role when missing (True when created); set its password when given."""
    role = _ident(name)
    exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first()
    if not exists:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT")
    if password is not None:
        # psycopg2 binds the value client-side as a quoted literal: no SQL injection.
        conn.exec_driver_sql(f"ALTER ROLE {role} PASSWORD %(p)s", {"p": password})
    return not exists


def create_roles(admin_url: str, worker: str = WORKER_ROLE, scheduler: str = SCHEDULER_ROLE,
                 worker_password: str | None = None, scheduler_password: str | None = None
                 ) -> dict[str, bool]:
    """Create (if missing) the worker and scheduler roles and grant them their rights on
    this database. Returns {role: created now}. Needs a user with CREATEROLE that owns
    the tables (the one that ran the migrations)."""
    if worker == scheduler:
        raise RoleError("the worker and scheduler roles must be different roles")
    engine = sa.create_engine(normalize_url(admin_url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            created = {worker: _ensure_role(conn, worker, worker_password),
                       scheduler: _ensure_role(conn, scheduler, scheduler_password)}
            w, s, db = _ident(worker), _ident(scheduler), f'"{database}"'
            for role in (w, s):
                conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {db} TO {role}")
                conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
                conn.exec_driver_sql(f"REVOKE CREATE ON SCHEMA public FROM {role}")
            # The worker: start from nothing, then exactly WORKER_GRANTS.
            conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {w}")
            conn.exec_driver_sql(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {w}")
            for privilege, table in WORKER_GRANTS:
                conn.exec_driver_sql(f'GRANT {privilege} ON TABLE "{table}" TO {w}')
            for sequence in WORKER_SEQUENCES:
                conn.exec_driver_sql(f'GRANT USAGE ON SEQUENCE "{sequence}" TO {w}')
            # The scheduler: rows of every table, no schema changes.
            conn.exec_driver_sql(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {s}")
            conn.exec_driver_sql(f"REVOKE INSERT, UPDATE, DELETE ON TABLE alembic_version FROM {s}")
            conn.exec_driver_sql(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {s}")
    finally:
        engine.dispose()
    return created


def drop_roles(admin_url: str, *names: str) -> list[str]:
    """Revoke what the roles hold in this database and drop them; returns those dropped.

    A role that still holds privileges in another database cannot be dropped:
    Postgres says so, and the error names that database.
    """
    engine = sa.create_engine(normalize_url(admin_url), poolclass=sa.pool.NullPool)
    dropped = []
    try:
        with engine.begin() as conn:
            for name in names:
                role = _ident(name)
                if not conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first():
                    continue
                conn.exec_driver_sql(f"DROP OWNED BY {role}")   # its grants in this database
                conn.exec_driver_sql(f"DROP ROLE {role}")
                dropped.append(name)
    finally:
        engine.dispose()
    return dropped


def role_url(url: str, role: str, password: str | None = None) -> str:
    """`url` with its user replaced by `role` (and the password, when given)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = quote(role, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def end_sessions(admin_url: str, role: str) -> int:
    """End every session of `role` on this server (after its password changed: a rotated
    join token's connections must not outlive it); returns how many were ended."""
    _ident(role)
    engine = sa.create_engine(normalize_url(admin_url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            return len(conn.execute(sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role}).all())
    finally:
        engine.dispose()
