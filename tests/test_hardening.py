"""Issue 18, hardening: nothing open to other local users, no fault that skews a figure,
hangs that say so. Real processes and servers throughout (a real `greenctl worker`,
Valkey, Postgres); where another local user matters, a throwaway system user is
created for the test and removed after it.
"""
from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from tests.processes import MODEL, ROOT, base_env, greenctl, worker, write_spec
from tests.test_faults import (experiment_status, fault_env, long_texts, query, spec_for, submit, valkey,
                               wait_until)

pytestmark = pytest.mark.timeout(180)
TABLES = ("experiment", "variant", "task", "result")


# -- helpers -----------------------------------------------------------------------------

@contextmanager
def local_user():
    """A throwaway system user (no home, no login shell), removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("creating a second local user needs root")
    name = f"gtest{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "--force", name], check=False)
        assert name not in {p.pw_name for p in pwd.getpwall()}


def as_user(user, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    """Run argv as `user` (its uid and gid, no supplementary groups)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/",
                          user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                          env={"PATH": "/usr/bin:/bin", "HOME": "/"})


def tcp_listeners(pid: int) -> list:
    """TCP sockets in LISTEN owned by the process or any of its children."""
    proc = psutil.Process(pid)
    found = []
    for p in [proc, *proc.children(recursive=True)]:
        try:
            found += [c for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            pass
    return found


def embedded_broker(state: Path) -> dict:
    """Start (or reuse) this state dir's embedded Valkey from a fresh process, as the CLI does."""
    code = ("import json, sys; from pathlib import Path; from shared.embedded import ensure; "
            "print(json.dumps(ensure(Path(sys.argv[1]), need_db=False)['valkey']))")
    out = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def raw_redis(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(command)
        return s.recv(256)


def row_counts(db: str) -> dict[str, int]:
    engine = sa.create_engine(db, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
    finally:
        engine.dispose()


# -- 1. no TCP listener in a worker -------------------------------------------------------

def test_a_worker_with_models_loaded_owns_no_tcp_listener(tmp_path, fresh_db_url):
    """xllamacpp always opens an HTTP listener per loaded model; the engine shuts it right after
    loading (requests are in-process), so no local user can run generations on the worker."""
    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path)
        spec = write_spec(tmp_path / "listen.yaml", [{"name": MODEL, "engine": "embedded",
                                                       "variants": ["q4_0", "q8_0"]}], sample=2, queue="listen")
        with worker(env, "listen", tmp_path / "worker.log", "--threads", "1") as proc:
            eid = submit(spec, env)
            wait_until(lambda: experiment_status(fresh_db_url, eid) == "done", 90, "both variants ran")
            # Both models are still loaded (kept for the next task): their servers exist.
            assert query(fresh_db_url, "SELECT count(*) FROM result WHERE experiment_id = :e", e=eid)[0][0] == 4
            assert tcp_listeners(proc.pid) == []
            ports = {c.laddr.port for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN and c.pid == proc.pid}
            assert ports == set()


# -- 2. embedded Valkey: password, never on a command line; 4. same port after a crash -----

def test_embedded_valkey_needs_its_password_which_no_command_line_or_other_user_sees(tmp_path):
    from shared import embedded

    state = tmp_path / "state"
    try:
        info = embedded_broker(state)
        port, password = info["port"], (state / "valkey" / "password").read_text().strip()
        assert len(password) >= 32 and f":{password}@" in info["url"]
        # Unauthenticated: refused; with the recorded URL: served.
        assert raw_redis(port, b"PING\r\n").startswith(b"-NOAUTH")
        assert raw_redis(port, b"FLUSHALL\r\n").startswith(b"-NOAUTH")
        import redis
        assert redis.Redis.from_url(info["url"]).ping() is True
        # No process shows the password on its command line (what `ps` shows every user).
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                assert password.encode() not in cmdline, cmdline
        assert password.encode() not in Path(f"/proc/{info['pid']}/cmdline").read_bytes()
        # The files that hold it are this user's only.
        for path in (state / "valkey" / "password", state / "valkey" / "valkey.conf", state / "services.json"):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE((state / "valkey").stat().st_mode) == 0o700
        with local_user() as other:
            # Another local user: no password to read, and the broker refuses it.
            os.chmod(tmp_path, 0o755), os.chmod(state, 0o755)     # even with the dirs above open to it
            for path in ("valkey/password", "valkey/valkey.conf", "services.json"):
                out = as_user(other, ["cat", str(state / path)])
                assert out.returncode != 0 and "Permission denied" in out.stderr, path
            code = ("import socket; s = socket.create_connection(('127.0.0.1', %d)); "
                    "s.sendall(b'PUBLISH /0.celery.pidbox x\\r\\nCONFIG GET requirepass\\r\\n'); "
                    "import time; time.sleep(0.3); print(s.recv(256))" % port)
            out = as_user(other, ["/usr/bin/python3", "-c", code])
            assert out.returncode == 0, out.stderr
            assert out.stdout.count("NOAUTH") == 2 and password not in out.stdout

        # 4. Valkey dies: a read-only command says so and what to run, and starts nothing.
        os.kill(info["pid"], signal.SIGKILL)
        wait_until(lambda: not psutil.pid_exists(info["pid"]) or
                   psutil.Process(info["pid"]).status() == psutil.STATUS_ZOMBIE, 10, "valkey gone")
        assert embedded.broker_down_note(state) is not None
        out = greenctl(["ps", "--json"], base_env(GREENCTL_STATE_DIR=str(state)), check=False)
        assert [r["state"] for r in json.loads(out.stdout)["services"] if r["name"] == "valkey"] == ["exited"]
        assert "not running" in out.stderr and "greenctl up" in out.stderr
        assert embedded.running(state) == {}          # `ps` started no broker behind the user's back
        # The next start reuses the recorded port and password: every service's URL still works.
        again = embedded_broker(state)
        assert (again["port"], again["url"]) == (port, info["url"]) and again["pid"] != info["pid"]
        assert redis.Redis.from_url(again["url"]).ping() is True
    finally:
        embedded.stop(state)


def test_status_warns_when_the_embedded_broker_is_down(tmp_path, db_url):
    from greenctl.cli import main
    from shared import embedded

    state = tmp_path / "state"
    info = embedded_broker(state)
    try:
        env = {"GREENCTL_STATE_DIR": str(state), "GREENCTL_DATABASE_URL": db_url, "GREENCTL_BROKER_URL": ""}
        ok = CliRunner().invoke(main, ["status", "--json"], env=env, catch_exceptions=False)
        assert ok.exit_code == 0 and "not running" not in ok.stderr
        os.kill(info["pid"], signal.SIGKILL)
        wait_until(lambda: embedded.broker_down_note(state) is not None, 10, "valkey seen down")
        down = CliRunner().invoke(main, ["status", "--json"], env=env, catch_exceptions=False)
        assert down.exit_code == 0
        json.loads(down.stdout)                         # the JSON is still one object on stdout
        (line,) = [x for x in down.stderr.splitlines() if x.strip()]
        assert "Valkey" in line and "not running" in line and "greenctl up" in line
        assert embedded.running(state) == {}             # nothing was started behind the user's back
    finally:
        embedded.stop(state)


# -- 3. passwords on command lines -------------------------------------------------------

@pytest.mark.parametrize("flag,url,variable", [
    ("--broker", "redis://:s3cret-pw@127.0.0.1:6379/0", "GREENCTL_BROKER_URL"),
    ("--db", "postgresql://greenctl:s3cret-pw@127.0.0.1:5432/greenctl", "GREENCTL_DATABASE_URL"),
])
@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_a_url_with_a_password_on_the_command_line_is_refused(command, flag, url, variable, tmp_path):
    env = base_env(GREENCTL_STATE_DIR=str(tmp_path / "state"))
    out = greenctl([command, flag, url], env, check=False, timeout=60)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"Error: {flag}:") and variable in line and "s3cret-pw" not in line
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())   # nothing started


