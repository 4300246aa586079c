"""P6 result writes: results per second into Postgres from 4 concurrent writers.

Each writer is a process calling the worker's real idempotent write
(`worker.store.write_result`: insert-once result row, task -> done, commit, then
close the experiment when no task is open). That close looks at the experiment's
tasks, so the write runs on a small experiment (every task written) and on a
large one (100,000 tasks, the same number written). The machine is shared, so
the arms alternate in blocks (all 4 writers on one arm at a time, a barrier
between blocks) and each arm's rate is its writes over the sum of its blocks' times.
"""
from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench import servers, synthetic
from bench.report import Goal, LoadWatch, Report, machine, median

WRITERS = 4
SIZES = {"full": dict(per_writer=2000, large=100_000, block=100, race_trials=30),
         "quick": dict(per_writer=500, large=30_000, block=100, race_trials=20),
         "smoke": dict(per_writer=10, large=None, block=5, race_trials=3)}
GOAL = 500.0


def _writer(db: str, blocks: list[list[tuple[int, int, int]]], barrier, out) -> None:
    """Write each block's rows; every block starts and ends together."""
    from worker import store

    for index, jobs in enumerate(blocks):
        rows = [synthetic.result_row(t, e, v) for e, t, v in jobs]
        barrier.wait()
        started, cpu, latencies = time.time(), time.process_time(), []
        for row in rows:
            t = time.perf_counter()
            store.with_db_retry(store.write_result, db, row)
            latencies.append(time.perf_counter() - t)
        out.put((index, started, time.time(), latencies, time.process_time() - cpu))
    barrier.wait()


def _run_writers(db: str, plans: list[list]) -> list[tuple]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db, plans[i], barrier, out)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    got = [out.get(timeout=900) for _ in range(WRITERS * len(plans[0]))]
    for p in procs:
        p.join()
    return got


def blocks_plan(arms: dict, block: int) -> tuple[list[list], list[str]]:
    """Per writer, a list of blocks of jobs; arms rotate block by block (a b c, c b a, ...)."""
    names = list(arms)
    rounds = len(next(iter(arms.values()))["jobs"]) // (block * WRITERS)
    plans, order = [[] for _ in range(WRITERS)], []
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            jobs = arms[name]["jobs"][r * block * WRITERS:(r + 1) * block * WRITERS]
            order.append(name)
            for w in range(WRITERS):
                plans[w].append(jobs[w::WRITERS])
    return plans, order


def open_task_check_ms(db: str, experiment_id: int) -> dict:
    """The open-task check, timed alone: COUNT(*) (the write's first version) vs EXISTS
    (worker.store.finish_experiment_if_done)."""
    from shared.db import session_scope

    where = "experiment_id = :e AND status IN ('queued', 'running')"
    out = {}
    with session_scope(db) as s:
        for name, query in (("count", f"SELECT count(*) FROM task WHERE {where}"),
                            ("exists", f"SELECT EXISTS (SELECT 1 FROM task WHERE {where})")):
            times = []
            for _ in range(20):
                t = time.perf_counter()
                s.execute(sa.text(query), {"e": experiment_id}).scalar()
                times.append(time.perf_counter() - t)
            out[name] = 1e3 * median(times)
    return out


def last_write_race(db: str, tmp: Path, trials: int) -> dict:
    """Experiments of WRITERS tasks, each writer writing one of them at the same moment:
    how often is the experiment left open although every task has its result?"""
    from shared.db import session_scope

    data = synthetic.dataset(tmp / "race.csv", WRITERS)
    experiments = [synthetic.experiment(db, data, queue="bench-p6-race") for _ in range(trials)]
    plans = [[[(e, ids[w], v)] for e, ids, v in experiments] for w in range(WRITERS)]
    _run_writers(db, plans)
    with session_scope(db) as s:
        left_open = s.execute(
            sa.text("SELECT count(*) FROM experiment WHERE id = ANY(:ids) AND finished_at IS NULL"),
            {"ids": [e for e, _, _ in experiments]}).scalar_one()
    return {"trials": trials, "left_open": left_open}


