"""The local cluster and the scheduler service: up, down, ps, scheduler, cancel, resume."""
from __future__ import annotations

import json
import os
import signal
import sys

import click

from greenctl.cli import common

ENERGY_NOTE = ("note: {n} workers on one machine share its energy measurement (CodeCarbon measures "
               "the whole machine), so per-task energy is overstated while they run at once; "
               "measure with --workers 1")


def _celery_app(broker: str):
    from shared.celery_app import configure

    return configure(broker, None, common.settings())


@click.command()
@click.option("--workers", type=click.IntRange(0, 64), default=1, show_default=True,
              help="Inference workers; they share the default queue, one task at a time each. 0: none on "
                   "this machine (a head whose laptops do the inference, with --lan).")
@click.option("--flower", is_flag=True, help="Also start Flower (basic auth) on 127.0.0.1.")
@click.option("--flower-port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option("--wait", "wait_s", type=click.FloatRange(0), default=180, show_default=True,
              help="Seconds to wait for every service to answer (0: do not wait).")
@click.option("--lan", "lan_address", metavar="ADDRESS",
              help="Also serve the embedded Postgres and broker on this address of the machine, over TLS "
                   "with passwords, and print the `greenctl worker --join TOKEN` command for other machines.")
def up(workers: int, flower: bool, flower_port: int, wait_s: float, lan_address: str | None) -> None:
    """Start the local cluster in the background: Postgres and Valkey (embedded unless
    GREENCTL_DATABASE_URL / GREENCTL_BROKER_URL are set), the scheduler, the estimator,
    N workers and, with --flower, Flower. Services already running are reused;
    `greenctl down` stops them all. With --lan ADDRESS, laptops on the LAN join as
    workers with the printed command (LAN mode lasts until `greenctl down`)."""
    from greenctl.cluster import local, processes, services as svc, supervise
    from greenctl.cluster.records import cluster_dir
    from shared.config import mask_url

    settings = common.settings()
    directory = cluster_dir(settings.state_dir)
    if lan_address is not None:
        _enable_lan(settings, lan_address)
    db = common.database_url(start=True)      # starts embedded servers when needed, and migrates
    lan_on = not settings.database_url and common.embedded.lan_config(settings.state_dir)
    if lan_on:
        _lan_roles(settings.state_dir, db)
    _, broker = common.urls(need_db=False, start=True)
    app = _celery_app(broker)
    urls_env = {"GREENCTL_DATABASE_URL": db, "GREENCTL_BROKER_URL": broker}
    env_of = {}
    plan = svc.plan(workers, settings.default_queue, os.cpu_count() or 1,
                    flower_port if flower else None, settings.state_dir / "scheduler" / "celerybeat-schedule")
    # Last: it restarts a service that dies (`down` stops it first; a second `up` reuses it).
    plan.append(svc.Service(supervise.NAME, supervise.argv(directory)))
    for service in plan:
        env_of[service.name] = dict(urls_env)
    if flower:
        try:
            user, password, generated = svc.flower_credentials(directory, common.settings())
        except svc.CredentialsError as exc:
            raise click.ClickException(f"{exc}: fix it, or unset it to get a generated password")
        env_of["flower"]["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
        if not _flower_reusable(directory, env_of["flower"], plan) and not svc.port_free(flower_port):
            raise click.ClickException(f"--flower-port: port {flower_port} is in use: pick a free one, "
                                       f"e.g. --flower-port {flower_port + 1}")
    click.echo(f"database  {mask_url(db)}")
    click.echo(f"broker    {mask_url(broker)}")
    # SIGTERM unwinds like Ctrl-C: what this `up` started is stopped again.
    signal.signal(signal.SIGTERM, _interrupt)
    started = []
    try:
        started = local.up(settings.state_dir, plan, env_of)
        _print_started(started, directory, flower and (user, password, generated), workers)
        if wait_s == 0:
            click.echo("not waiting (--wait 0): `greenctl ps` shows when they are ready")
            if lan_on:
                _print_join(settings.state_dir)
            return
        states = local.wait_ready(app, [s.record for s in started], wait_s)
    except KeyboardInterrupt:
        # The supervisor first, so it restarts none of the others.
        ours = sorted((s.record for s in started if s.how != "running"), key=lambda r: r.name != supervise.NAME)
        processes.stop(directory, ours, grace_s=10)
        click.echo("interrupted: stopped the services this `up` started; the embedded servers "
                   "keep running (`greenctl down` stops them)", err=True)
        sys.exit(130)
    bad = {name: state for name, state in states.items() if state not in ("ready", "running")}
    if bad:
        logs = {s.record.name: s.record for s in started}
        detail = "; ".join(f"{n} {st} (last log line: {local.last_log_line(logs[n])!r})" for n, st in bad.items())
        raise click.ClickException(f"not ready after {wait_s:.0f} s: {detail}; see the logs, "
                                   f"then `greenctl up` again or `greenctl down`")
    click.echo(f"ready: {', '.join(states)}")
    if lan_on:
        _print_join(settings.state_dir)


def _enable_lan(settings, address: str) -> None:
    """Validate --lan ADDRESS (exit 2: one line naming the fix), then turn LAN mode on."""
    from greenctl.cluster import lan

    bad = []
    if settings.database_url or settings.broker_url:
        bad.append("--lan: serves the embedded Postgres and broker, but GREENCTL_DATABASE_URL / "
                   "GREENCTL_BROKER_URL point at other servers: unset them, or publish those servers yourself "
                   "(docs/operations.md \"Adding a laptop\")")
    reason = lan.check_address(address)
    if reason:
        bad.append(f"--lan: {reason}: give one of this machine's addresses: {', '.join(lan.local_addresses())}")
    if bad:
        raise common.BadInput("\n".join(bad))
    try:
        common.embedded.enable_lan(settings.state_dir, address)
    except common.embedded.LanUnavailable as exc:
        raise click.ClickException(f"--lan: {exc}") from None


def _lan_roles(state_dir, db: str) -> None:
    from greenctl.cluster import lan

    try:
        common.embedded.ensure(state_dir)    # the TLS front too (commands look at Postgres and the broker only)
        lan.setup_roles(state_dir, db)
    except Exception as exc:
        raise click.ClickException(f"--lan: could not start the TLS front or create the worker role: "
                                   f"{str(exc).splitlines()[0]}")


def _print_join(state_dir) -> None:
    from greenctl.cluster import lan

    token = lan.server_token(state_dir)
    click.echo(f"LAN       {token.db_host}: Postgres (TLS) port {token.db_port}, broker (TLS) port "
               f"{token.broker_port}; CA {token.ca_fingerprint}")
    click.echo("On each laptop, run (the token is a secret: it holds the worker's passwords; "
               "`greenctl join-token --rotate` replaces it):")
    click.echo(f"  {lan.join_command(token)}")


@click.command("join-token")
@click.option("--rotate", is_flag=True,
              help="New worker passwords: the old token is refused from now on, and workers that joined with "
                   "it must join again with the new one.")
@click.option("--bare", is_flag=True, help="Print the token alone (e.g. to pipe into `greenctl worker --join -`).")
def join_token(rotate: bool, bare: bool) -> None:
    """Print the `greenctl worker --join TOKEN` command of this machine's LAN mode
    (`greenctl up --lan ADDRESS`) again. The token holds the database and broker
    addresses, the worker's passwords and the CA fingerprint: treat it as a secret."""
    from greenctl.cluster import lan
    from shared.join_token import encode

    state = common.settings().state_dir
    if common.embedded.lan_address(state) is None:
        raise common.BadInput(f"join-token: this state dir ({state}) has no LAN mode: start it with "
                              "`greenctl up --lan ADDRESS`")
    if rotate:
        try:
            live = lan.rotate(state)
        except Exception as exc:
            raise click.ClickException(f"--rotate: new passwords saved, but the running servers could not take "
                                       f"them ({str(exc).splitlines()[0]}): run `greenctl up --lan "
                                       f"{common.embedded.lan_address(state)}` to apply them")
        click.echo("rotated: the old token is refused from now on" + (
            " (its open connections were ended)" if live else
            "; the servers are not running: they take the new passwords at the next `greenctl up --lan`")
            + "; workers that joined with it must join again with the token below", err=True)
    token = lan.server_token(state)
    if not common.embedded.lan_config(state):
        click.echo(f"note: LAN mode is off (`greenctl down` ended it): the token works after "
                   f"`greenctl up --lan {token.db_host}`", err=True)
    click.echo(f"CA {token.ca_fingerprint}", err=True)
    click.echo(encode(token) if bare else lan.join_command(token))


def _interrupt(*_):
    raise KeyboardInterrupt


def _print_started(started, directory, flower_auth, workers: int) -> None:
    for s in started:
        click.echo(f"{s.service.name:<10} pid {s.record.pid:<7} {s.how:<9} {s.record.url or s.record.node}")
    click.echo(f"logs      {directory / 'logs'}")
    if flower_auth:
        user, password, generated = flower_auth
        url = next(s.record.url for s in started if s.service.name == "flower")
        shown = (f", generated password {password!r}: shown once, kept in {directory / 'flower-password'}"
                 if generated else "")
        click.echo(f"flower    {url}  (user {user!r}{shown})")
    if workers > 1:
        click.echo(ENERGY_NOTE.format(n=workers))


def _flower_reusable(directory, flower_env: dict, plan) -> bool:
    """True when a Flower with these settings already runs (so its port is ours)."""
    from greenctl.cluster import processes
    from greenctl.cluster.local import settings_digest
    from greenctl.cluster.records import read_all

    flower = next(s for s in plan if s.name == "flower")
    return any(r.name == "flower" and processes.alive(r) and r.argv == flower.argv
               and r.extra.get("digest") == settings_digest(flower_env) for r in read_all(directory))


@click.command()
@click.option("--grace", type=click.FloatRange(0), default=30, show_default=True,
              help="Seconds a worker may take to finish its task before it is killed.")
def down(grace: float) -> None:
    """Stop what `greenctl up` started (by pid, checking each is still that process)
    and the embedded Postgres and Valkey of this state dir."""
    from greenctl.cluster import attached, local

    state = common.settings().state_dir
    port = (local.embedded_servers(state).get("valkey") or {}).get("port")
    ours = {r.pid for r in local.records_of(state)}
    by_hand = attached.attached_workers(port, ours) if port else []
    services, servers = local.down(state, grace_s=grace)
    if by_hand:
        # Without their broker they would retry forever: name them, and stop them with it.
        for w in by_hand:
            click.echo(f"stopping worker pid {w.pid} ({w.command}): it was attached to this state dir's "
                       "broker, which is going away", err=True)
        attached.stop(by_hand, grace)
    names = services + servers + [f"worker pid {w.pid}" for w in by_hand]
    click.echo(f"stopped: {', '.join(names) or 'nothing was running'}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def ps(as_json: bool) -> None:
    """The local cluster's processes and embedded servers, with their health."""
    from greenctl.cluster import local

    settings = common.settings()
    servers = local.embedded_servers(settings.state_dir)
    broker = settings.broker_url or servers.get("valkey", {}).get("url")
    app = _celery_app(broker) if broker else None
    rows, scheduler_seen = local.status(settings.state_dir, app)
    n_workers = sum(r["name"].startswith("worker-") for r in rows)
    if not settings.broker_url and (note := common.embedded.broker_down_note(settings.state_dir)):
        click.echo(f"warning: {note}", err=True)
    if as_json:
        click.echo(json.dumps({"services": rows, "scheduler_last_reconcile_s": scheduler_seen,
                               "shared_energy": n_workers > 1}))
        return
    if not rows:
        click.echo("nothing is running: start it with `greenctl up`")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"local cluster ({settings.state_dir})", title_justify="left")
    for col in ("service", "pid", "state", "restarts", "address", "log"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], str(r["pid"]), r["state"], str(r["restarts"]), r["address"] or "", r["log"])
    Console().print(t)
    for r in rows:
        if r["state"] == "failed":
            click.echo(f"{r['name']} failed: it kept dying right after each restart, so the supervisor "
                       f"gave up; last log lines: {' | '.join(r['last_log'])}; fix it, then `greenctl up`",
                       err=True)
    if scheduler_seen is not None:
        click.echo(f"scheduler: last reconcile {scheduler_seen:.0f} s ago")
    if n_workers > 1:
        click.echo(ENERGY_NOTE.format(n=n_workers))


