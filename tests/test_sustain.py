"""Sustained runs (`sustain: {minutes: m}`) on the real path: `greenctl submit --wait` -> broker ->
a `greenctl worker` -> SmolLM2 -> Postgres -> report. The sample set runs pass after pass until
the time is spent; each result records the CPU clock; the report has a drift section and plot."""
from __future__ import annotations

import redis
import sqlalchemy as sa

from tests.processes import MODEL, base_env, greenctl, greenctl_json, worker, write_spec

MINUTES = 0.25    # 15 s of inference after the first window: several passes of 3 x 2 tasks (a pass
                  # of 6 warm inferences takes 2-4 s here, so still 4 or more passes, and the last
                  # window at >= 10 s shows the run went on well past its first passes)


def test_a_sustained_run_repeats_passes_until_the_time_is_spent(tmp_path, fresh_db_url, broker_url):
    redis.Redis.from_url(broker_url).flushdb()
    env = base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL=broker_url,
                   GREENCTL_STATE_DIR=str(tmp_path / "state"))
    spec = write_spec(tmp_path / "sustain.yaml", [{"name": MODEL, "engine": "embedded",
                                                  "variants": ["q8_0", "q4_0"]}],
                      sample=3, queue="sustain", sustain={"minutes": MINUTES})
    with worker(env, "sustain", tmp_path / "worker.log"):
        eid = greenctl_json(["submit", str(spec), "--wait", "--json", "--timeout", "300"], env)["experiment_id"]
    with sa.create_engine(fresh_db_url).connect() as conn:
        passes = conn.execute(sa.text(
            "SELECT t.repeat, count(*), min(r.window_started_at), max(r.window_started_at) FROM task t "
            "JOIN result r ON r.task_id = t.id WHERE t.experiment_id = :e GROUP BY t.repeat ORDER BY t.repeat"),
            {"e": eid}).all()
        freqs = conn.execute(sa.text("SELECT cpu_freq_mhz FROM result WHERE experiment_id = :e"),
                             {"e": eid}).scalars().all()
        open_tasks = conn.execute(sa.text("SELECT count(*) FROM task WHERE experiment_id = :e "
                                          "AND status IN ('queued', 'running', 'held')"), {"e": eid}).scalar()
    assert open_tasks == 0 and len(passes) >= 2 and all(n == 6 for _, n, _, _ in passes)
    start = passes[0][2]
    # Each pass after the first was written while time was left (its first window opens
    # moments after), and the run went on until the time was spent (the last inference, a
    # fraction of a second long, opened less than a few seconds before it).
    assert all((first - start).total_seconds() < MINUTES * 60 + 5 for _, _, first, _ in passes)
    assert (passes[-1][3] - start).total_seconds() >= MINUTES * 60 - 5
    # psutil reads a clock on this Linux machine (psutil.cpu_freq is not None here).
    import psutil
    assert (psutil.cpu_freq() is None) or all(f and f > 0 for f in freqs)
    report = greenctl_json(["report", str(eid), "--format", "json"], env)
    drift = report["drift"]
    assert report["experiment"]["status"] == "done" and not report["experiment"]["partial"]
    assert report["experiment"]["n_tasks"] == 6 * len(passes)
    assert set(drift["per_minute"]) == {"q8_0", "q4_0"} and drift["throttled"] in (True, False, None)
    assert sum(m["n"] for ms in drift["per_minute"].values() for m in ms) == 6 * len(passes)
    table = greenctl(["report", str(eid)], env).stdout
    assert "Sustained run:" in table
    out = tmp_path / "figs"
    greenctl(["report", str(eid), "--format", "png", "--output", str(out)], env)
    assert (out / "drift.png").stat().st_size > 1000


# -- the passes, through the worker's own store functions (a stand-in answers for the model) -----

def _experiment_with(db: str, minutes: float) -> int:
    from scheduler import submit
    from scheduler.dataset import load_samples
    from scheduler.spec import parse_spec
    from tests.processes import DATASET

    spec = parse_spec({"name": "passes", "dataset": {"path": str(DATASET), "labels": ["positive", "negative",
                                                                                        "neutral"], "sample": 3},
                       "models": [{"name": MODEL, "engine": "embedded", "variants": ["q8_0", "q4_0"]}],
                       "sustain": {"minutes": minutes}})
    samples, examples = load_samples(spec.dataset)
    return submit.write_experiment(db, spec, samples, examples)