def test_operations_doc_shows_no_password_on_a_command_line():
    text = (ROOT / "docs" / "operations.md").read_text()
    for line in text.splitlines():
        if "--broker" in line or "--db " in line or "--db=" in line:
            assert "PASSWORD" not in line.upper().replace("WITHOUT A PASSWORD", "") and ":…@" not in line, line


# -- 6. dataset that is a FIFO, a device or too big; 7. too many tasks ---------------------

def _spec(tmp_path: Path, data: Path, **extra) -> Path:
    spec = {"name": "hardening", "dataset": {"path": str(data), "labels": ["positive", "negative", "neutral"],
                                             "seed": 7},
            "prompt": {"template": "label-only", "few_shot": 0},
            "models": [{"name": MODEL, "engine": "embedded", "variants": ["q4_0", "q8_0"]}],
            "placement": {"queue": "hardening"}} | extra
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture()
def submit_env(fresh_db_url, broker_url, tmp_path):
    return {"GREENCTL_DATABASE_URL": fresh_db_url, "GREENCTL_BROKER_URL": broker_url,
            "GREENCTL_STATE_DIR": str(tmp_path / "state")}


def _refused(env: dict, spec: Path, expected: tuple[str, ...], timeout: float = 30) -> None:
    """Through the real CLI in a subprocess (a FIFO would hang it: the timeout is the oracle)."""
    import redis

    before = row_counts(env["GREENCTL_DATABASE_URL"]), redis.Redis.from_url(env["GREENCTL_BROKER_URL"]).dbsize()
    started = time.monotonic()
    out = greenctl(["submit", str(spec)], base_env(**env), check=False, timeout=timeout)
    assert time.monotonic() - started < timeout
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("Error: "), line
    for text in expected:
        assert text in line, line
    after = row_counts(env["GREENCTL_DATABASE_URL"]), redis.Redis.from_url(env["GREENCTL_BROKER_URL"]).dbsize()
    assert after == before


