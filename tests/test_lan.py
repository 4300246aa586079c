"""LAN mode: `greenctl up --lan ADDRESS`, the join token, `greenctl worker --join`.

One `up --lan 127.0.0.1` for the module (real embedded Postgres, a TLS-capable
redis-server from PATH, the TLS front), a joined worker in a subprocess with a state
dir of its own and no server URL in its environment. The oracles are independent of
the code under test: the token is parsed here with base64/json, TLS is checked from
the client's side (libpq's and Python's ssl), fingerprints with hashlib.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import shutil
import ssl
import stat
import subprocess
import sys
import time

import psutil
import pytest

from tests.processes import MODEL, ROOT, base_env, greenctl, greenctl_json, worker, write_spec

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None and shutil.which("valkey-server") is None,
                                reason="LAN mode needs a TLS-capable redis-server or valkey-server on PATH "
                                       "(Debian: apt-get install redis-server)")

TOKEN = re.compile(r"greenctl worker --join (gct1\.[A-Za-z0-9_-]+)")


def _fields(token: str) -> dict:
    """The token's contents, decoded here (not with shared.join_token)."""
    body = token.split(".", 1)[1]
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    der = base64.b64decode(data["ca"])
    pem = ssl.DER_cert_to_PEM_cert(der)
    return {"broker": data["b"], "db": data["d"], "fingerprint": data["f"], "der": der, "pem": pem}


def _pg(fields: dict, ca_file, **kw):
    import psycopg2

    host, port, dbname, user, password = fields["db"]
    args = dict(host=host, port=port, dbname=dbname, user=user, password=password, connect_timeout=10,
                sslmode="verify-full", sslrootcert=str(ca_file)) | kw
    return psycopg2.connect(**args)


def _broker(fields: dict, ca_file, **kw):
    import redis

    host, port, user, password = fields["broker"]
    args = dict(host=host, port=port, username=user, password=password, ssl=True, ssl_ca_certs=str(ca_file),
                ssl_cert_reqs="required", socket_timeout=10) | kw
    return redis.Redis(**args)


@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    root = tmp_path_factory.mktemp("lan")
    env = base_env(GREENCTL_STATE_DIR=str(root / "server"), GREENCTL_HEARTBEAT_SECONDS="5")
    started = time.monotonic()
    out = greenctl(["up", "--lan", "127.0.0.1", "--workers", "0", "--wait", "240"], env, timeout=400)
    up_s = time.monotonic() - started
    try:
        match = TOKEN.search(out.stdout)
        assert match, out.stdout
        token = match.group(1)
        ca_file = root / "ca.pem"
        fields = _fields(token)
        ca_file.write_text(fields["pem"])
        yield {"env": env, "out": out.stdout, "token": token, "fields": fields, "ca": ca_file, "root": root,
               "state": root / "server", "up_s": up_s}
    finally:
        greenctl(["down", "--grace", "10"], env, timeout=180, check=False)


