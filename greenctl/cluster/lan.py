"""LAN mode around the embedded servers: the join token (`greenctl up --lan`,
`greenctl join-token [--rotate]`) and its use by `greenctl worker --join`.

Server side: the token carries the LAN address, the ports of the TLS broker and of
Postgres's TLS front, the worker role's and the broker user's passwords (each
generated once into <state dir>/lan/, 0600) and the CA (fingerprint and
certificate). Worker side: the CA goes into <state dir>/join/ (0600), the URLs
verify the servers against it (psycopg2 sslmode=verify-full, rediss with
ssl_cert_reqs=required and hostname check), and the token itself is kept there
(0600) so a later `greenctl worker --join` needs no value.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import quote

from shared import embedded
from shared.join_token import JoinToken, der_of_pem, encode, fingerprint
from shared.roles import WORKER_ROLE

JOIN_DIR = "join"
STORED_TOKEN = "token"


class JoinRefused(RuntimeError):
    """A server refused the worker, or could not be verified: one line naming the fix."""


def check_address(address: str) -> str | None:
    """None when `address` (an IP or a name) is one this machine can listen on, else the reason."""
    try:
        infos = socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"{address!r} does not resolve ({exc.strerror})"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((sockaddr[0], 0))
        except OSError as exc:
            return f"{address} is not an address of this machine ({exc.strerror})"
    return None


def local_addresses() -> list[str]:
    """This machine's IPv4 addresses, loopback last: what `--lan` may be given."""
    import psutil

    found = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET]
    return sorted(set(found), key=lambda a: (a.startswith("127."), a))


def server_token(state_dir: Path) -> JoinToken:
    """The join token of this state dir's LAN mode (its address, ports, passwords and CA)."""
    address = embedded.lan_address(state_dir)
    if address is None:
        raise FileNotFoundError("no LAN mode in this state dir")
    der = der_of_pem((state_dir / "tls" / "ca.pem").read_text())
    broker_port = embedded.valkey_port(state_dir / "valkey")
    db_port = embedded.lan_port(state_dir, "postgres-lan-port", address)
    return JoinToken(address, broker_port, embedded.BROKER_USER,
                     embedded.lan_secret(state_dir, embedded.BROKER_SECRET),
                     address, db_port, "greenctl", WORKER_ROLE, embedded.lan_secret(state_dir, embedded.DB_SECRET),
                     fingerprint(der), der)


def join_command(token: JoinToken) -> str:
    return f"greenctl worker --join {encode(token)}"


def setup_roles(state_dir: Path, admin_url: str) -> None:
    """The worker role with this state dir's LAN password (created or updated)."""
    from shared.roles import create_roles

    create_roles(admin_url, worker_password=embedded.lan_secret(state_dir, embedded.DB_SECRET))


def rotate(state_dir: Path) -> bool:
    """New worker-role and broker-user passwords; applied to the running servers (their
    sessions with the old ones are ended). False when the servers are not running: they
    take the new passwords at the next `greenctl up --lan`."""
    from shared.roles import create_roles, end_sessions

    db_password = embedded.lan_secret(state_dir, embedded.DB_SECRET, rotate=True)
    broker_password = embedded.lan_secret(state_dir, embedded.BROKER_SECRET, rotate=True)
    running = embedded.running(state_dir) if embedded.lan_config(state_dir) else {}
    if "postgres" not in running or "valkey" not in running:
        return False
    admin_url = running["postgres"]["url"]
    create_roles(admin_url, worker_password=db_password)
    end_sessions(admin_url, WORKER_ROLE)
    import redis

    client = redis.Redis.from_url(running["valkey"]["url"], socket_timeout=5)
    try:
        client.execute_command("ACL", "SETUSER", embedded.BROKER_USER, "resetpass", f">{broker_password}")
        client.execute_command("CLIENT", "KILL", "USER", embedded.BROKER_USER)
    finally:
        client.close()
    return True


# --- the worker's side ------------------------------------------------------------------

def _host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def join_dir(state_dir: Path) -> Path:
    path = state_dir / JOIN_DIR
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def store_token(state_dir: Path, text: str) -> Path:
    path = join_dir(state_dir) / STORED_TOKEN
    _private(path, text.strip() + "\n")
    return path


def stored_token(state_dir: Path) -> str | None:
    path = state_dir / JOIN_DIR / STORED_TOKEN
    return path.read_text().strip() if path.exists() else None


def join_urls(token: JoinToken, state_dir: Path) -> tuple[str, str]:
    """(database URL, broker URL) for a worker that joins with `token`: the CA written
    to <state dir>/join/ca.pem (0600), both servers verified against it, by name/IP."""
    ca = join_dir(state_dir) / "ca.pem"
    _private(ca, token.ca_pem)
    db = (f"postgresql+psycopg2://{quote(token.db_user, safe='')}:{quote(token.db_password, safe='')}@"
          f"{_host(token.db_host)}:{token.db_port}/{quote(token.db_name, safe='')}"
          f"?sslmode=verify-full&sslrootcert={quote(str(ca))}")
    broker = (f"rediss://{quote(token.broker_user, safe='')}:{quote(token.broker_password, safe='')}@"
              f"{_host(token.broker_host)}:{token.broker_port}/0"
              f"?ssl_cert_reqs=required&ssl_ca_certs={quote(str(ca))}&ssl_check_hostname=true")
    return db, broker


REJOIN = "get the current token with `greenctl join-token` on the server, then join again"


def _reason(kind: str, where: str, message: str, fp: str) -> str:
    low = message.lower()
    if "certificate verify failed" in low or "certificate" in low and "verif" in low:
        return (f"the {kind} at {where} has a certificate not signed by the token's CA ({fp[:19]}…): "
                f"the token is for another cluster, or something else answers at that address; {REJOIN}")
    if "password authentication failed" in low or "wrongpass" in low or "invalid username-password" in low:
        return (f"the {kind} at {where} refused the token's credentials: the token was rotated "
                f"(`greenctl join-token --rotate`); {REJOIN}")
    first = message.strip().splitlines()[0] if message.strip() else type(message).__name__
    return f"the {kind} at {where} is unreachable over TLS ({first}): is `greenctl up --lan` running there?"


def check_join(token: JoinToken, db_url: str, broker_url: str) -> None:
    """Connect to both servers as the token says, verifying their certificates; JoinRefused
    (one line: not our CA, rotated token, unreachable) on the first that fails."""
    import psycopg2
    import redis

    dsn = db_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    where = f"{token.db_host}:{token.db_port}"
    try:
        psycopg2.connect(dsn, connect_timeout=10).close()
    except psycopg2.Error as exc:
        raise JoinRefused(_reason("database", where, str(exc), token.ca_fingerprint)) from None
    where = f"{token.broker_host}:{token.broker_port}"
    client = redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=10)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise JoinRefused(_reason("broker", where, str(exc), token.ca_fingerprint)) from None
    finally:
        client.close()
