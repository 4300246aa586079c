"""The real distributed path: `greenctl submit` -> broker -> `greenctl worker`
subprocess -> embedded llama.cpp with SmolLM2 -> CodeCarbon -> Postgres -> report.

Once on embedded Postgres + Valkey (a machine with nothing installed), once on
the system PostgreSQL and Redis of this machine.
"""
from __future__ import annotations

import sqlalchemy as sa

from shared import embedded
from tests.conftest import SYSTEM_REDIS, redis_db
from tests.processes import MODEL, base_env, greenctl, greenctl_json, worker, write_spec

LABELS = {"positive", "negative", "neutral"}


def test_embedded_servers_run_an_experiment_end_to_end(tmp_path):
    state = tmp_path / "state"
    env = base_env(GREENCTL_STATE_DIR=str(state))
    spec = write_spec(tmp_path / "tiny.yaml", [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}],
                      sample=4, queue="e2e")
    try:
        with worker(env, "e2e", tmp_path / "worker.log"):
            out = greenctl(["submit", str(spec), "--wait", "--json", "--timeout", "240"], env)
        submitted = __import__("json").loads(out.stdout)     # stdout is exactly one JSON object
        assert list(submitted) == ["experiment_id"]
        eid = submitted["experiment_id"]
        status = greenctl_json(["status", str(eid), "--json"], env)
        assert (status["n_done"], status["n_failed"], status["status"]) == (4, 0, "done")
        report = greenctl_json(["report", str(eid), "--format", "json"], env)
        (variant,) = report["variants"]
        assert variant["model"] == MODEL and variant["variant"] == "q4_0" and variant["n"] == 4
        assert set(variant["energy_method"].split("+")) <= {"estimated", "rapl", "forced"}   # e.g. rapl+estimated
        assert variant["energy_kwh_per_inference"] > 0 and variant["co2_kg_per_inference"] > 0
        assert variant["prompt_tokens_mean"] > variant["output_tokens_mean"] > 0
        assert 0.0 <= variant["f1_weighted"] <= 1.0
        table = greenctl(["report", str(eid)], env).stdout
        assert "q4_0" in table and "CO2e" in table
        services = embedded.ensure(state)       # the same servers, still running
        # Closed here, before the servers stop: a connection left to the garbage collector fails
        # its reset later and logs a traceback mid-way through whatever test runs then.
        with sa.create_engine(services["postgres"]["url"], poolclass=sa.pool.NullPool).connect() as conn:
            rows = conn.execute(
                sa.text("SELECT count(*), count(DISTINCT task_id) FROM result WHERE experiment_id = :e"),
                {"e": eid}).one()
        assert tuple(rows) == (4, 4)
    finally:
        embedded.stop(state)


def _system_env(tmp_path, fresh_db_url, redis_db: int) -> dict:
    __import__("redis").Redis.from_url(f"{SYSTEM_REDIS}/{redis_db}").flushdb()
    return base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL=f"{SYSTEM_REDIS}/{redis_db}",
                    GREENCTL_STATE_DIR=str(tmp_path / "state"))


def _wait_for_fits(db_url: str, timeout: float = 60) -> list[dict]:
    import time
    deadline = time.monotonic() + timeout
    with sa.create_engine(db_url).connect() as conn:
        while True:
            rows = conn.execute(sa.text("SELECT target, source, n_train, n_test, metrics FROM estimator_fit")).mappings().all()
            if len(rows) >= 2 or time.monotonic() > deadline:
                return [dict(r) for r in rows]
            time.sleep(0.5)
            conn.rollback()


def test_system_servers_three_variants_f16_costs_more_than_q4_0(tmp_path, fresh_db_url):
    env = _system_env(tmp_path, fresh_db_url, redis_db("end_to_end"))
    spec = write_spec(tmp_path / "three.yaml", [
        {"name": MODEL, "engine": "embedded", "variants": ["f16", "q8_0", "q4_0"]}], sample=8, queue="tv")
    with worker(env, "tv", tmp_path / "tv.log", "--queue", "estimator"):
        eid = greenctl_json(["submit", str(spec), "--wait", "--json", "--timeout", "400"], env)["experiment_id"]
        fits = _wait_for_fits(fresh_db_url)
    # The experiment's end triggered a refit of the estimator for this machine's profile.
    assert {f["target"] for f in fits} == {"latency_s", "energy_kwh"}
    assert all(f["source"] == "measurements" and f["n_train"] + f["n_test"] == 24 for f in fits)
    assert all(0 <= f["metrics"]["mape"] < 1 for f in fits)
    report = greenctl_json(["report", str(eid), "--format", "json"], env)
    by_variant = {v["variant"]: v for v in report["variants"]}
    assert report["experiment"]["status"] == "done"
    assert [by_variant[v]["n"] for v in ("f16", "q8_0", "q4_0")] == [8, 8, 8]
    assert all(by_variant[v]["energy_method"] for v in by_variant)
    # f16 moves 3x the bytes of q4_0 per token: it must cost measurably more time per inference.
    assert by_variant["f16"]["latency_s_mean"] > 1.2 * by_variant["q4_0"]["latency_s_mean"]
    assert by_variant["q4_0"]["co2_change_vs_baseline"] < 0
    bits = {v: by_variant[v]["model_info"]["bits_per_weight"] for v in ("f16", "q8_0", "q4_0")}
    assert bits["f16"] > bits["q8_0"] > bits["q4_0"]


def test_two_workers_on_two_queues_get_only_their_own_tasks(tmp_path, fresh_db_url):
    env = _system_env(tmp_path, fresh_db_url, redis_db("end_to_end"))
    spec = write_spec(tmp_path / "queues.yaml", [
        {"name": MODEL, "engine": "embedded", "variants": ["q8_0"], "queue": "qa"},
        {"name": MODEL, "engine": "embedded", "variants": ["q4_0"], "queue": "qb"},
        # No worker here runs Ollama: these tasks must fail with a reason, not hang.
        {"name": "llama3.2:1b-instruct", "engine": "ollama", "variants": ["q4_K_M"], "queue": "qa"},
    ], sample=3)
    with worker(env, "qa", tmp_path / "qa.log", "--threads", "1"), \
            worker(env, "qb", tmp_path / "qb.log", "--threads", "1"):
        eid = greenctl_json(["submit", str(spec), "--wait", "--json", "--timeout", "300"], env)["experiment_id"]
    report = greenctl_json(["report", str(eid), "--format", "json"], env)
    by_variant = {v["variant"]: v for v in report["variants"]}
    assert (by_variant["q8_0"]["n"], by_variant["q4_0"]["n"]) == (3, 3)
    assert by_variant["q4_K_M"]["n_failed"] == 3 and report["experiment"]["n_failed"] == 3
    with sa.create_engine(fresh_db_url).connect() as conn:
        placed = conn.execute(sa.text(
            "SELECT v.variant, r.worker FROM result r JOIN variant v ON v.id = r.variant_id")).all()
        errors = conn.execute(sa.text("SELECT DISTINCT error FROM task WHERE status = 'failed'")).scalars().all()
    assert {w.split(":")[-1] for v, w in placed if v == "q8_0"} == {"qa"}
    assert {w.split(":")[-1] for v, w in placed if v == "q4_0"} == {"qb"}
    assert len(errors) == 1 and "not 'ollama'" in errors[0] and "pin the model" in errors[0]
