"""Several hosts on this machine: a head and two laptops in network namespaces, with faults.

One module-scoped cluster (tests/netns.py): a "head" namespace runs `greenctl up --lan
10.231.0.1` (TLS Postgres and broker, the scheduler); laptops `a` and `b`, each in a
namespace of its own with a hostname of its own (laptop-a, laptop-b), run `greenctl worker
--join` with the token `up --lan` printed, named by their own queue (laptop-a, laptop-b)
and both consuming the experiments' queue `lan`. Laptop b reaches the head only through a
delaying TCP relay (150 ± 50 ms per chunk each way; its token names the relay's ports, TLS
runs end to end through it): every test runs with one slow link. Traffic goes only to the
namespaces' own addresses (10.231.0.0/24).

Each fault is an experiment of its own and ends with exactly one result per task, none lost:

- both laptops (one over the slow link) run one experiment; each result carries the
  hostname, queue and hardware profile of the laptop that ran it;
- laptop sleep: laptop a SIGSTOPped mid-inference for longer than its lease, b takes the
  task over, then SIGCONT: a's late result neither duplicates nor overwrites b's;
- partition: a's link down mid-run (b keeps working) until b took a's task over once a's
  lease ran out (at most 60 s), then up: a's late result for it is dropped;
- a laptop that leaves: Ctrl-C (SIGINT) on b mid-inference finishes that inference, marks b
  offline at once, and its queued work is run by a.

Leases are 10 s, heartbeats 2 s, reconcile passes 3 s (GREENCTL_LEASE_SECONDS,
GREENCTL_HEARTBEAT_SECONDS, GREENCTL_RECONCILE_SECONDS), so recovery happens within a test.
Skipped, naming why, where network namespaces cannot be made (not root, no `ip netns`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import netns
from tests.processes import ROOT, base_env
from tests.test_faults import (assert_every_task_exactly_once, experiment_status, long_texts, query, results,
                               spec_for, tasks_by_status, wait_until)

LEASE_SECONDS, HEARTBEAT_SECONDS, RECONCILE_SECONDS = "10", "2", "3"
QUEUE = "lan"
PARTITION_S = 60.0       # the longest the partition test keeps a link down
LAPTOPS = ("a", "b")
pytestmark = pytest.mark.timeout(420)


# -- the head: servers in its namespace ---------------------------------------------------

@dataclass
class Head:
    """What the laptops and the test need from the head."""
    db: str                      # the test's own queries: the Unix socket, no namespace needed
    env: dict                    # greenctl commands run in the head namespace
    token: str                   # what `up --lan` printed for the laptops
    ports: dict = field(default_factory=dict)   # "db"/"broker" -> port on the head address


@contextmanager
def lan_head(hosts: netns.Hosts, tmp: Path):
    """`greenctl up --lan HEAD_ADDRESS` in the head namespace (TLS Postgres and broker, the
    scheduler and estimator, no local inference worker: --workers 0), stopped with `greenctl down`."""
    from shared.join_token import decode

    if shutil.which("redis-server") is None and shutil.which("valkey-server") is None:
        pytest.skip("up --lan needs a TLS-capable redis-server or valkey-server on PATH "
                    "(Debian: apt-get install redis-server)")
    env = _common_env(tmp / "head")
    greenctl = [sys.executable, "-m", "greenctl"]
    up = hosts.run("head", [*greenctl, "up", "--lan", netns.HEAD_ADDRESS, "--workers", "0"], env=env, cwd=ROOT, timeout=400,
                   hostname="head")
    try:
        assert up.returncode == 0, f"up --lan exited {up.returncode}:\n{up.stdout[-2000:]}\n{up.stderr[-3000:]}"
        (token,) = [w for line in up.stdout.splitlines() if "--join" in line
                    for w in line.split() if w.startswith("gct1.")]
        joined = decode(token)
        services = json.loads((tmp / "head" / "services.json").read_text())
        yield Head(db=services["postgres"]["url"], env=env, token=token,
                   ports={"db": joined.db_port, "broker": joined.broker_port})
    finally:
        from shared.db import get_engine

        down = hosts.run("head", [*greenctl, "down"], env=env, cwd=ROOT, timeout=120, hostname="head")
        if "services" in locals():
            get_engine(services["postgres"]["url"]).dispose()
        assert down.returncode == 0, down.stderr[-2000:]


def slowed(token: str, ports: dict) -> str:
    """The join token with the head's ports replaced by the relay's (same address: the
    certificates still match, TLS runs end to end through the relay)."""
    from dataclasses import replace

    from shared.join_token import decode, encode

    return encode(replace(decode(token), db_port=ports["db"], broker_port=ports["broker"]))


def _common_env(state: Path, **extra: str) -> dict:
    return base_env(GREENCTL_STATE_DIR=str(state), GREENCTL_LEASE_SECONDS=LEASE_SECONDS,
                    GREENCTL_HEARTBEAT_SECONDS=HEARTBEAT_SECONDS, GREENCTL_RECONCILE_SECONDS=RECONCILE_SECONDS,
                    **extra)


# -- the cluster: head, relay, laptops ----------------------------------------------------

@dataclass
class Laptop:
    name: str                    # a, b
    hostname: str                # laptop-a
    proc: subprocess.Popen
    log: Path

    @property
    def worker(self) -> str:     # what results and tasks record (hostname:queue)
        return f"{self.hostname}:{self.hostname}"


@dataclass
class Cluster:
    hosts: netns.Hosts
    head: Head
    tmp: Path
    laptops: dict
    relay_logs: list


@contextmanager
def relay(hosts: netns.Hosts, port: int, target: int, log: Path):
    """A delaying relay in the head namespace: HEAD:port -> HEAD:target."""
    proc = hosts.popen("head", hosts.relay_argv((netns.HEAD_ADDRESS, port), (netns.HEAD_ADDRESS, target)),
                       None, log)
    try:
        wait_until(lambda: b"relay ready" in log.read_bytes() or proc.poll() is not None, 30, "relay ready")
        assert proc.poll() is None, log.read_text()
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def start_laptop(hosts: netns.Hosts, tmp: Path, name: str, token: str) -> Laptop:
    """`greenctl worker --join` in laptop `name`'s namespace under hostname laptop-NAME, its
    own queue first (naming it) and the experiments' queue. The token comes in the
    environment (GREENCTL_JOIN_TOKEN), not argv. Its own measuring lock: it stands for another
    machine, so it must not wait for the other laptop's window."""
    hostname = f"laptop-{name}"
    env = _common_env(tmp / hostname, GREENCTL_MEASURE_LOCK=str(tmp / f"{hostname}.lock"),
                      GREENCTL_JOIN_TOKEN=token, GREENCTL_SHUTDOWN_GRACE_SECONDS="20")
    argv = [sys.executable, "-m", "greenctl", "worker", "--join", "--queue", hostname, "--queue", QUEUE,
            "--threads", "1"]
    log = tmp / f"{hostname}.log"
    return Laptop(name, hostname, hosts.popen(name, argv, env, log, hostname=hostname, cwd=ROOT), log)