def run(size: str = "full") -> Report:
    cfg, watch = SIZES[size], LoadWatch()
    writes = WRITERS * cfg["per_writer"]
    with servers.servers() as srv, tempfile.TemporaryDirectory(prefix="bench-p6-") as tmp:
        tmp, db = Path(tmp), srv.db

        def arm(tasks: int, tag: str) -> dict:
            data = synthetic.dataset(tmp / f"{tag}.csv", tasks)
            eid, ids, vid = synthetic.experiment(db, data, f"bench-p6-{tag}")
            return {"tasks": tasks, "experiment_id": eid, "jobs": [(eid, t, vid) for t in ids[:writes]]}

        arms = {f"current, {writes:,}-task experiment": arm(writes, "small")}
        if cfg["large"]:
            arms[f"current, {cfg['large']:,}-task experiment"] = arm(cfg["large"], "large")
            check = open_task_check_ms(db, arms[f"current, {cfg['large']:,}-task experiment"]["experiment_id"])
        plans, order = blocks_plan(arms, cfg["block"])
        got = _run_writers(db, plans)
        race = {"current": last_write_race(db, tmp, cfg["race_trials"])}
        from shared.db import session_scope

        with session_scope(db) as s:
            small = next(iter(arms.values()))
            closed, rows = s.execute(sa.text(
                "SELECT e.finished_at IS NOT NULL, (SELECT count(*) FROM result r WHERE r.experiment_id = e.id) "
                "FROM experiment e WHERE e.id = :e"), {"e": small["experiment_id"]}).one()
        kind = srv.kind

    per_arm = {name: {"s": 0.0, "n": 0, "lat": [], "cpu": 0.0} for name in arms}
    for index, name in enumerate(order):
        block = [g for g in got if g[0] == index]
        per_arm[name]["s"] += max(g[2] for g in block) - min(g[1] for g in block)
        per_arm[name]["cpu"] += sum(g[4] for g in block)
        per_arm[name]["n"] += sum(len(g[3]) for g in block)
        per_arm[name]["lat"] += [x for g in block for x in g[3]]
    rates = {name: a["n"] / a["s"] for name, a in per_arm.items()}
    figures = {}
    for name, a in per_arm.items():
        lat = sorted(a["lat"])
        figures[f"results/s, {name}"] = rates[name]
        figures[f"  {name}: latency p50 / p95 (ms)"] = \
            f"{1e3 * median(lat):.1f} / {1e3 * lat[int(0.95 * (len(lat) - 1))]:.1f}"
        # CPU the writer process itself (SQLAlchemy, psycopg2) spends per write: with 4
        # writers and Postgres on 2 cores, this bounds the rate before Postgres does.
        figures[f"  {name}: writer CPU per write (ms)"] = 1e3 * a["cpu"] / a["n"]
    if cfg["large"]:
        figures[f"open-task check on {cfg['large']:,} tasks: COUNT / EXISTS (ms)"] = \
            f"{check['count']:.2f} / {check['exists']:.3f}"
    figures["experiment closed after its last write"] = bool(closed)
    for w, r in race.items():
        figures[f"last {WRITERS} tasks written at once, {w} write: left open"] = \
            f"{r['left_open']} of {r['trials']}"
    current_worst = min(rates.values())
    notes = ["each write is two transactions, as a worker makes it: insert result + update task, commit; then "
             "one UPDATE ... WHERE finished_at IS NULL AND NOT EXISTS (open task) closing the experiment, "
             "commit; 4 writer processes + Postgres share 2 cores"]
    if race["current"]["left_open"]:
        notes.append("experiments were left open although every task has its result: a regression, the close "
                     "after the commit (worker.store.finish_experiment_if_done) should leave none open")
    return Report(
        bench="p6-writes", title=f"result writes into Postgres from {WRITERS} concurrent writer processes",
        size=size,
        inputs={"writers": WRITERS, "writes per arm": writes, "servers": kind, "arms": list(arms),
                "order": f"blocks of {cfg['block']} writes per writer, arms rotating",
                "write": "worker.store.write_result via with_db_retry"},
        figures=figures,
        goals=[Goal(f"results/s >= {GOAL:g} (current write, worst experiment size)", current_worst,
                    None if size == "smoke" else current_worst >= GOAL),
               Goal("experiment closed when its last task is written (left open, current write)",
                    race["current"]["left_open"], bool(closed) and race["current"]["left_open"] == 0)],
        details={"rates": rates, "race": race, "result_rows_small": rows,
                 "open_task_check_ms": check if cfg["large"] else None},
        notes=notes,
        machine=machine(watch),
    )