@click.command("scheduler")
@click.option("--broker", help="Broker URL without a password, e.g. redis://HOST:6379/0 (with one: GREENCTL_BROKER_URL; default: embedded).")
@click.option("--db", help="Database URL without a password, e.g. postgresql://USER@HOST/greenctl (with one: GREENCTL_DATABASE_URL).")
@click.option("--schedule-file", type=click.Path(dir_okay=False),
              help="Celery beat's schedule file (default: <state dir>/scheduler/celerybeat-schedule).")
@click.option("--loglevel", default="INFO", show_default=True)
def scheduler_command(broker, db, schedule_file, loglevel) -> None:
    """Run the scheduler service: every 30 s it re-sends tasks the broker may have lost
    (Postgres is the truth), and it enqueues submitted experiments in batches."""
    from scheduler.tasks import reconcile_once
    from shared.celery_app import SCHEDULER_QUEUE

    db_url, app = common.service_app(broker, db)
    # One pass now: after a restart, whatever was lost is re-sent without waiting for beat.
    try:
        counts = reconcile_once(db_url, app, common.settings().lease_seconds)
        click.echo(f"scheduler: first reconcile sent {counts}", err=True)
    except Exception as exc:  # the broker may come up later; beat retries
        click.echo(f"scheduler: first reconcile failed ({str(exc).splitlines()[0]}); "
                   f"retrying every {common.settings().reconcile_seconds:g} s", err=True)
    schedule = schedule_file or str(common.settings().state_dir / "scheduler" / "celerybeat-schedule")
    os.makedirs(os.path.dirname(os.path.abspath(schedule)), exist_ok=True)
    app.worker_main(["worker", "--pool=solo", "-Q", SCHEDULER_QUEUE, "--beat", "--schedule", schedule,
                     "-n", f"greenctl-{SCHEDULER_QUEUE}@%h", f"--loglevel={loglevel}",
                     "--without-gossip", "--without-mingle"])


