"""Workers: `worker` runs one on this machine; `workers` lists the registered ones."""
from __future__ import annotations

import json
import os
from datetime import timedelta

import click
import sqlalchemy as sa

from greenctl.cli import common



def offline_after_s() -> float:
    """A worker is offline after four missed heartbeats (60 s at the default 15 s)."""
    from worker.runtime import heartbeat_seconds

    return 4 * heartbeat_seconds()


@click.command()
@click.option("--queue", "queues", multiple=True, default=["default"], show_default=True,
              help="Queue to consume; repeat for more. The first names this worker.")
@click.option("--broker", help="Broker URL, e.g. redis://HOST:6379/0 (default: GREENCTL_BROKER_URL or embedded).")
@click.option("--db", help="Database URL, e.g. postgresql://USER:PASSWORD@HOST/greenctl.")
@click.option("--engine", "engines", multiple=True, type=click.Choice(["embedded", "ollama"]),
              default=["embedded"], show_default=True, help="Engines this worker runs; repeat for both.")
@click.option("--threads", type=click.IntRange(1, 256), help="CPU threads for inference (default: all cores).")
@click.option("--cpu-watts", type=click.FloatRange(0.1, 2000), help="CPU power at full load (W), scaled by CPU load; energy is then recorded as forced.")
@click.option("--ram-watts", type=click.FloatRange(0.1, 500), help="RAM power (W), constant; recorded as forced.")
@click.option("--calibrate", is_flag=True,
              help="Measure this machine's idle power, store it for net-energy reports, and exit.")
@click.option("--calibrate-seconds", type=click.FloatRange(2, 3600), default=30, show_default=True)
@click.option("--events", is_flag=True,
              help="Send task events from the start (Flower also turns them on when it runs).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(queues, broker, db, engines, threads, cpu_watts, ram_watts, calibrate, calibrate_seconds,
           events, loglevel) -> None:
    """Run a Celery worker on this machine: one inference at a time, energy per task."""
    from worker import runtime

    db_url, app = common.service_app(broker, db)
    options = runtime.WorkerOptions(queue=queues[0], threads=threads, engines=tuple(engines),
                                    ollama_host=os.environ.get("OLLAMA_HOST"),
                                    cpu_watts=cpu_watts, ram_watts=ram_watts,
                                    lease_seconds=common.settings().lease_seconds)
    rt = runtime.start(options, db_url)
    click.echo(f"worker {rt.name}: profile {rt.hardware.profile}, energy {rt.meter.detail}, "
               f"threads {options.threads}, queues {','.join(queues)}", err=True)
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
    try:
        app.worker_main(["worker", "--pool=solo", "-Q", ",".join(queues), f"--loglevel={loglevel}",
                         "-n", f"greenctl-{queues[0]}@%h", "--without-gossip", "--without-mingle",
                         *(["--task-events"] if events else [])])
    finally:
        runtime.stop()


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def workers(as_json: bool) -> None:
    """Registered workers, their hardware profile and whether they are online."""
    from shared.db import session_scope
    from shared.models import WorkerNode, utcnow

    db = common.database_url()
    with session_scope(db) as s:
        nodes = s.execute(sa.select(WorkerNode).order_by(WorkerNode.id)).scalars().all()
    now = utcnow()
    rows = [{
        "hostname": n.hostname, "queue": n.queue, "profile": n.hardware_profile,
        "cpu": n.cpu_model, "cores": n.cores, "ram_gb": n.ram_gb, "gpu": n.gpu,
        "energy_method": n.energy_method, "engines": n.engines, "threads": n.threads,
        "online": now - n.last_heartbeat < timedelta(seconds=offline_after_s()),
        "last_heartbeat": n.last_heartbeat.isoformat(),
    } for n in nodes]
    if as_json:
        click.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="workers", title_justify="left")
    for col in ("hostname", "queue", "profile", "engines", "energy", "threads", "state", "last heartbeat"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["hostname"], r["queue"], r["profile"], ",".join(r["engines"]), r["energy_method"],
                  str(r["threads"]), "online" if r["online"] else "offline", r["last_heartbeat"][:19])
    Console().print(t)


commands = [worker, workers]