@contextmanager
def laptops_running(hosts: netns.Hosts, tmp: Path, tokens: dict[str, str]):
    """Every laptop started at once, yielded when each says "ready."; stopped at the end
    (SIGTERM to all, then SIGKILL to any still running 30 s later)."""
    laptops: dict[str, Laptop] = {}
    try:
        for name, token in tokens.items():
            laptops[name] = start_laptop(hosts, tmp, name, token)
        for lap in laptops.values():
            wait_until(lambda: b"ready." in lap.log.read_bytes() or lap.proc.poll() is not None, 240,
                       f"worker on {lap.hostname} ready (its log: {lap.log})")
            assert lap.proc.poll() is None, f"worker on {lap.hostname} exited:\n{lap.log.read_text()[-3000:]}"
        yield laptops
    finally:
        running = [lap for lap in laptops.values() if lap.proc.poll() is None]
        for lap in running:
            os.killpg(lap.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for lap in running:
            try:
                lap.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(lap.proc.pid, signal.SIGKILL)
                lap.proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"network namespaces cannot be made here: {reason}")
    tmp = tmp_path_factory.mktemp("multihost")
    with ExitStack() as stack:
        hosts = stack.enter_context(netns.Hosts(LAPTOPS))
        head = stack.enter_context(lan_head(hosts, tmp))
        slow, relay_logs = {}, []
        for key, port in head.ports.items():
            slow[key] = 20000 + port % 10000
            relay_logs.append(tmp / f"relay-{key}.log")
            stack.enter_context(relay(hosts, slow[key], port, relay_logs[-1]))
        laptops = stack.enter_context(laptops_running(hosts, tmp, {"a": head.token, "b": slowed(head.token, slow)}))
        yield Cluster(hosts, head, tmp, laptops, relay_logs)


