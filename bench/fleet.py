"""Fleet: what the coordination layer sustains with 50 workers — SIMULATED inference.

    python -m bench fleet [--workers 50] [--tasks N] [--quick] [--json]

One Postgres (a fresh database on the system PostgreSQL) and one Redis (an empty db).
N worker processes (`python -m bench.fleet_worker`: the real worker start, Celery solo
pool, 1 thread each) run the timing-replay engine (bench.replay_engine: sleeps recorded
SmolLM2-135M times, answers a fixed label; energy "simulated", CodeCarbon off). The
experiments go through the normal submit path (scheduler.submit.submit: one transaction,
pipelined enqueue), one per arm, on the same running fleet:

- "0ms": no engine time at all, the coordination ceiling;
- "q4_0": the recorded SmolLM2 q4_0 times (bench/smollm2_timings.json).

Per arm: tasks/s claimed and written over the steady middle (between the 10th and 90th
percentile of the claim / write times), claim latency p50/p99 (each worker times its
`worker.store.claim` calls, bench.fleet_worker), write latency, and where a task's time
goes (claim, run, write, Celery's gap to the next claim). Every second the parent samples
CPU per process class (workers, postgres, redis-server, the rest), Postgres' commits and
waits for our database, and Redis' command count: on 2 cores that is what limits it.

Then the reconcile pass (scheduler.tasks.reconcile_once, the scheduler's job) is timed
directly on a 100,000-task experiment with some tasks lost, orphaned and never sent.
All of it is labelled SIMULATED; none of it is a measurement of inference.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from bench import servers, synthetic
from bench.report import Goal, LoadWatch, Report, machine, median

SIZES = {"full": dict(workers=50, tasks={"0ms": 30_000, "q4_0": 12_000}, reconcile=100_000),
         "quick": dict(workers=50, tasks={"0ms": 8_000, "q4_0": 4_000}, reconcile=100_000),
         "smoke": dict(workers=2, tasks={"0ms": 20, "q4_0": 10}, reconcile=500)}
GOAL_RATE = 1000.0       # tasks/s with 50 workers
GOAL_P99_MS = 50.0       # claim latency
READY_TIMEOUT_S = 900.0
QUEUE = "bench-fleet"
IDLE_QUEUE = "bench-fleet-idle"   # what workers consume between arms: nothing


# -- pure helpers ------------------------------------------------------------------------------

def quantile(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs by nearest rank; nan when empty. Pure."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))] if xs else float("nan")


def steady_rate(ends: list[float], lo: float = 0.1, hi: float = 0.9) -> float:
    """Events/s between the lo- and hi-quantile of their times (s): the middle, without the
    ramp-up and the tail where workers run dry. Pure."""
    ends = sorted(ends)
    if len(ends) < 10:
        return float("nan")
    i, j = int(lo * (len(ends) - 1)), int(hi * (len(ends) - 1))
    return (j - i) / (ends[j] - ends[i]) if ends[j] > ends[i] else float("nan")


def task_phases(lines: list[tuple]) -> dict[str, list[float]]:
    """From one worker's timing lines (kind, task, start, end, cpu; s), per task in order: claim,
    run (claim end -> write start: engine, meter, result row), write, and the gap from a
    write's end to the next claim's start (Celery's ack, next message, dispatch). Pure."""
    out = {"claim": [], "run": [], "write": [], "gap": []}
    claims = {t: (s, e) for k, t, s, e, _ in lines if k == "c"}
    last_write_end = None
    for k, t, s, e, _ in sorted(lines, key=lambda r: r[2]):
        if k == "c":
            out["claim"].append(e - s)
            if last_write_end is not None:
                out["gap"].append(s - last_write_end)
        elif k == "w":
            out["write"].append(e - s)
            if t in claims:
                out["run"].append(s - claims[t][1])
            last_write_end = e
    return out


def ms(x: float) -> float:
    return 1e3 * x


# -- processes -----------------------------------------------------------------------------------

def read_cpu_s(pid: int) -> float | None:
    """utime + stime (s) of one process from /proc; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def pids_named(names: tuple[str, ...]) -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["name"]):
        if (p.info["name"] or "") in names:
            out.append(p.pid)
    return out


class Sampler:
    """Every `period_s`: CPU seconds per process class, the machine's busy jiffies, our
    database's pg_stat_database counters and backends by wait event, Redis' command count."""

    def __init__(self, db: str, broker: str, worker_pids: list[int], period_s: float = 1.0):
        import redis

        from shared.db import get_engine

        self.db_name = db.rsplit("/", 1)[1]
        self.engine = get_engine(db)
        self.redis = redis.Redis.from_url(broker)
        self.worker_pids = worker_pids
        self.period_s = period_s
        self.samples: list[dict] = []
        self.waits: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fleet-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as exc:   # a missed sample must not stop the benchmark; say so
                print(f"fleet: sampler: {exc}", file=sys.stderr)
            self._stop.wait(self.period_s)

    def sample(self) -> dict:
        from bench.report import _cpu_jiffies

        pg = {pid: read_cpu_s(pid) for pid in pids_named(("postgres",))}
        rd = {pid: read_cpu_s(pid) for pid in pids_named(("redis-server",))}
        with self.engine.connect() as conn:
            stat = conn.execute(sa.text(
                "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched, blks_hit, blks_read "
                "FROM pg_stat_database WHERE datname = :d"), {"d": self.db_name}).one()._asdict()
            for state, wait in conn.execute(sa.text(
                    "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'on CPU') FROM pg_stat_activity "
                    "WHERE datname = :d AND pid <> pg_backend_pid() AND state = 'active'"), {"d": self.db_name}):
                self.waits[wait] = self.waits.get(wait, 0) + 1
        info = self.redis.info("stats")
        queued = self.redis.llen(QUEUE)
        busy, total = _cpu_jiffies()
        return {"t": time.time(), "workers": sum(read_cpu_s(p) or 0.0 for p in self.worker_pids),
                "postgres": pg, "redis": rd, "parent": time.process_time(), "busy_j": busy, "total_j": total,
                "pg": stat, "redis_cmds": info.get("total_commands_processed", 0), "queued": queued}

    def window(self, t0: float, t1: float) -> dict:
        """What happened between the samples nearest t0 and t1: CPU cores per class, per
        second; Postgres commits/s and rows/s; Redis commands/s (whole instance)."""
        inside = [s for s in self.samples if t0 <= s["t"] <= t1]
        if len(inside) < 2:
            return {}
        a, b = inside[0], inside[-1]
        dt = b["t"] - a["t"]

        def procs(key: str) -> float:   # processes alive at both ends, plus ones born in between
            return sum((b[key][p] or 0.0) - (a[key].get(p) or 0.0) for p in b[key] if b[key][p] is not None)

        cores_busy = (b["busy_j"] - a["busy_j"]) / (b["total_j"] - a["total_j"]) * _ncores()
        out = {"seconds": dt, "cores busy (of %d)" % _ncores(): cores_busy,
               "cores: workers": (b["workers"] - a["workers"]) / dt,
               "cores: postgres (all of it)": procs("postgres") / dt,
               "cores: redis-server": procs("redis") / dt,
               "cores: this bench's parent": (b["parent"] - a["parent"]) / dt}
        out["cores: everything else (other users' tests)"] = max(0.0, cores_busy - sum(
            v for k, v in out.items() if k.startswith("cores: ")))
        out |= {f"pg {k}/s": (b["pg"][k] - a["pg"][k]) / dt
                for k in ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "blks_read")}
        out["redis commands/s (whole instance)"] = (b["redis_cmds"] - a["redis_cmds"]) / dt
        out["messages waiting in the queue, min / max"] = (min(x["queued"] for x in inside),
                                                            max(x["queued"] for x in inside))
        return out


def _ncores() -> int:
    return len(os.sched_getaffinity(0))


def start_workers(srv: servers.Servers, n: int, tmp: Path) -> tuple[list[subprocess.Popen], list[Path], float]:
    """n fleet workers, each in its own session (a Ctrl-C here reaches them through stop_workers);
    until every one logs Celery's 'ready.'. (procs, timing files, seconds to all ready)."""
    env = srv.env(GREENCTL_HEARTBEAT_SECONDS="15")
    procs, logs, timings = [], [], []
    started = time.monotonic()
    try:
        for i in range(n):
            logs.append(tmp / f"worker-{i}.log")
            timings.append(tmp / f"timings-{i}.tsv")
            with open(logs[-1], "ab") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.fleet_worker", "--queue", IDLE_QUEUE, "--index", str(i),
                     "--timings", str(timings[-1]), "--parent", str(os.getpid())],
                    env=env, stdout=out, stderr=subprocess.STDOUT, cwd=servers.ROOT, start_new_session=True))
        pending = list(range(n))
        last_said = 0.0
        while pending:
            pending = [i for i in pending if b"ready." not in logs[i].read_bytes()]
            for i in pending:
                if procs[i].poll() is not None:
                    raise RuntimeError(f"fleet worker {i} exited {procs[i].returncode}:\n"
                                       f"{logs[i].read_text()[-2000:]}")
            if time.monotonic() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"{len(pending)} of {n} fleet workers not ready after {READY_TIMEOUT_S:.0f} s "
                                   f"(machine overloaded?); first log:\n{logs[pending[0]].read_text()[-2000:]}")
            if pending and time.monotonic() - last_said > 10:
                print(f"fleet: waiting for {len(pending)} of {n} workers to log 'ready.' "
                      f"({time.monotonic() - started:.0f} s; logs in {tmp})", file=sys.stderr, flush=True)
                last_said = time.monotonic()
            time.sleep(1.0)
    except BaseException:
        stop_workers(procs)
        raise
    return procs, timings, time.monotonic() - started