def _queued(db: str, eid: int) -> list[int]:
    with sa.create_engine(db).connect() as conn:
        return conn.execute(sa.text("SELECT id FROM task WHERE experiment_id = :e AND status = 'queued' "
                                    "ORDER BY id"), {"e": eid}).scalars().all()


def _answer(db: str, task_ids: list[int], started=None) -> list[bool]:
    from datetime import datetime, timezone

    from worker import store
    finished = []
    for task_id in task_ids:
        job = store.claim(db, task_id, "stand-in", 600)
        finished.append(store.write_result(db, dict(
            task_id=task_id, experiment_id=job.experiment_id, variant_id=job.variant_id, worker="stand-in",
            prediction=job.label, energy_method="forced", energy_kwh=1e-5, co2_kg=1e-6,
            window_started_at=started or datetime.now(timezone.utc)), job.spec["sustain"]["minutes"]))
    return finished


def test_the_last_task_of_a_pass_writes_the_next_until_the_time_is_spent(fresh_db_url):
    from datetime import datetime, timedelta, timezone

    from worker import store
    eid = _experiment_with(fresh_db_url, 10)
    first = _queued(fresh_db_url, eid)
    assert len(first) == 6 and store.take_unsent(fresh_db_url, eid) != []   # as submit's enqueue would
    # Five of six answered: nothing new yet; the sixth: a second pass of six, sent exactly once.
    assert _answer(fresh_db_url, first[:5]) == [False] * 5 and _queued(fresh_db_url, eid) == [first[5]]
    assert _answer(fresh_db_url, first[5:]) == [False]
    second = _queued(fresh_db_url, eid)
    assert len(second) == 6 and not set(second) & set(first)
    sent = store.take_unsent(fresh_db_url, eid)
    assert sorted(t for t, _ in sent) == second and {q for _, q in sent} == {"default"}
    assert store.take_unsent(fresh_db_url, eid) == []
    with sa.create_engine(fresh_db_url).connect() as conn:
        repeats = conn.execute(sa.text("SELECT DISTINCT repeat FROM task WHERE id = ANY(:ids)"),
                               {"ids": second}).scalars().all()
        n_tasks = conn.execute(sa.text("SELECT n_tasks FROM experiment WHERE id = :e"), {"e": eid}).scalar()
    assert repeats == [1] and n_tasks == 12
    # Time spent (the first window opened 11 minutes ago): the pass ends the run, no third pass.
    with sa.create_engine(fresh_db_url).begin() as conn:
        conn.execute(sa.text("UPDATE result SET window_started_at = :t WHERE experiment_id = :e"),
                     {"t": datetime.now(timezone.utc) - timedelta(minutes=11), "e": eid})
    assert _answer(fresh_db_url, second) == [False] * 5 + [True]
    assert _queued(fresh_db_url, eid) == []


def test_a_cancelled_sustained_run_writes_no_further_pass(fresh_db_url):
    from scheduler import submit
    eid = _experiment_with(fresh_db_url, 10)
    first = _queued(fresh_db_url, eid)
    from worker import store
    _answer(fresh_db_url, first[:5])
    job = store.claim(fresh_db_url, first[5], "stand-in", 600)
    assert submit.cancel_experiment(fresh_db_url, eid) == 1     # the running one
    # The inference that was running finishes (its result is kept) after the cancel: no new pass.
    store.write_result(fresh_db_url, dict(task_id=job.task_id, experiment_id=eid, variant_id=job.variant_id,
                                          worker="stand-in", prediction=job.label, energy_method="forced"), 10)
    with sa.create_engine(fresh_db_url).connect() as conn:
        n = conn.execute(sa.text("SELECT count(*) FROM task WHERE experiment_id = :e"), {"e": eid}).scalar()
    assert n == 6 and _queued(fresh_db_url, eid) == []