# -- helpers ------------------------------------------------------------------------------

def submit(c: Cluster, name: str, n: int, sentences: int) -> int:
    data = long_texts(c.tmp / f"{name}.csv", n, sentences=sentences)
    spec = spec_for(c.tmp / f"{name}.yaml", data, QUEUE)
    out = c.hosts.run("head", [sys.executable, "-m", "greenctl", "submit", str(spec), "--json"], env=c.head.env,
                      cwd=ROOT, timeout=180, hostname="head")
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)["experiment_id"]


def by_worker(db: str, eid: int) -> dict[str, int]:
    return dict(query(db, "SELECT worker, count(*) FROM result WHERE experiment_id = :e GROUP BY worker", e=eid))


def running_on(db: str, eid: int, worker: str) -> int | None:
    """The task `worker` is running (claimed, no result yet), if any."""
    rows = query(db, "SELECT t.id FROM task t LEFT JOIN result r ON r.task_id = t.id WHERE t.experiment_id = :e "
                     "AND t.status = 'running' AND t.worker = :w AND r.id IS NULL", e=eid, w=worker)
    return rows[0][0] if rows else None


def node(db: str, hostname: str) -> dict:
    (row,) = query(db, "SELECT hostname, queue, hardware_profile, extract(epoch FROM now() - last_heartbeat)::float8 "
                       "FROM worker_node WHERE hostname = :h AND queue = :h", h=hostname)
    return {"hostname": row[0], "queue": row[1], "profile": row[2], "heard_s_ago": row[3]}


def workers_listed(c: Cluster, heartbeat_s: str = HEARTBEAT_SECONDS) -> dict[str, bool]:
    """`greenctl workers --json`, hostname -> online, as a user on the head sees it (a worker
    is offline there after four missed beats of `heartbeat_s`)."""
    out = c.hosts.run("head", [sys.executable, "-m", "greenctl", "workers", "--json"], cwd=ROOT, timeout=60,
                      env=c.head.env | {"GREENCTL_HEARTBEAT_SECONDS": heartbeat_s}, hostname="head")
    assert out.returncode == 0, out.stderr[-2000:]
    return {w["hostname"]: w["online"] for w in json.loads(out.stdout)["workers"] if w["queue"] == w["hostname"]}


def online_again(c: Cluster, laptop: Laptop) -> bool:
    return node(c.head.db, laptop.hostname)["heard_s_ago"] < 2 * float(HEARTBEAT_SECONDS)


# -- the tests ----------------------------------------------------------------------------

