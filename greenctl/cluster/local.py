"""`up`, `down` and `ps` of the local cluster, without the command line around them."""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import fasteners

from greenctl.cluster import health, processes, supervise
from greenctl.cluster.records import ProcessRecord, cluster_dir, read_all, remove
from greenctl.cluster.services import Service
from shared import embedded
from shared.config import child_environment


@dataclass
class Started:
    service: Service
    record: ProcessRecord
    how: str            # "started", "running" (reused) or "restarted" (its settings changed)


def settings_digest(env: dict) -> str:
    """Fingerprint of what a service was started with (URLs, credentials), never the values."""
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]


def up(state_dir: Path, services: list[Service], env_of: dict[str, dict]) -> list[Started]:
    """Start each service not already running with the same settings; reuse the others.

    `env_of[name]` holds the variables that service needs on top of this process's
    environment. On Ctrl-C, the processes this call started are stopped again.
    """
    directory = cluster_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)     # pid files hold digests of credentials, logs may hold URLs
    started: list[ProcessRecord] = []
    with fasteners.InterProcessLock(str(directory / ".up.lock")):
        existing = {r.name: r for r in read_all(directory)}
        result = []
        try:
            for service in services:
                extra_env = env_of.get(service.name, {})
                digest = settings_digest(extra_env)
                old = existing.get(service.name)
                how = "started"
                if old is not None and processes.alive(old):
                    if old.extra.get("digest") == digest and old.argv == service.argv:
                        result.append(Started(service, old, "running"))
                        continue
                    processes.stop(directory, [old], descendants=old.name != supervise.NAME)
                    how = "restarted"
                elif old is not None:
                    remove(directory, old.name)   # stale: its process is gone
                log = directory / "logs" / f"{service.name}.log"
                record = processes.spawn(directory, service.name, service.argv, child_environment(extra_env),
                                         log, node=service.node, url=service.url,
                                         extra={"digest": digest}, started=started)
                result.append(Started(service, record, how))
        except BaseException:
            processes.stop(directory, started, grace_s=10)
            raise
    return result


def wait_ready(app, records: list[ProcessRecord], timeout_s: float, poll_s: float = 1.0) -> dict[str, str]:
    """Poll until every service is ready, one has exited, or time is up; state by name."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = states_of(app, records)
        if all(s in ("ready", "running") for s in states.values()) or "exited" in states.values() \
                or time.monotonic() > deadline:
            return states
        time.sleep(poll_s)


def states_of(app, records: list[ProcessRecord]) -> dict[str, str]:
    """ready (answers), running (alive, nothing to ask: the supervisor), starting (alive,
    not answering yet), exited (process gone) or failed (the supervisor gave up on it)."""
    answering = health.ping_nodes(app, [r.node for r in records if r.node]) if app is not None else set()
    states = {}
    for r in records:
        if not processes.alive(r):
            states[r.name] = "failed" if supervise.is_failed(r) else "exited"
        elif not r.node and not r.url:
            states[r.name] = "running"
        elif (r.node and r.node in answering) or (r.url and health.flower_ok(r.url)):
            states[r.name] = "ready"
        else:
            states[r.name] = "starting"
    return states


def last_log_line(record: ProcessRecord) -> str:
    try:
        lines = Path(record.log).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def down(state_dir: Path, grace_s: float = 30) -> tuple[list[str], list[str]]:
    """Stop the supervisor first (so it restarts nothing), then the recorded processes,
    then the embedded servers: (services, servers) stopped."""
    directory = cluster_dir(state_dir)
    if not directory.exists():
        return [], embedded.stop(state_dir)
    first = [r for r in read_all(directory) if r.name == supervise.NAME]
    stopped = processes.stop(directory, first, grace_s=10, descendants=False)
    stopped += processes.stop(directory, read_all(directory), grace_s=grace_s)
    return stopped, embedded.stop(state_dir)


def records_of(state_dir: Path) -> list[ProcessRecord]:
    """The processes `greenctl up` started and recorded under state_dir."""
    directory = cluster_dir(state_dir)
    return read_all(directory) if directory.exists() else []


def status(state_dir: Path, app) -> tuple[list[dict], float | None]:
    """(one row per service and embedded server, seconds since the scheduler's last
    reconcile or None); `app` (None when no broker is known) is used for pings."""
    from shared.config import mask_url

    records = read_all(cluster_dir(state_dir))
    states = states_of(app, records)
    rows = [{"name": r.name, "pid": r.pid, "state": states[r.name], "address": r.url or r.node,
             "log": r.log, "restarts": r.extra.get("restarts", 0),
             "last_restart": r.extra.get("last_restart"), "last_log": r.extra.get("last_log", [])}
            for r in records]
    alive = embedded.running(state_dir)          # Valkey: it must answer, not merely have a pid
    for name, info in embedded_servers(state_dir).items():
        running = name in alive
        rows.append({"name": name, "pid": info.get("pid"), "state": "running" if running else "exited",
                     "address": mask_url(info.get("url")) or _server_address(name, info), "log": "", "restarts": 0,
                     "last_restart": None,
                     "last_log": []})
    seen = None
    if app is not None and any(r.name == "scheduler" for r in records):
        from scheduler.liveness import last_seen

        seen = last_seen(app)
    return rows, None if seen is None else round(time.time() - seen, 1)


def _server_address(name: str, info: dict) -> str:
    """Where a server without a URL listens: LAN mode's TLS front of Postgres."""
    return f"{info['address']}:{info['port']} (TLS)" if name == "pg_tls" and info.get("port") else ""


def embedded_servers(state_dir: Path) -> dict:
    """The embedded servers recorded under the state dir (nothing is started)."""
    return embedded.recorded(state_dir)