def stop_workers(procs: list[subprocess.Popen], grace_s: float = 30.0) -> None:
    """SIGTERM every worker's session (Celery's warm shutdown), then SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def pss_mb(pids: list[int]) -> float:
    """Proportional set size (shared pages split between their users) of the processes, MB."""
    import psutil

    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_full_info().pss
        except psutil.Error:
            pass
    return total / 2**20


# -- the arms ----------------------------------------------------------------------------------------

def replay_spec(data: Path, arm: str, name: str):
    """A spec validated as a user's (engine embedded), then switched to the replay engine and
    the arm's replay variant: the replay engine is never a name a user spec accepts."""
    from worker.engines import REPLAY_ENGINE

    spec = synthetic.spec(data, QUEUE, name=name)
    model = spec.models[0].model_copy(update={"engine": REPLAY_ENGINE, "variants": [arm], "baseline": None})
    return spec.model_copy(update={"models": [model]})


def run_arm(srv: servers.Servers, app, tmp: Path, arm: str, n: int, n_workers: int, timeout_s: float) -> dict:
    """Submit n tasks through scheduler.submit.submit and wait until every one is finished."""
    import warnings

    from scheduler.submit import submit
    from shared.db import session_scope

    data = synthetic.dataset(tmp / f"arm-{arm}.csv", n, seed=len(arm))
    spec = replay_spec(data, arm, f"bench-fleet-{arm}")
    started = time.time()
    with warnings.catch_warnings():   # pydantic: the switched engine name is not one of its Literal's
        warnings.simplefilter("ignore")
        experiment_id = submit(srv.db, app, spec)
    submitted = time.time()
    # Only now does the fleet consume the queue (Celery remote control, every worker at once):
    # the rate is the fleet's, not that of one enqueueing process starved of CPU by 50 workers.
    replies = app.control.add_consumer(QUEUE, reply=True, timeout=30.0, limit=n_workers)
    with session_scope(srv.db) as s:
        n_tasks = s.execute(sa.text("SELECT count(*) FROM task WHERE experiment_id = :e"),
                            {"e": experiment_id}).scalar_one()
    servers.wait_for_results(srv.db, experiment_id, n_tasks, timeout=timeout_s)
    finished = time.time()
    app.control.cancel_consumer(QUEUE, reply=True, timeout=30.0, limit=n_workers)
    with session_scope(srv.db) as s:
        row = s.execute(sa.text(
            "SELECT count(*) FILTER (WHERE t.status = 'done'), count(*) FILTER (WHERE t.status = 'failed'), "
            "count(r.id), count(*) FILTER (WHERE t.attempts > 1), count(*) FILTER (WHERE r.valid IS FALSE), "
            "count(DISTINCT r.worker), count(*) FILTER (WHERE r.energy_method = 'simulated'), "
            "(SELECT min(id) FROM task WHERE experiment_id = :e), (SELECT max(id) FROM task WHERE experiment_id = :e), "
            "(SELECT status FROM experiment WHERE id = :e), "
            "(SELECT string_agg(DISTINCT engine, ',') FROM variant WHERE experiment_id = :e) "
            "FROM task t LEFT JOIN result r ON r.task_id = t.id WHERE t.experiment_id = :e"),
            {"e": experiment_id}).one()
        errors = s.execute(sa.text("SELECT error, count(*) FROM task WHERE experiment_id = :e AND status = 'failed' "
                                   "GROUP BY error ORDER BY 2 DESC LIMIT 3"), {"e": experiment_id}).all()
    done, failed, results, retried, invalid, workers, simulated, lo, hi, status, engines = row
    return {"arm": arm, "experiment_id": experiment_id, "tasks": n_tasks, "done": done, "failed": failed,
            "result_rows": results, "claimed_more_than_once": retried, "invalid": invalid,
            "workers_with_results": workers, "simulated_rows": simulated, "experiment_status": status,
            "engine": engines, "task_ids": (lo, hi), "started": submitted, "submit_s": submitted - started,
            "workers_told_to_consume": len(replies or []), "finished": finished,
            "failures": [list(e) for e in errors]}