def test_an_experiment_runs_on_both_laptops_and_each_result_carries_its_laptop(cluster):
    """Laptop b is behind the slow relay: the experiment still completes, with tasks on both."""
    c, n = cluster, 8
    eid = submit(c, "both", n, sentences=5)
    wait_until(lambda: experiment_status(c.head.db, eid) == "done", 240, "both laptops finish the experiment")
    assert_every_task_exactly_once(c.head.db, eid, n)
    counts = by_worker(c.head.db, eid)
    assert set(counts) == {lap.worker for lap in c.laptops.values()}, counts
    for lap in c.laptops.values():
        registered = node(c.head.db, lap.hostname)
        assert registered["queue"] == lap.hostname and registered["profile"]
        # The same CPU under both, honestly: one profile; hostname and queue tell them apart.
        rows = query(c.head.db, "SELECT r.hardware_profile, t.worker FROM result r JOIN task t ON t.id = r.task_id "
                                "WHERE r.experiment_id = :e AND r.worker = :w", e=eid, w=lap.worker)
        assert rows and all(profile == registered["profile"] and by == lap.worker for profile, by in rows)
    # The slow link carried laptop b's traffic (database and broker) with the delay it promises.
    for log in c.relay_logs:
        last = relay_stats(log)
        assert last["connections"] >= 1 and last["chunks"] > 10, log.read_text()[-2000:]
        assert 0.1 <= last["mean_delay_s"] <= 0.2


def relay_stats(log: Path) -> dict:
    """The relay's last counters line: connections, chunks, mean_delay_s (per chunk, each way)."""
    wait_until(lambda: "mean_delay_s=" in log.read_text(), 10, f"counters in {log.name}")
    line = [x for x in log.read_text().splitlines() if "mean_delay_s=" in x][-1]
    fields = dict(part.split("=") for part in line.split()[1:])
    return {"connections": int(fields["connections"]), "chunks": int(fields["chunks"]),
            "mean_delay_s": float(fields["mean_delay_s"])}


def test_a_laptop_asleep_past_its_lease_is_taken_over_and_its_late_result_is_dropped(cluster):
    c, n = cluster, 3
    a, b = c.laptops["a"], c.laptops["b"]
    eid = submit(c, "sleep", n, sentences=12)     # ~1 s of prefill per task on one thread, idle
    held = wait_until(lambda: running_on(c.head.db, eid, a.worker), 120, "laptop a running a task")
    os.killpg(a.proc.pid, signal.SIGSTOP)          # the lid closes mid-inference
    try:
        wait_until(lambda: query(c.head.db, "SELECT worker FROM result WHERE task_id = :t", t=held) == [(b.worker,)],
                   240, f"laptop b takes task {held} over once a's {LEASE_SECONDS} s lease ran out, and finishes it")
    finally:
        os.killpg(a.proc.pid, signal.SIGCONT)      # the lid opens: a finishes its stale inference
    wait_until(lambda: experiment_status(c.head.db, eid) == "done", 180, "the experiment finishes")
    # a wakes up, finishes its stale inference and tries to write it: the fence drops it.
    dropped = f"task {held}: result dropped, not counted"
    wait_until(lambda: dropped in a.log.read_text(), 120, f"laptop a's log: {dropped!r}")
    assert_every_task_exactly_once(c.head.db, eid, n)
    (attempts, worker, by), = query(c.head.db, "SELECT t.attempts, t.worker, r.worker FROM task t JOIN result r "
                                               "ON r.task_id = t.id WHERE t.id = :t", t=held)
    assert attempts >= 2 and worker == by == b.worker     # neither duplicated nor overwritten


