"""Experiments: submit, status, demo."""
from __future__ import annotations

import json
from pathlib import Path

import click
import sqlalchemy as sa

from greenctl.cli import common
from greenctl.cli.progress import wait
from scheduler.spec import SpecError, load_spec


def _check_broker(app) -> None:
    from shared.config import mask_url

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:
        raise click.ClickException(f"broker {mask_url(app.conf.broker_url)} is unreachable: "
                                   f"{str(exc).splitlines()[0]}: start it or set GREENCTL_BROKER_URL")


class BadInput(click.UsageError):
    """Bad input: exit code 2 and ONE line, `Error: <field>: <problem>: <fix>` (no usage stanza)."""

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file, err=True)


def read_spec(spec_path: Path):
    try:
        return load_spec(spec_path)
    except SpecError as exc:
        raise BadInput(str(exc)) from None


def submit_spec(spec) -> tuple[str, int]:
    """Check the data, write, enqueue; (database URL, experiment id). Nothing is written on bad input."""
    from scheduler.dataset import load_samples
    from scheduler.submit import enqueue_or_hand_off, write_experiment

    try:
        samples, examples = load_samples(spec.dataset, spec.prompt.few_shot)
    except SpecError as exc:
        raise BadInput(str(exc)) from None
    app = common.celery_app()
    _check_broker(app)
    db = common.database_url()
    experiment_id = write_experiment(db, spec, samples, examples)
    # A running scheduler service sends big experiments in batches; else we send them here.
    enqueue_or_hand_off(db, app, experiment_id)
    return db, experiment_id


@click.command()
@click.argument("spec_path", type=click.Path(path_type=Path))
@click.option("--wait", "wait_", is_flag=True, help="Wait until every task is finished.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
def submit(spec_path: Path, wait_: bool, as_json: bool, timeout: float | None) -> None:
    """Validate SPEC_PATH, record its tasks in Postgres and enqueue them."""
    db, experiment_id = submit_spec(read_spec(spec_path))
    if not as_json:
        click.echo(f"submitted experiment {experiment_id}")
    if wait_:
        if not wait(db, experiment_id, common.err_console(), timeout=timeout):
            raise click.ClickException(f"experiment {experiment_id} did not finish within {timeout} s: "
                                       f"see `greenctl status {experiment_id}`")
    if as_json:
        click.echo(json.dumps({"experiment_id": experiment_id}))


def _status_rows(db: str, experiment_id: int | None) -> list[dict]:
    from greenctl.report.build import experiment_summary
    from shared.db import session_scope
    from shared.models import Experiment

    with session_scope(db) as s:
        query = sa.select(Experiment).order_by(Experiment.id)
        if experiment_id is not None:
            query = query.where(Experiment.id == experiment_id)
        rows = [experiment_summary(s, e) for e in s.execute(query).scalars()]
    if experiment_id is not None and not rows:
        raise click.ClickException(f"no experiment with id {experiment_id}: run `greenctl status` to list them")
    return rows


def _print_status(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="experiments (newest last)", title_justify="left")
    for col in ("id", "name", "status", "done", "failed", "running", "queued", "tasks", "created"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["id"]), r["name"], r["status"], str(r["n_done"]), str(r["n_failed"]),
                  str(r["n_running"]), str(r["n_queued"]), str(r["n_tasks"]), r["created_at"][:19])
    Console().print(t)


@click.command()
@click.argument("experiment_id", type=int, required=False)
@click.option("--watch", is_flag=True, help="Show progress until the experiment finishes.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def status(experiment_id: int | None, watch: bool, as_json: bool) -> None:
    """Progress of EXPERIMENT_ID, or of every experiment when no id is given."""
    db = common.database_url()
    if watch:
        if experiment_id is None:
            raise click.UsageError("--watch needs an EXPERIMENT_ID")
        _status_rows(db, experiment_id)
        wait(db, experiment_id, common.err_console())
    rows = _status_rows(db, experiment_id)
    if as_json:
        click.echo(json.dumps(rows[0] if experiment_id is not None else rows))
    else:
        _print_status(rows)


@click.command()
@click.option("--samples", type=int, default=None, help="Samples per variant (default: the bundled file's).")
@click.option("--timeout", type=float, default=600, show_default=True, help="Give up after this many seconds.")
def demo(samples: int | None, timeout: float) -> None:
    """Run the bundled experiment through the real path: servers, a worker, the model, a report."""
    from greenctl.cli.demo import run_demo

    run_demo(samples, timeout)


commands = [submit, status, demo]
