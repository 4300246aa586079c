"""Workers: `worker` runs one on this machine; `workers` lists the registered ones."""
from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import click

from greenctl.cli import common



STORED = "\0stored"      # `--join` with no value: GREENCTL_JOIN_TOKEN, else the token an earlier join kept


def _hide_join_token(ctx, param, value):
    """As soon as the command line is parsed: hide the token from `ps` (a secret). The package's
    import already did it (greenctl.hide_join_token, before the CLI's slow imports); this catches
    a token that does not start with the usual prefix."""
    if value not in (None, STORED, "-"):
        import sys

        import setproctitle

        # sys.argv itself too: Celery's worker puts it in the title it sets later.
        for i, arg in enumerate(sys.argv):
            if arg == value:
                sys.argv[i] = "***"
            elif arg.startswith("--join=") and arg != "--join=***":
                sys.argv[i] = "--join=***"
        setproctitle.setproctitle(" ".join(sys.argv))
    return value


def offline_after_s() -> float:
    """A worker is offline after four missed heartbeats (60 s at the default 15 s)."""
    return 4 * common.settings().heartbeat_seconds


@click.command()
@click.option("--queue", "queues", multiple=True, default=["default"], show_default=True,
              help="Queue to consume; repeat for more. The first names this worker.")
@click.option("--broker", help="Broker URL without a password, e.g. redis://HOST:6379/0 (with one: GREENCTL_BROKER_URL; default: embedded).")
@click.option("--db", help="Database URL without a password, e.g. postgresql://USER@HOST/greenctl (with one: GREENCTL_DATABASE_URL).")
@click.option("--engine", "engines", multiple=True, type=click.Choice(["embedded", "ollama"]),
              help="Engines this worker runs; repeat for both (default: GREENCTL_ENGINES, else embedded).")
@click.option("--threads", type=click.IntRange(1, 256), help="CPU threads for inference (default: all cores).")
@click.option("--cpu-watts", type=click.FloatRange(0.1, 2000), help="CPU power at full load (W), scaled by CPU load; energy is then recorded as forced.")
@click.option("--ram-watts", type=click.FloatRange(0.1, 500), help="RAM power (W), constant; recorded as forced.")
@click.option("--exclude-ram", is_flag=True, help="Leave RAM out of energy figures instead of estimating it; recorded as ram=excluded.")
@click.option("--calibrate", is_flag=True,
              help="Measure this machine's idle power, store it for net-energy reports, and exit.")
@click.option("--calibrate-seconds", type=click.FloatRange(2, 3600), default=30, show_default=True,
              help="With --calibrate: how long to measure the idle machine (keep it idle meanwhile).")
@click.option("--events", is_flag=True,
              help="Send task events from the start (Flower also turns them on when it runs).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--join", "join", metavar="TOKEN", is_flag=False, flag_value=STORED, callback=_hide_join_token,
              help="Join the cluster of `greenctl up --lan` with the token it printed: its broker and database, "
                   "over TLS verified against the token's CA. '-': read the token from stdin; no value: "
                   "GREENCTL_JOIN_TOKEN, else the token kept (0600) by an earlier join on this machine.")