def test_a_partitioned_laptop_loses_nothing_and_the_other_keeps_working(cluster):
    # Six tasks: b still finishes some of its own while a is cut off, and fewer queued ahead of
    # the re-sent one let b reach it (and the partition end) sooner than ten did.
    c, n = cluster, 6
    a, b = c.laptops["a"], c.laptops["b"]
    eid = submit(c, "partition", n, sentences=10)
    held = wait_until(lambda: running_on(c.head.db, eid, a.worker), 120, "laptop a running a task")
    before_b = by_worker(c.head.db, eid).get(b.worker, 0)
    c.hosts.link_down("a")
    down_at = time.monotonic()
    try:
        wait_until(lambda: by_worker(c.head.db, eid).get(b.worker, 0) > before_b, PARTITION_S,
                   "laptop b keeps finishing tasks while a is cut off")
        # Down until b has taken over the task a held (a's lease, LEASE_SECONDS, ran out and the
        # reconcile pass re-sent it; or it has a result, a's written just before the cut), at
        # most PARTITION_S: from then on a holds a stale result, and a link kept down longer
        # shows nothing more. (b reaches the re-sent task after what was queued before it.)
        def taken_over() -> bool:
            (worker, attempts, result), = query(
                c.head.db, "SELECT t.worker, t.attempts, r.worker FROM task t LEFT JOIN result r "
                           "ON r.task_id = t.id WHERE t.id = :t", t=held)
            return result is not None or (worker == b.worker and attempts >= 2)

        while not taken_over() and time.monotonic() - down_at < PARTITION_S:
            time.sleep(0.2)
    finally:
        c.hosts.link_up("a")
        print(f"laptop a's link was down {time.monotonic() - down_at:.1f} s")
    wait_until(lambda: experiment_status(c.head.db, eid) == "done", 180, "the experiment finishes after the partition")
    (by,), = query(c.head.db, "SELECT worker FROM result WHERE task_id = :t", t=held)
    assert by in {a.worker, b.worker}
    if by == b.worker:   # a's link is back: the result it held for that task is fenced off
        dropped = f"task {held}: result dropped, not counted"
        wait_until(lambda: dropped in a.log.read_text(), 120, f"laptop a's log: {dropped!r}")
    assert_every_task_exactly_once(c.head.db, eid, n)
    wait_until(lambda: online_again(c, a), 150, "laptop a back online after its link came up")


def test_a_laptop_that_leaves_finishes_its_inference_goes_offline_and_its_work_goes_to_the_other(cluster):
    c, n = cluster, 6
    a, b = c.laptops["a"], c.laptops["b"]
    wait_until(lambda: online_again(c, a), 150, "laptop a online (it takes over b's work)")
    eid = submit(c, "leave", n, sentences=30)     # ~2.5 s per task: Ctrl-C lands mid-inference
    in_hand = wait_until(lambda: running_on(c.head.db, eid, b.worker), 120, "laptop b running a task")
    os.killpg(b.proc.pid, signal.SIGINT)           # Ctrl-C in b's terminal
    b.proc.wait(120)
    left_at = time.monotonic()
    assert b.proc.returncode == 0, b.log.read_text()[-3000:]
    assert f"finishing task {in_hand} before shutting down" in b.log.read_text()
    # The inference in hand was finished and written, by b, once.
    (by, attempts), = query(c.head.db, "SELECT r.worker, t.attempts FROM result r JOIN task t ON t.id = r.task_id "
                                       "WHERE t.id = :t", t=in_hand)
    assert by == b.worker and attempts == 1
    # Offline at once, not after four missed heartbeats: listed by a `greenctl workers` that
    # would wait four minutes (60 s beats) before calling a silent worker offline.
    listed = workers_listed(c, heartbeat_s="60")
    assert time.monotonic() - left_at < 240
    assert listed[b.hostname] is False and listed[a.hostname] is True, listed
    assert "offline (shut down)" in b.log.read_text()
    wait_until(lambda: experiment_status(c.head.db, eid) == "done", 180, "laptop a runs what b left queued")
    assert_every_task_exactly_once(c.head.db, eid, n)
    after = query(c.head.db, "SELECT count(*) FROM result WHERE experiment_id = :e AND worker = :w "
                             "AND created_at > (SELECT created_at FROM result WHERE task_id = :t)",
                  e=eid, w=b.worker, t=in_hand)[0][0]
    assert after == 0                              # nothing more from b once it left
    assert by_worker(c.head.db, eid).get(a.worker, 0) >= 1
    assert tasks_by_status(c.head.db, eid) == {"done": n} and results(c.head.db, eid) == (n, n)
