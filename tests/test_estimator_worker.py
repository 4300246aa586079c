"""A real `greenctl worker` records, before each inference, the estimate it expects (result.estimate_*)."""
from __future__ import annotations

import sqlalchemy as sa

from estimator import store
from estimator.tasks import refit
from test_estimator_store import add_results
from tests.processes import MODEL, base_env, greenctl_json, worker, write_spec


def test_every_row_carries_the_estimate_its_worker_expected(tmp_path, fresh_db_url, broker_url):
    env = base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL=broker_url,
                   GREENCTL_STATE_DIR=str(tmp_path / "state"))
    spec = write_spec(tmp_path / "expect.yaml", [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}],
                      sample=3, queue="expect")
    with worker(env, "expect", tmp_path / "worker.log", "--threads", "1"):
        engine = sa.create_engine(fresh_db_url)
        with engine.connect() as conn:
            profile = conn.execute(sa.text("SELECT hardware_profile FROM worker_node")).scalar_one()
        add_results(fresh_db_url, profile, 80)        # a good fit for this machine's profile
        assert refit(profile, fresh_db_url, force=True)["status"] == "fitted"
        fits = {f["target"]: f for f in store.list_fits(fresh_db_url, profile)}
        assert fits["latency_s"]["is_good"] and fits["energy_kwh"]["is_good"]
        eid = greenctl_json(["submit", str(spec), "--wait", "--json", "--timeout", "120"], env, timeout=180)[
            "experiment_id"]
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT estimate_fit_id, estimate_energy_fit_id, estimate_e2e_s, estimate_energy_kwh, e2e_s "
            "FROM result WHERE experiment_id = :e"), {"e": eid}).all()
    assert len(rows) == 3
    for fit_id, energy_fit_id, e2e, kwh, _ in rows:
        assert fit_id == fits["latency_s"]["id"] and energy_fit_id == fits["energy_kwh"]["id"]
        assert e2e > 0 and kwh > 0
    # the report grades them against the measurements of the same rows
    report = greenctl_json(["report", str(eid), "--format", "json"], env)
    graded = report["estimated_vs_measured"][0]
    assert graded["rows"] == 3 and graded["latency_s"]["rows"] == 3