def worker(queues, broker, db, engines, threads, cpu_watts, ram_watts, exclude_ram, calibrate,
           calibrate_seconds, events, loglevel, join) -> None:
    """Run a Celery worker on this machine: one inference at a time, energy per task."""
    from worker import runtime

    if join is not None or common.settings().join_token:
        db_url, app = _joined(join, broker, db)
    else:
        db_url, app = common.service_app(broker, db)
    defaults = runtime.WorkerOptions.from_settings(common.settings())
    # A flag given wins over its environment variable (GREENCTL_THREADS, GREENCTL_CPU_WATTS, ...).
    options = dataclasses.replace(defaults, queue=queues[0], threads=threads or defaults.threads,
                                  engines=tuple(engines) or defaults.engines, cpu_watts=cpu_watts or defaults.cpu_watts,
                                  ram_watts=ram_watts or defaults.ram_watts,
                                  exclude_ram=exclude_ram or defaults.exclude_ram)
    from worker import doctor

    plan = doctor.plan(doctor.probe(cpu_watts=options.cpu_watts, ram_watts=options.ram_watts,
                                    exclude_ram=options.exclude_ram))
    click.echo("\n".join(doctor.summary_lines(plan)), err=True)   # the same as `greenctl doctor`
    rt = runtime.start(options, db_url)
    click.echo(f"worker {rt.name}: profile {rt.hardware.profile}, energy {rt.meter.method} "
               f"({rt.meter.detail}), threads {options.threads}, queues {','.join(queues)}", err=True)
    if calibrate:
        from worker import store

        try:
            watts = rt.meter.idle_watts(calibrate_seconds)
            store.set_idle_watts(db_url, rt.hardware.hostname, options.queue, watts)
        finally:
            runtime.stop()
        click.echo(f"idle power of {rt.hardware.hostname}: {watts:.1f} W over {calibrate_seconds:.0f} s "
                   f"({rt.meter.method}); later results record idle energy for net reports")
        return
    from celery.signals import worker_shutting_down

    grace_s = common.settings().shutdown_grace_seconds
    worker_shutting_down.connect(lambda **_: runtime.exit_after(grace_s), weak=False)
    try:
        app.worker_main(["worker", "--pool=solo", "-Q", ",".join(queues), f"--loglevel={loglevel}",
                         "-n", f"greenctl-{queues[0]}@%h", "--without-gossip", "--without-mingle",
                         *(["--task-events"] if events else [])])
    finally:
        runtime.stop()


def _joined(join: str | None, broker: str | None, db: str | None):
    """(database URL, Celery app) of the LAN cluster the join token names, after checking
    both servers answer with certificates of the token's CA and accept its passwords."""
    import sys

    from greenctl.cluster import lan
    from shared.celery_app import configure
    from shared.join_token import TokenError, decode

    if broker or db:
        raise common.BadInput("--join: the token names the broker and database: drop --broker/--db")
    settings = common.settings()
    if join == "-":
        text = sys.stdin.readline()
    elif join in (None, STORED):
        text = settings.join_token or lan.stored_token(settings.state_dir)
        if not text:
            raise common.BadInput("--join: no token given, none in GREENCTL_JOIN_TOKEN and none kept from an earlier "
                                  "join: pass the one `greenctl join-token` prints on the server (or '-' for stdin)")
    else:
        text = join
    try:
        token = decode(text)
    except TokenError as exc:
        raise common.BadInput(str(exc)) from None
    db_url, broker_url = lan.join_urls(token, settings.state_dir)
    try:
        lan.check_join(token, db_url, broker_url)
    except lan.JoinRefused as exc:
        raise click.ClickException(f"--join: {exc}") from None
    kept = lan.store_token(settings.state_dir, text)
    click.echo(f"joined {token.db_host}: database port {token.db_port} and broker port {token.broker_port} "
               f"over TLS, certificates verified against CA {token.ca_fingerprint}; token kept in {kept} (0600)",
               err=True)
    s = dataclasses.replace(settings, database_url=db_url, broker_url=broker_url)
    db_url = common.database_url(s, start=True)
    return db_url, configure(broker_url, db_url, s)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("--wide", **common.WIDE_OPTION)
def workers(as_json: bool, wide: bool) -> None:
    """Registered workers, their hardware profile and whether they are online."""
    from greenctl import queries
    from shared.models import utcnow

    nodes = queries.worker_nodes(common.database_url())
    now = utcnow()
    rows = [{
        "hostname": n.hostname, "queue": n.queue, "profile": n.hardware_profile,
        "cpu": n.cpu_model, "cores": n.cores, "ram_gb": n.ram_gb, "gpu": n.gpu,
        "energy_method": n.energy_method, "engines": n.engines, "threads": n.threads,
        "online": now - n.last_heartbeat < timedelta(seconds=offline_after_s()),
        "last_heartbeat": n.last_heartbeat.isoformat(),
    } for n in nodes]
    if as_json:
        click.echo(json.dumps({"workers": rows}))
        return
    from rich import box
    from rich.table import Table

    t = Table(title="workers (times UTC)", title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True)
    columns = ["host", "queue"] + (["profile", "threads"] if wide else []) + ["engines", "energy", "state", "heard"]
    for col in columns:
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["hostname"], r["queue"], *([r["profile"], str(r["threads"])] if wide else []),
                  ",".join(r["engines"]), r["energy_method"], "online" if r["online"] else "offline",
                  common.short_time(r["last_heartbeat"]))
    common.table_console(wide).print(t)


commands = [worker, workers]