def read_timings(files: list[Path]) -> list[list[tuple[str, int, float, float, float]]]:
    out = []
    for f in files:
        rows = []
        if f.exists():
            for line in f.read_text().splitlines():
                parts = line.split("\t")
                if len(parts) == 5:
                    rows.append((parts[0], int(parts[1]), float(parts[2]), float(parts[3]), float(parts[4])))
        out.append(rows)
    return out


def arm_figures(arm: dict, per_worker: list[list[tuple]], sampler: Sampler) -> dict:
    lo, hi = arm["task_ids"]
    mine = [[r for r in rows if lo <= r[1] <= hi] for rows in per_worker]
    claims = [r for rows in mine for r in rows if r[0] == "c"]
    writes = [r for rows in mine for r in rows if r[0] == "w"]
    phases = {"claim": [], "run": [], "write": [], "gap": []}
    for rows in mine:
        for k, v in task_phases(rows).items():
            phases[k] += v
    claim_ms = [ms(e - s) for _, _, s, e, _ in claims]
    claim_cpu_ms = [ms(c) for *_, c in claims]
    write_cpu_ms = [ms(c) for *_, c in writes]
    claim_ends, write_ends = [r[3] for r in claims], [r[3] for r in writes]
    steady = (quantile(write_ends, 0.1), quantile(write_ends, 0.9)) if write_ends else (0, 0)
    return {
        "claimed/s (steady middle)": steady_rate(claim_ends),
        "written/s (steady middle)": steady_rate(write_ends),
        "written/s (consume order to last row)": arm["done"] / max(1e-9, arm["finished"] - arm["started"]),
        "claim p50 / p99 / max (ms)": (median(claim_ms), quantile(claim_ms, 0.99), max(claim_ms, default=float("nan"))),
        "write p50 / p99 (ms)": (ms(median(phases["write"])), ms(quantile(phases["write"], 0.99))),
        "worker CPU inside claim / write, median (ms)": (median(claim_cpu_ms), median(write_cpu_ms)),
        "per task: claim / run / write / gap to next claim, medians (ms)":
            tuple(ms(median(phases[k])) for k in ("claim", "run", "write", "gap")),
        "claims timed": len(claims), "writes timed": len(writes),
        "workers that claimed": sum(1 for rows in mine if any(r[0] == "c" for r in rows)),
        "steady window (s)": steady[1] - steady[0],
        "load in the steady window": sampler.window(*steady),
    }


