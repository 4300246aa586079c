"""Workers: `worker` runs one on this machine; `workers` lists the registered ones."""
from __future__ import annotations

import dataclasses
import json
from datetime import timedelta

import click

from greenctl.cli import common



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
def worker(queues, broker, db, engines, threads, cpu_watts, ram_watts, exclude_ram, calibrate,
           calibrate_seconds, events, loglevel) -> None:
    """Run a Celery worker on this machine: one inference at a time, energy per task."""
    from worker import runtime

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
