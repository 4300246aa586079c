"""Experiments: submit, status, demo."""
from __future__ import annotations

import json
from pathlib import Path

import click

from greenctl.cli import common
from greenctl.cli.common import BadInput
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


def read_spec(spec_path: Path):
    try:
        return load_spec(spec_path)
    except SpecError as exc:
        raise BadInput(str(exc)) from None


def submit_spec(spec) -> tuple[str, int]:
    """Check the data, write, enqueue; (database URL, experiment id). Nothing is written on bad input."""
    from scheduler.dataset import load_samples
    from scheduler.submit import check_task_count, enqueue_or_hand_off, write_experiment

    limits = common.settings()
    try:
        samples, examples = load_samples(spec.dataset, spec.prompt.few_shot, limits.max_dataset_bytes)
        check_task_count(len(samples), spec, limits.max_tasks)
    except SpecError as exc:
        raise BadInput(str(exc)) from None
    app = common.celery_app(start=True)
    _check_broker(app)
    db = common.database_url(start=True)
    experiment_id = write_experiment(db, spec, samples, examples)
    # A running scheduler service sends big experiments in batches; else we send them here.
    enqueue_or_hand_off(db, app, experiment_id)
    _warn_missing_tags(db, spec)
    return db, experiment_id


def _warn_missing_tags(db: str, spec) -> None:
    """On stderr, the `ollama pull` lines each online Ollama worker needs (submit proceeds)."""
    from greenctl import ollama_pulls, queries

    required = ollama_pulls.required_tags(spec)
    if required:
        workers = queries.online_ollama_workers(db, 4 * common.settings().heartbeat_seconds)
        for line in ollama_pulls.missing_lines(required, workers):
            click.echo(line, err=True)


@click.command()
@click.argument("spec_path", type=click.Path(path_type=Path))
@click.option("--wait", "wait_", is_flag=True, help="Wait until every task is finished.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--dry-run", is_flag=True, help="Validate and print the plan (`greenctl plan`); write and send nothing.")
def submit(spec_path: Path, wait_: bool, as_json: bool, timeout: float | None, dry_run: bool) -> None:
    """Validate SPEC_PATH, record its tasks in Postgres and enqueue them."""
    from greenctl import queries

    if dry_run:
        from greenctl.cli.plan import run_plan
        return run_plan(spec_path, as_json)
    spec = read_spec(spec_path)
    db, experiment_id = submit_spec(spec)
    err = common.err_console()
    same_name = [i for i in queries.experiment_ids_named(db, spec.name) if i != experiment_id]
    if same_name:
        err.print(f"note: experiment {experiment_id} has the same name as experiment"
                  f"{'s' * (len(same_name) > 1)} {', '.join(map(str, same_name))} ({spec.name!r}); "
                  "reports tell them apart by id", highlight=False)
    if spec.stop is not None:
        from scheduler.liveness import last_seen
        if last_seen(common.celery_app()) is None:
            err.print("note: with stop:, rounds after the first are released by the scheduler service and "
                      "none is running: start `greenctl scheduler` (or `greenctl up`)", highlight=False)
    if not as_json:
        click.echo(f"submitted experiment {experiment_id}")
    if wait_:
        if not _wait_or_interrupt(db, experiment_id, timeout):
            raise click.ClickException(f"experiment {experiment_id} did not finish within {timeout} s: "
                                       f"see `greenctl status {experiment_id}`")
        err.print(f"experiment {experiment_id} finished: see `greenctl report {experiment_id}`", highlight=False)
    if as_json:
        click.echo(json.dumps({"experiment_id": experiment_id}))


def _wait_or_interrupt(db: str, experiment_id: int, timeout: float | None) -> bool:
    """Wait with the progress bar; Ctrl-C stops the waiting (exit 130), never the experiment."""
    try:
        return wait(db, experiment_id, common.err_console(), timeout=timeout,
                    offline_after_s=4 * common.settings().heartbeat_seconds)
    except KeyboardInterrupt:
        common.err_console().print(
            f"\nstopped waiting; experiment {experiment_id} keeps running on the workers: follow it with "
            f"`greenctl status {experiment_id} --watch`, stop it with `greenctl cancel {experiment_id}`",
            highlight=False)
        raise SystemExit(130) from None


def _status_rows(db: str, experiment_id: int | None) -> list[dict]:
    from greenctl import queries
    from greenctl.report.build import experiment_summary

    rows = [experiment_summary(e, counts) for e, counts in queries.experiments(db, experiment_id)]
    if experiment_id is not None and not rows:
        raise common.unknown_experiment(experiment_id)
    for r in rows:   # why tasks failed, grouped: the reason is what a user needs, not the count
        r["failures"] = ([{"reason": why, "tasks": n} for why, n in queries.failure_reasons(db, r["id"])]
                         if r["n_failed"] else [])
    return rows


def _print_status(rows: list[dict]) -> None:
    from rich import box
    from rich.table import Table

    # Readable at 80 columns: short headers, numbers right, dates as MM-DD HH:MM (UTC).
    t = Table(title="experiments (newest last; times UTC)", title_justify="left", box=box.SIMPLE_HEAD,
              collapse_padding=True)
    t.add_column("id", justify="right")
    t.add_column("name", overflow="fold", min_width=8)
    t.add_column("status")
    held = any(r.get("n_held") for r in rows)     # later rounds of stop-when-decided experiments
    for col in ("done", "fail", "run", "queue") + (("held",) if held else ()) + ("tasks",):
        t.add_column(col, justify="right")
    t.add_column("created", no_wrap=True)
    for r in rows:
        t.add_row(str(r["id"]), r["name"], r["status"], str(r["n_done"]), str(r["n_failed"]),
                  str(r["n_running"]), str(r["n_queued"]), *([str(r.get("n_held", 0))] if held else []),
                  str(r["n_tasks"]), common.short_time(r["created_at"]))
    console = common.table_console()
    console.print(t)
    for r in rows:
        for f in r.get("failures", []):
            console.print(f"experiment {r['id']}: {f['tasks']} failed: {f['reason']}", highlight=False,
                          soft_wrap=True)





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
        _wait_or_interrupt(db, experiment_id, None)
    rows = _status_rows(db, experiment_id)
    if not common.settings().broker_url and (note := common.embedded.broker_down_note(common.settings().state_dir)):
        click.echo(f"warning: {note}", err=True)     # one line, never wrapped
    if as_json:
        click.echo(json.dumps(rows[0] if experiment_id is not None else {"experiments": rows}))
    else:
        _print_status(rows)


commands = [submit, status]