# -- reconcile -------------------------------------------------------------------------------------

@contextmanager
def timing(module, name: str, spent: dict):
    """module.name timed per call into spent[name] (list of (items, s)) while the block runs."""
    original = getattr(module, name)

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            items = args[2] if name == "resend" else None
            spent.setdefault(name, []).append((len(items) if items is not None else None,
                                               round(time.perf_counter() - t, 4)))
    setattr(module, name, timed)
    try:
        yield
    finally:
        setattr(module, name, original)


def reconcile_pass(srv: servers.Servers, app, tmp: Path, n: int, lease_s: int) -> dict:
    """scheduler.tasks.reconcile_once on an n-task experiment: 90 % done, 3 % lost (sent two
    leases ago, never claimed), 2 % orphaned (running, lease expired), 1 % never sent, 4 %
    queued and sent just now. Pass 1 re-sends; passes 2-4 find nothing to send (the steady
    cost of looking at n tasks every reconcile_seconds)."""
    from scheduler import reconcile as rec
    from scheduler import tasks as scheduler_tasks
    from scheduler.tasks import reconcile_once
    from shared.db import session_scope

    data = synthetic.dataset(tmp / "reconcile.csv", n, seed=7)
    experiment_id, ids, _ = synthetic.experiment(srv.db, data, queue=f"bench-fleet-reconcile-{uuid.uuid4().hex[:6]}")
    with session_scope(srv.db) as s:
        s.execute(sa.text(
            "UPDATE task SET "
            "status = CASE WHEN b < 90 THEN 'done' WHEN b < 95 THEN 'queued' WHEN b < 97 THEN 'running' "
            "              ELSE 'queued' END, "
            "enqueued_at = CASE WHEN b < 90 THEN now() - interval '1 hour' "
            "                   WHEN b < 93 OR (b >= 95 AND b < 97) THEN now() - :two_leases * interval '1 second' "
            "                   WHEN b < 94 THEN NULL ELSE now() END, "
            "lease_until = CASE WHEN b >= 95 AND b < 97 THEN now() - interval '1 minute' END, "
            "attempts = CASE WHEN b < 90 OR (b >= 95 AND b < 97) THEN 1 ELSE 0 END "
            "FROM (SELECT id AS tid, (row_number() OVER (ORDER BY id) * 100 / :n) % 100 AS b FROM task "
            "      WHERE experiment_id = :e) AS buckets WHERE task.id = tid"),
            {"e": experiment_id, "n": n, "two_leases": 2 * lease_s})
        s.execute(sa.text("ANALYZE task"))
        by_kind = dict(s.execute(sa.text(
            "SELECT CASE WHEN status = 'done' THEN 'done' WHEN status = 'running' THEN 'orphaned' "
            "WHEN enqueued_at IS NULL THEN 'never sent' WHEN enqueued_at < now() - interval '5 minutes' THEN 'lost' "
            "ELSE 'sent just now' END, count(*) FROM task WHERE experiment_id = :e GROUP BY 1"),
            {"e": experiment_id}).all())
    times, spent = {}, {}
    t = time.perf_counter()
    with timing(rec, "resend", spent), timing(scheduler_tasks, "enqueue_pending", spent):
        first = reconcile_once(srv.db, app, lease_s)
    times["pass 1 (re-sends) (s)"] = time.perf_counter() - t
    times["pass 1 parts (s)"] = spent
    idle = []
    for _ in range(3):
        t = time.perf_counter()
        again = reconcile_once(srv.db, app, lease_s)
        idle.append(time.perf_counter() - t)
    times["passes 2-4, nothing to send, median (s)"] = median(idle)
    parts = {}
    for name, fn in (("lost_task_ids", lambda: rec.lost_task_ids(srv.db, lease_s)),
                     ("orphaned_task_ids", lambda: rec.orphaned_task_ids(srv.db, lease_s))):
        t = time.perf_counter()
        fn()
        parts[name] = ms(time.perf_counter() - t)
    return {"tasks": n, "by_kind": by_kind, "sent_pass_1": first, "sent_after": again, **times,
            "queries alone (ms)": parts}