def test_a_fifo_dataset_is_refused_at_once(tmp_path, submit_env):
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)
    _refused(submit_env, _spec(tmp_path, fifo), ("dataset.path", "FIFO", "regular CSV file"))


def test_dev_zero_is_refused_at_once(tmp_path, submit_env):
    _refused(submit_env, _spec(tmp_path, Path("/dev/zero")), ("dataset.path", "a device", "regular CSV file"))


def test_a_dataset_over_the_size_limit_is_refused(tmp_path, submit_env):
    data = tmp_path / "big.csv"
    data.write_text("text,label\n" + "Profit rose,positive\n" * 60_000)      # ~1.2 MiB
    env = submit_env | {"GREENCTL_MAX_DATASET_BYTES": str(2**20)}
    _refused(env, _spec(tmp_path, data), ("dataset.path", "MiB", "1.0 MiB limit", "GREENCTL_MAX_DATASET_BYTES"))


def test_more_tasks_than_the_cap_is_refused_naming_the_product(tmp_path, submit_env):
    data = tmp_path / "data.csv"
    data.write_text("text,label\n" + "".join(f"row {i},{['positive', 'negative', 'neutral'][i % 3]}\n"
                                             for i in range(30)))
    env = submit_env | {"GREENCTL_MAX_TASKS": "1000"}
    # 30 samples x 2 variants x 20 repeats = 1,200 > 1,000
    _refused(env, _spec(tmp_path, data, repeats=20),
             ("30 samples x 2 variants x 20 repeats = 1,200 tasks", "limit of 1,000", "GREENCTL_MAX_TASKS"))
    # Under the cap: accepted, every task written (30 x 2 x 10 = 600).
    ok = greenctl(["submit", str(_spec(tmp_path, data, repeats=10)), "--json"], base_env(**env), check=False)
    assert ok.returncode == 0, ok.stderr
    assert row_counts(submit_env["GREENCTL_DATABASE_URL"])["task"] == 600


# -- 5. a paused worker's pause is not inference time or energy ---------------------------

def test_pause_reason_names_what_happened():
    from worker.energy import pause_reason

    assert pause_reason(0.1, 0.0) is None and pause_reason(1.9, 1.9) is None
    assert "paused for 35.0 s" in pause_reason(35.0, 0.0)
    assert "suspended for 600.0 s" in pause_reason(0.1, 600.0)     # CLOCK_MONOTONIC stops in suspend