def _experiment_id_error(experiment_id: int) -> click.ClickException:
    return common.unknown_experiment(experiment_id)


@click.command()
@click.argument("experiment_id", type=int)
def cancel(experiment_id: int) -> None:
    """Cancel EXPERIMENT_ID: its queued and running tasks become cancelled and workers
    skip them (an inference already running finishes and is kept)."""
    from scheduler.submit import UnknownExperiment, cancel_experiment

    try:
        n = cancel_experiment(common.database_url(), experiment_id)
    except UnknownExperiment:
        raise _experiment_id_error(experiment_id) from None
    if not n:
        raise click.ClickException(f"experiment {experiment_id} has no queued or running task: nothing to "
                                   f"cancel (see `greenctl status {experiment_id}`)")
    click.echo(f"cancelled {n} tasks of experiment {experiment_id}; `greenctl resume {experiment_id}` "
               f"queues them again")


@click.command()
@click.argument("experiment_id", type=int)
def resume(experiment_id: int) -> None:
    """Queue the cancelled tasks of EXPERIMENT_ID again and enqueue them."""
    from greenctl.cli.experiments import _check_broker
    from scheduler.submit import UnknownExperiment, enqueue_or_hand_off, resume_experiment

    app = common.celery_app()
    _check_broker(app)      # before any write: resumed tasks need a broker to reach workers
    db = common.database_url()
    try:
        n = resume_experiment(db, experiment_id)
    except UnknownExperiment:
        raise _experiment_id_error(experiment_id) from None
    if not n:
        raise click.ClickException(f"experiment {experiment_id} has no cancelled task: nothing to resume "
                                   f"(see `greenctl status {experiment_id}`)")
    who, _ = enqueue_or_hand_off(db, app, experiment_id)
    by = "by the scheduler service" if who == "scheduler" else "from here"
    click.echo(f"resumed {n} tasks of experiment {experiment_id}, enqueued {by}")


commands = [up, down, ps, join_token, scheduler_command, cancel, resume]