# -- the benchmark ---------------------------------------------------------------------------------

def store_diff_stat() -> str:
    """Which worker code was measured: git diff --stat of the files another engineer changes."""
    proc = subprocess.run(["git", "diff", "--stat", "--", "worker/store.py", "worker/tasks.py", "worker/energy.py"],
                          cwd=servers.ROOT, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    return lines[-1].strip() if lines else "no changes against HEAD"


def _interrupted(*_):
    """SIGTERM as Ctrl-C: the `finally` blocks stop every worker and drop the database."""
    raise KeyboardInterrupt


def run(size: str = "full", workers: int | None = None, tasks: int | None = None) -> Report:
    from bench.replay_engine import load_table, summary
    from shared.celery_app import configure
    from shared.config import Settings

    cfg, watch = SIZES[size], LoadWatch()
    n_workers = workers or cfg["workers"]
    arms = {k: (tasks or v) for k, v in cfg["tasks"].items()}
    table = summary(load_table())
    lease_s = Settings.from_env().lease_seconds
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        with servers.servers() as srv, tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            tmp = Path(tmp)
            app = configure(srv.broker, srv.db)
            procs, files, ready_s = start_workers(srv, n_workers, tmp)
            sampler = Sampler(srv.db, srv.broker, [p.pid for p in procs]).start()
            try:
                done = {}
                for arm, n in arms.items():
                    print(f"fleet: arm {arm}: {n} tasks on {n_workers} workers", file=sys.stderr, flush=True)
                    done[arm] = run_arm(srv, app, tmp, arm, n, n_workers, timeout_s=120.0 + n / 20.0)
                memory = pss_mb([p.pid for p in procs])
            except Exception:   # say why, from where the workers say it
                for log in sorted(tmp.glob("worker-*.log"))[:2]:
                    print(f"fleet: {log.name}, last lines:\n{log.read_text()[-3000:]}", file=sys.stderr)
                raise
            finally:
                sampler.stop()
                stop_workers(procs)
            per_worker = read_timings(files)
            figures_by_arm = {arm: arm_figures(r, per_worker, sampler) for arm, r in done.items()}
            waits = dict(sorted(sampler.waits.items(), key=lambda kv: -kv[1]))
            labelled = report_labels_simulated(srv.db, [d["experiment_id"] for d in done.values()])
            print("fleet: reconcile pass on a %d-task experiment" % cfg["reconcile"], file=sys.stderr, flush=True)
            rec = reconcile_pass(srv, app, tmp, cfg["reconcile"], lease_s)
            kind = srv.kind
    finally:
        signal.signal(signal.SIGTERM, previous)
    return report(size, n_workers, kind, ready_s, memory, table, done, figures_by_arm, rec, watch, labelled, waits)


def report_labels_simulated(db: str, experiment_ids: list[int]) -> bool:
    """`greenctl report`'s builder marks every replay experiment SIMULATED (name, flag, energy note)."""
    from greenctl.report.build import build_report

    for experiment_id in experiment_ids:
        r = build_report(db, experiment_id)
        if not (r["experiment"].get("simulated") is True and r["experiment"]["name"].startswith("SIMULATED")
                and "simulated" in r["energy_methods"]):
            return False
    return True


def report(size, n_workers, kind, ready_s, memory, table, done, figs, rec, watch, labelled, waits) -> Report:
    figures = {"SIMULATED": "timing-replay engine (bench/replay_engine.py), energy 'simulated': no inference, "
                            "no energy measured"}
    for arm, f in figs.items():
        d = done[arm]
        label = "0 ms engine (ceiling)" if arm == "0ms" else f"replayed SmolLM2 {arm} (median {table[arm]['median_ms']} ms)"
        figures[f"[{label}] tasks/s claimed, steady"] = f["claimed/s (steady middle)"]
        figures[f"[{label}] tasks/s written, steady"] = f["written/s (steady middle)"]
        figures[f"  [{arm}] tasks/s written, first to last row"] = f["written/s (consume order to last row)"]
        figures[f"  [{arm}] claim p50 / p99 / max (ms)"] = "%.1f / %.1f / %.1f" % f["claim p50 / p99 / max (ms)"]
        figures[f"  [{arm}] write p50 / p99 (ms)"] = "%.1f / %.1f" % f["write p50 / p99 (ms)"]
        figures[f"  [{arm}] worker CPU in claim / write, median (ms)"] = \
            "%.2f / %.2f" % f["worker CPU inside claim / write, median (ms)"]
        figures[f"  [{arm}] per task claim/run/write/gap (ms)"] = \
            " / ".join(f"{x:.1f}" for x in f["per task: claim / run / write / gap to next claim, medians (ms)"])
        figures[f"  [{arm}] tasks done / failed / result rows"] = f"{d['done']} / {d['failed']} / {d['result_rows']}"
        if arm != "0ms":
            ideal = n_workers / (table[arm]["mean_ms"] / 1e3)
            figures[f"  [{arm}] ideal (workers / mean replay time), tasks/s"] = ideal
    figures["workers ready after (s)"] = ready_s
    figures["memory of all workers, PSS (MB)"] = memory
    figures["reconcile pass, %d tasks, re-sending (s)" % rec["tasks"]] = rec["pass 1 (re-sends) (s)"]
    figures["reconcile pass, %d tasks, nothing to send (s)" % rec["tasks"]] = rec["passes 2-4, nothing to send, median (s)"]
    ceiling = figs.get("0ms", {})
    rate = ceiling.get("written/s (steady middle)", float("nan"))
    p99s = [f["claim p50 / p99 / max (ms)"][1] for f in figs.values()]
    smoke = size == "smoke"
    full_fleet = n_workers >= 50
    correct = all(d["done"] == d["tasks"] == d["result_rows"] and d["failed"] == 0 and d["engine"] == "replay"
                  and d["simulated_rows"] == d["result_rows"] for d in done.values())
    return Report(
        bench="fleet", title=f"coordination at fleet scale, SIMULATED: {n_workers} workers, timing-replay engine",
        size=size,
        inputs={"workers": n_workers, "pool": "Celery solo, 1 thread each", "servers": kind,
                "tasks per arm": {a: d["tasks"] for a, d in done.items()},
                "engine": "replay (bench/replay_engine.py, times from bench/smollm2_timings.json)",
                "energy": "simulated (CodeCarbon off: host-wide lock; see bench/fleet_worker.py)",
                "worker code": store_diff_stat()},
        figures=figures,
        goals=[Goal(f"tasks/s written >= {GOAL_RATE:g} with 50 workers (0 ms arm)", rate,
                    None if smoke or not full_fleet else rate >= GOAL_RATE),
               Goal(f"claim p99 <= {GOAL_P99_MS:g} ms (worst arm)", max(p99s),
                    None if smoke or not full_fleet else max(p99s) <= GOAL_P99_MS),
               Goal("every task done once, one result row each, engine 'replay', energy 'simulated'",
                    sum(d["done"] for d in done.values()), correct),
               Goal("greenctl report labels the fleet's experiments SIMULATED", labelled, labelled)],
        details={"replay table": table, "arms": {a: {k: v for k, v in d.items() if k not in ("started", "finished")}
                                                 for a, d in done.items()},
                 "arm figures": figs, "reconcile": rec,
                 "postgres active backends by wait event (1 s samples, whole run)": waits},
        notes=["SIMULATED: the engine sleeps recorded SmolLM2 times; rows say engine 'replay' and energy "
               "'simulated'; only the coordination (Redis, Celery, Postgres claim/write) is real",
               "50 workers, Postgres, Redis and this bench share 2 cores: the 'load in the steady window' "
               "details say where the CPU went"],
        machine=machine(watch),
    )