def test_a_worker_sigstopped_mid_task_marks_that_row_invalid_and_the_report_leaves_it_out(tmp_path, fresh_db_url):
    import statistics

    from tests.test_faults import tasks_by_status

    n, pause_s = 3, 5.0    # one result before the pause, the paused task, one after: two valid rows
    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path) | {"GREENCTL_LEASE_SECONDS": "60"}
        # ~1,000-token texts: about 3 s of prefill each on one thread, so a stop lands mid-task.
        spec = spec_for(tmp_path / "pause.yaml", long_texts(tmp_path / "long.csv", n, sentences=28), "pause")
        with worker(env, "pause", tmp_path / "worker.log", "--threads", "1") as proc:
            eid = submit(spec, env)
            wait_until(lambda: query(fresh_db_url, "SELECT count(*) FROM result WHERE experiment_id = :e",
                                     e=eid)[0][0] >= 1 and tasks_by_status(fresh_db_url, eid).get("running") == 1,
                       90, "a result, and the next task running")
            time.sleep(0.3)
            (paused_task,) = query(fresh_db_url, "SELECT id FROM task WHERE experiment_id = :e AND status = 'running'",
                                   e=eid)[0]
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(pause_s)
            os.kill(proc.pid, signal.SIGCONT)
            wait_until(lambda: experiment_status(fresh_db_url, eid) == "done", 90, "the experiment finishes")
        log = (tmp_path / "worker.log").read_text()
    rows = query(fresh_db_url, "SELECT task_id, valid, invalid_reason, e2e_s, energy_kwh FROM result "
                               "WHERE experiment_id = :e ORDER BY task_id", e=eid)
    assert len(rows) == n
    invalid = [r for r in rows if not r.valid]
    assert [r.task_id for r in invalid] == [paused_task]
    assert "paused for" in invalid[0].invalid_reason and invalid[0].e2e_s >= pause_s
    assert "marked invalid" in log
    valid = [r for r in rows if r.valid]
    assert all(r.invalid_reason is None for r in valid)
    # (No comparison of the paused row's e2e_s with the others': on a busy machine a task alone
    # can take longer than the pause. The oracle is the detection, and the report's arithmetic.)
    # The report: its mean and median come from the valid rows only, and it says how many were left out.
    report = json.loads(greenctl(["report", str(eid), "--format", "json"], env).stdout)
    (variant,) = report["variants"]
    assert variant["n"] == n and variant["n_invalid"] == 1
    assert variant["latency_s_mean"] == pytest.approx(sum(r.e2e_s for r in valid) / len(valid))
    assert variant["latency_s_median"] == pytest.approx(statistics.median(r.e2e_s for r in valid))
    assert variant["energy_kwh_median"] == pytest.approx(statistics.median(r.energy_kwh for r in valid))
    assert variant["latency_s_mean"] != pytest.approx(sum(r.e2e_s for r in rows) / n)   # not all rows


# -- 9. a worker that lost its broker: offline, and SIGTERM still stops it ----------------

def test_a_worker_without_its_broker_goes_offline_and_stops_on_sigterm(tmp_path, fresh_db_url):
    beat = 1.0

    def online() -> bool:
        out = greenctl(["workers", "--json"], env, check=False)
        (node,) = [w for w in json.loads(out.stdout)["workers"] if w["queue"] == "lost"]
        return node["online"]

    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path, GREENCTL_HEARTBEAT_SECONDS=str(beat))
        with worker(env, "lost", tmp_path / "worker.log", "--threads", "1") as proc:
            wait_until(online, 20, "online while consuming")
            broker.kill()
            # Heartbeats stop with the broker: offline after four missed beats.
            wait_until(lambda: not online(), 20, "offline once the broker is gone")
            # Well into Celery's reconnect backoff (retries 2 s, 4 s, 6 s... apart): four missed
            # beats above, then 10 s more, is past several failed reconnects, as 20 s was.
            time.sleep(10)
            assert proc.poll() is None
            os.killpg(proc.pid, signal.SIGTERM)
            started = time.monotonic()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                raise AssertionError("the worker ignored SIGTERM without its broker:\n"
                                     + (tmp_path / "worker.log").read_text()[-2000:])
            print(f"stopped {time.monotonic() - started:.1f} s after SIGTERM")
            assert time.monotonic() - started < 15


def test_a_worker_that_loses_its_broker_mid_task_stops_on_sigterm(tmp_path, fresh_db_url):
    from tests.test_faults import results, tasks_by_status

    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path, GREENCTL_SHUTDOWN_GRACE_SECONDS="8")
        spec = spec_for(tmp_path / "lostmid.yaml", long_texts(tmp_path / "long.csv", 4, sentences=28), "lostmid")
        with worker(env, "lostmid", tmp_path / "worker.log", "--threads", "1") as proc:
            eid = submit(spec, env)
            wait_until(lambda: tasks_by_status(fresh_db_url, eid).get("running") == 1, 60, "a task running")
            broker.kill()
            # The task ends (its result is written: Postgres is up), then its ack and the next
            # fetch fail: waited for, not a fixed 15 s.
            wait_until(lambda: results(fresh_db_url, eid)[0] >= 1, 60, "the running task's result written")
            time.sleep(4)
            assert proc.poll() is None
            os.killpg(proc.pid, signal.SIGTERM)
            started = time.monotonic()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                raise AssertionError("the worker ignored SIGTERM without its broker:\n"
                                     + (tmp_path / "worker.log").read_text()[-3000:])
            assert 7.5 < time.monotonic() - started < 12           # its grace period (8 s), then it exits
        assert "shutdown not finished after 8 s" in (tmp_path / "worker.log").read_text()


# -- + cancelling an experiment while one of its tasks is mid-inference -------------------