def test_up_lan_prints_the_join_command_with_the_cas_fingerprint_and_keeps_its_files_private(lan):
    fields = lan["fields"]
    expected = "sha256:" + hashlib.sha256(fields["der"]).hexdigest()
    assert fields["fingerprint"] == expected
    assert f"CA {expected}" in lan["out"]
    state = lan["state"]
    files = [state / "tls" / n for n in ("ca.pem", "ca.key", "server.pem", "server.key")] + \
            [state / "lan" / n for n in ("worker-db-password", "broker-user-password", "lan.json")] + \
            [state / "valkey" / "valkey.conf", state / "lan" / "pg_tls.json"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for directory in (state / "tls", state / "lan"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    # The passwords in the token are the ones kept in the state dir, and no command line holds them.
    assert fields["db"][4] == (state / "lan" / "worker-db-password").read_text().strip()
    cmdlines = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    assert not [c for c in cmdlines if fields["db"][4] in c or fields["broker"][3] in c]
    # `join-token` prints the same command again.
    again = greenctl(["join-token"], lan["env"])
    assert again.stdout.strip() == f"greenctl worker --join {lan['token']}"


def test_the_lan_ports_speak_tls_only_verified_against_the_tokens_ca(lan):
    import psycopg2
    import redis

    fields, ca = lan["fields"], lan["ca"]
    with _pg(fields, ca) as conn:
        assert conn.info.ssl_in_use
        assert conn.info.ssl_attribute("protocol") in ("TLSv1.2", "TLSv1.3")
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == "greenctl_worker"
    with pytest.raises(psycopg2.OperationalError):
        _pg(fields, ca, sslmode="disable")                  # plain: refused
    with pytest.raises(psycopg2.OperationalError, match="pg_hba|reject"):
        _pg(fields, ca, user="postgres", password="")       # only the worker role, even over TLS
    client = _broker(fields, ca)
    assert client.ping()
    with pytest.raises(redis.ResponseError, match="permission|NOPERM"):
        client.flushall()                                   # the worker's user administers nothing
    client.close()
    host, port, user, password = fields["broker"]
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host=host, port=port, username=user, password=password, socket_timeout=5).ping()   # plain
    # A CA other than the server's: the server's certificate does not verify.
    other = lan["root"] / "other-ca.pem"
    other.write_text(_throwaway_ca()[0])
    with pytest.raises(psycopg2.OperationalError, match="certificate verify failed"):
        _pg(fields, other)


def test_a_joined_worker_with_no_server_urls_runs_an_experiment_over_tls(lan, tmp_path):
    laptop = tmp_path / "laptop"
    # A lock file of its own: other test sessions on this host measuring would make it wait.
    env = base_env(GREENCTL_STATE_DIR=str(laptop), GREENCTL_HEARTBEAT_SECONDS="5",
                   GREENCTL_MEASURE_LOCK=str(tmp_path / "measure.lock"))
    assert not {"GREENCTL_DATABASE_URL", "GREENCTL_BROKER_URL"} & set(env)
    spec = write_spec(tmp_path / "lan.yaml", [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}],
                      sample=2, queue="laptop-lan")
    log = tmp_path / "worker.log"
    with worker(env, "laptop-lan", log, "--join", lan["token"], ready_timeout=180) as proc:
        cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read().decode(errors="replace")
        assert lan["token"] not in cmdline and "--join" in cmdline
        assert "over TLS" in log.read_text()
        fields = lan["fields"]
        ports = {c.raddr.port for c in psutil.Process(proc.pid).net_connections(kind="tcp") if c.raddr}
        assert {fields["db"][1], fields["broker"][1]} <= ports      # both are TLS-only ports
        done = greenctl_json(["submit", str(spec), "--wait", "--json", "--timeout", "300"], lan["env"], timeout=360)
        status = greenctl_json(["status", str(done["experiment_id"]), "--json"], lan["env"])
        assert status["status"] == "done" and status["n_done"] == status["n_tasks"] == 2
        workers = greenctl_json(["workers", "--json"], lan["env"])["workers"]
        assert any(w["queue"] == "laptop-lan" and w["online"] for w in workers)
    for name in ("token", "ca.pem"):
        assert stat.S_IMODE((laptop / "join" / name).stat().st_mode) == 0o600
    assert (laptop / "join" / "token").read_text().strip() == lan["token"]
    assert not (laptop / "pgdata").exists() and not (laptop / "valkey").exists()   # nothing embedded started


