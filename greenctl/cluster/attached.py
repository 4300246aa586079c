"""Workers attached to this machine's embedded broker that `greenctl up` did not start.

`greenctl down` stops the embedded servers; a worker a user started by hand
against them would otherwise loop "Cannot connect" forever. They are found by
their TCP connection to the broker's port, named, and stopped with them.
"""
from __future__ import annotations

from dataclasses import dataclass

import psutil

from greenctl.cluster import processes
from worker.doctor import is_worker_command


@dataclass(frozen=True)
class Attached:
    pid: int
    command: str


def attached_workers(broker_port: int, exclude: set[int]) -> list[Attached]:
    """`greenctl worker` processes with a connection to 127.0.0.1:`broker_port`, not in `exclude`."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info["cmdline"] or []
        # One test of "a greenctl worker process", as its argv or as Celery's retitled form.
        if proc.info["pid"] in exclude or not is_worker_command(cmd):
            continue
        try:
            conns = proc.net_connections(kind="tcp")
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if any(c.raddr and c.raddr.port == broker_port for c in conns):
            found.append(Attached(proc.info["pid"], " ".join(cmd[cmd.index("worker") - 1:]) if "worker" in cmd
                                  else " ".join(cmd)))
    return found


def stop(attached: list[Attached], grace_s: float) -> None:
    """SIGTERM (a worker finishes its task), then SIGKILL after `grace_s`."""
    procs = []
    for a in attached:
        try:
            procs.append(psutil.Process(a.pid))
        except psutil.NoSuchProcess:
            pass
    processes.terminate(procs, grace_s)