def test_cancel_mid_inference_keeps_the_in_flight_result_and_leaves_nothing_running(tmp_path, fresh_db_url):
    """The documented rule (`greenctl cancel --help`): the inference already running finishes
    and its result is kept (the task becomes done); every other task stays cancelled, with no
    result; nothing stays running; `resume` runs only the cancelled ones, each exactly once."""
    from tests.test_faults import assert_every_task_exactly_once, results, tasks_by_status

    n = 3                  # the in-flight task and two others: `resume` still runs more than one
    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path)
        spec = spec_for(tmp_path / "cancel.yaml", long_texts(tmp_path / "long.csv", n, sentences=28), "cancel")
        with worker(env, "cancel", tmp_path / "worker.log", "--threads", "1"):
            eid = submit(spec, env)
            wait_until(lambda: tasks_by_status(fresh_db_url, eid).get("running") == 1, 60, "a task running")
            (in_flight,) = query(fresh_db_url, "SELECT id FROM task WHERE experiment_id = :e AND status = 'running'",
                                 e=eid)[0]
            out = greenctl(["cancel", str(eid)], env)
            assert f"cancelled {n} tasks" in out.stdout
            assert experiment_status(fresh_db_url, eid) == "cancelled"
            # The in-flight inference ends and is written; nothing else runs.
            wait_until(lambda: results(fresh_db_url, eid)[0] == 1, 30, "the in-flight result written")
            time.sleep(3)
            assert tasks_by_status(fresh_db_url, eid) == {"done": 1, "cancelled": n - 1}
            assert query(fresh_db_url, "SELECT task_id FROM result WHERE experiment_id = :e", e=eid) == [(in_flight,)]
            assert experiment_status(fresh_db_url, eid) == "cancelled"
            status = json.loads(greenctl(["status", str(eid), "--json"], env).stdout)
            assert (status["status"], status["n_done"]) == ("cancelled", 1)
            # Resume: only the cancelled tasks run again; the kept one is not re-run.
            greenctl(["resume", str(eid)], env)
            wait_until(lambda: experiment_status(fresh_db_url, eid) == "done", 60, "resumed experiment done")
    assert_every_task_exactly_once(fresh_db_url, eid, n)
    assert query(fresh_db_url, "SELECT attempts FROM task WHERE id = :t", t=in_flight)[0][0] == 1


# -- 8. a corrupted model file is re-made, not loaded -------------------------------------

@pytest.mark.timeout(600)
def test_a_truncated_variant_is_remade_by_the_next_task(tmp_path, fresh_db_url):
    from shared.catalog import entry
    from worker.model_files import checksum_path, model_path, sha256_file

    cache = tmp_path / "cache"
    home = Path(os.environ.get("GREENCTL_CACHE_DIR") or Path.home() / ".cache" / "greenctl")
    source = entry(MODEL).source_quantization
    src = model_path(home, MODEL, source)
    if not src.exists():
        pytest.skip(f"the source model file is not in the cache ({src}): run `greenctl models pull`")
    model_path(cache, MODEL, source).parent.mkdir(parents=True)
    os.link(src, model_path(cache, MODEL, source)) if src.stat().st_dev == cache.stat().st_dev \
        else __import__("shutil").copy(src, model_path(cache, MODEL, source))
    q4 = model_path(cache, MODEL, "q4_0")
    with valkey(tmp_path / "valkey") as broker:
        env = fault_env(fresh_db_url, broker.url, tmp_path, GREENCTL_CACHE_DIR=str(cache))
        spec = write_spec(tmp_path / "remake.yaml", [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}],
                          sample=2, queue="remake")
        with worker(env, "remake", tmp_path / "worker-1.log", "--threads", "1", ready_timeout=240):
            first = submit(spec, env)
            wait_until(lambda: experiment_status(fresh_db_url, first) == "done", 120, "made and run")
        made = checksum_path(q4).read_text().split()[0]
        assert made == sha256_file(q4)
        with open(q4, "r+b") as f:                   # corrupt it: half the file is gone
            f.truncate(q4.stat().st_size // 2)
        with worker(env, "remake", tmp_path / "worker-2.log", "--threads", "1", ready_timeout=240):
            second = submit(spec, env)
            wait_until(lambda: experiment_status(fresh_db_url, second) in ("done", "failed"), 120, "second run")
    assert dict(query(fresh_db_url, "SELECT status, count(*) FROM task WHERE experiment_id = :e GROUP BY status",
                      e=second)) == {"done": 2}
    assert sha256_file(q4) == made                   # re-made: the same bytes as the first time