def _throwaway_ca() -> tuple[str, bytes]:
    """A CA that is not the server's: (PEM, DER)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert.public_bytes(serialization.Encoding.DER)


def _token_with(token: str, **changes) -> str:
    body = token.split(".", 1)[1]
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) | changes
    return "gct1." + base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _join(token: str, tmp_path, stdin: str | None = None, **env):
    argv = [sys.executable, "-m", "greenctl", "worker", "--join", *(["-"] if stdin is not None else [token]),
            "--queue", "lan-check", "--calibrate", "--calibrate-seconds", "2"]
    env = base_env(GREENCTL_STATE_DIR=str(tmp_path / "j"), GREENCTL_MEASURE_LOCK=str(tmp_path / "measure.lock"), **env)
    return subprocess.run(argv, env=env, input=stdin,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def _error_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("Error:")]


def test_a_token_whose_ca_does_not_match_is_refused_in_one_line(lan, tmp_path):
    # A wrong fingerprint: the token was altered.
    altered = _token_with(lan["token"], f="sha256:" + "0" * 64)
    proc = _join(altered, tmp_path)
    assert proc.returncode == 2 and len(_error_lines(proc)) == 1 and "fingerprint" in proc.stderr, proc.stderr
    # A CA (with its own, matching fingerprint) that did not sign the servers' certificates.
    pem, der = _throwaway_ca()
    impostor = _token_with(lan["token"], ca=base64.b64encode(der).decode(),
                           f="sha256:" + hashlib.sha256(der).hexdigest())
    proc = _join(impostor, tmp_path)
    assert proc.returncode == 1 and len(_error_lines(proc)) == 1, proc.stderr
    assert "not signed by the token's CA" in proc.stderr
    # Not a token at all.
    proc = _join("eyJhbGciOi.not-ours", tmp_path)
    assert proc.returncode == 2 and "not a greenctl join token" in proc.stderr


def test_rotate_refuses_the_old_token_and_ends_its_connections(lan, tmp_path):
    import psycopg2
    import redis

    old, ca = lan["fields"], lan["ca"]
    held = _pg(old, ca)
    held_broker = _broker(old, ca)
    held_broker.ping()
    rotated = greenctl(["join-token", "--rotate", "--bare"], lan["env"])
    assert "old token is refused" in rotated.stderr
    new_token = rotated.stdout.strip()
    assert new_token != lan["token"]
    with pytest.raises(psycopg2.Error):
        with held.cursor() as cur:
            cur.execute("SELECT 1")                        # its session was ended
    with pytest.raises(redis.RedisError):
        held_broker.ping()
    proc = _join(lan["token"], tmp_path)
    assert proc.returncode == 1 and len(_error_lines(proc)) == 1, proc.stderr
    assert "rotated" in proc.stderr
    # The new token works, read from stdin (kept off the command line), then kept for a bare `--join`.
    proc = _join("", tmp_path, stdin=new_token + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "idle power" in proc.stdout
    assert (tmp_path / "j" / "join" / "token").read_text().strip() == new_token
    held.close()


def test_lan_with_an_address_of_another_machine_is_bad_input_and_starts_nothing(tmp_path):
    env = base_env(GREENCTL_STATE_DIR=str(tmp_path / "s"))
    proc = greenctl(["up", "--lan", "203.0.113.7"], env, check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: --lan: 203.0.113.7 is not an address of this machine")
    assert not (tmp_path / "s" / "services.json").exists() and not (tmp_path / "s" / "pgdata").exists()


def test_join_token_errors_are_one_line_each():
    from shared.join_token import JoinToken, TokenError, decode, encode, fingerprint

    der = b"\x30\x03\x02\x01\x01"
    token = encode(JoinToken("10.0.0.1", 6380, "u", "p", "10.0.0.1", 5433, "greenctl", "w", "q",
                             fingerprint(der), der))
    assert decode(token).db_port == 5433 and decode(token).ca_der == der
    for bad, words in ((token[:40], "truncated"), ("gct2." + token[5:], "not a greenctl join token"),
                       ("", "empty"), (_token_with(token, f="sha256:00"), "fingerprint")):
        with pytest.raises(TokenError, match=words) as info:
            decode(bad)
        assert "\n" not in str(info.value)


def test_the_postgres_tls_front_answers_only_requests_for_encryption():
    import struct

    from shared.pg_tls import negotiation_reply

    assert negotiation_reply(struct.pack("!ii", 8, 80877103)) == b"S"     # SSLRequest: TLS follows
    assert negotiation_reply(struct.pack("!ii", 8, 80877104)) == b"N"     # GSSENCRequest: not offered
    assert negotiation_reply(struct.pack("!ii", 41, 196608)) is None      # a plain StartupMessage
    assert negotiation_reply(struct.pack("!ii", 16, 80877102)) is None    # a CancelRequest in clear
    assert negotiation_reply(b"\x16\x03\x01\x02\x00\x01\x00\x01") is None  # TLS without the request
