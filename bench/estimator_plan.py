"""Targets A2a/A2b/A2d of issue 15 on this machine: the local fit, graded on later runs.

1. train: an experiment of SmolLM2-135M q4_0 and q8_0 on one real `greenctl worker`,
   then `greenctl estimator fit --hardware <its profile>` (the local fit);
2. plan: `greenctl plan --json` of a second experiment on new prompts (another
   dataset seed), with q4_0 and q8_0 (measured variants: A2a) and q4_1 (a variant
   never measured here: A2b);
3. run it right after and compare: every row's pre-inference estimate (result.estimate_*,
   recorded by the worker) with its measurement (A2a, A2b), and the plan's totals with
   the measured totals (A2d: task seconds, wall time, kWh).

    .venv/bin/python -m bench.estimator_plan [--train 60] [--test 60] [--threads 1]

Held-out rows come from runs after the fit (a time split). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from bench import servers

QUEUE = "bench-plan"


def _ape(est, y) -> dict:
    est, y = np.asarray(est, float), np.asarray(y, float)
    ape = np.abs(est - y) / y
    return {"rows": int(len(y)), "mape": float(ape.mean()), "median_ape": float(np.median(ape)),
            "bias": float(np.median(est / y) - 1)}


def _graded(db: str, experiment_id: int) -> dict:
    """Per variant: the worker's pre-inference estimates vs the measurements, and the fits' coverage."""
    from estimator import store
    from estimator.grading import grade

    rows = store.graded_rows(db, experiment_id)
    with sa.create_engine(db).connect() as conn:
        names = dict(conn.execute(sa.text("SELECT id, variant FROM variant WHERE experiment_id = :e"),
                                  {"e": experiment_id}).all())
    out = {}
    for vid, g in rows.groupby("variant_id"):
        out[names[vid]] = {
            "latency_s": {**_ape(g["estimate_e2e_s"], g["e2e_s"]),
                          "coverage": grade(g["estimate_e2e_s"], g["e2e_s"], g["low_factor"],
                                            g["high_factor"])["coverage"]},
            "energy_kwh": {**_ape(g["estimate_energy_kwh"], g["energy_kwh"]),
                           "coverage": grade(g["estimate_energy_kwh"], g["energy_kwh"], g["energy_low_factor"],
                                             g["energy_high_factor"])["coverage"]},
        }
    return out


def _offline(db: str, profile: str) -> dict:
    """The newest fits (used or not) on the rows after them, with each row's actual tokens: what the
    fit itself gets right, without the worker's token approximation (and even when is_good is false)."""
    from estimator import local, store
    from estimator.grading import grade

    out = {}
    for target, col in local.TARGETS.items():
        row = store.latest_fit(db, profile, target, good_only=False)
        if row is None:
            continue
        fit_json = row["model"]
        new = store.measurements(db, profile, after_result_id=int(fit_json["max_result_id"]))
        new = local.usable(new, target)
        with sa.create_engine(db).connect() as conn:
            names = dict(conn.execute(sa.text("SELECT r.id, v.variant FROM result r JOIN variant v "
                                              "ON v.id = r.variant_id")).all())
        pred = local.predict(fit_json, params=new["params"], bits=new["bits"],
                             prompt_tokens_uncached=new["prompt_tokens_uncached"],
                             prompt_tokens=new["prompt_tokens"], output_tokens=new["output_tokens"],
                             threads=new["threads"])
        new = new.assign(pred=pred["value"], variant=new["result_id"].map(names))
        iv = fit_json["interval"]
        out[target] = {"fit_version": row["version"], "is_good": row["is_good"],
                       "held_out_at_fit": fit_json["metrics"]["mape"],
                       "per_variant": {v: grade(g["pred"], g[col], np.full(len(g), iv["low_factor"]),
                                                np.full(len(g), iv["high_factor"]))
                                       for v, g in new.groupby("variant")}}
    return out


def _measured_totals(db: str, experiment_id: int) -> dict:
    with sa.create_engine(db).connect() as conn:
        r = conn.execute(sa.text(
            "SELECT count(*), sum(e2e_s), sum(energy_kwh), extract(epoch FROM max(created_at) - min(created_at)) "
            "FROM result WHERE experiment_id = :e"), {"e": experiment_id}).one()
        started = conn.execute(sa.text("SELECT created_at FROM experiment WHERE id = :e"),
                               {"e": experiment_id}).scalar_one()
        last = conn.execute(sa.text("SELECT max(created_at) FROM result WHERE experiment_id = :e"),
                            {"e": experiment_id}).scalar_one()
    return {"rows": int(r[0]), "task_seconds": float(r[1]), "energy_kwh": float(r[2]),
            "wall_s_submit_to_last_result": float((last - started).total_seconds())}


def run(train: int = 60, test: int = 60, threads: int = 2) -> dict:
    with servers.servers() as srv, tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = srv.env()
        a = servers.write_spec(tmp / "train.yaml", sample=train, queue=QUEUE, seed=1, variants=("q4_0", "q8_0"))
        b = servers.write_spec(tmp / "test.yaml", sample=test, queue=QUEUE, seed=2,
                               variants=("q4_0", "q8_0", "q4_1"))
        with servers.workers(env, [(QUEUE, threads)], tmp):
            eid = json.loads(servers.greenctl(["submit", str(a), "--json"], env))["experiment_id"]
            servers.wait_for_results(srv.db, eid, 2 * train, timeout=1800)
            with sa.create_engine(srv.db).connect() as conn:
                profile = conn.execute(sa.text("SELECT hardware_profile FROM worker_node LIMIT 1")).scalar_one()
            fit = json.loads(servers.greenctl(["estimator", "fit", "--hardware", profile, "--json"], env))
            plan = json.loads(servers.greenctl(["plan", str(b), "--json"], env))
            time.sleep(11)        # the worker looks for a fit again NO_FIT_TTL_S after finding none
            t0 = time.monotonic()
            eid_b = json.loads(servers.greenctl(["submit", str(b), "--json"], env))["experiment_id"]
            servers.wait_for_results(srv.db, eid_b, 3 * test, timeout=1800)
            wall = time.monotonic() - t0
        measured = _measured_totals(srv.db, eid_b)
        per_row = _graded(srv.db, eid_b)
        offline = _offline(srv.db, profile)
    totals = plan["totals"]
    planned_seconds = sum(v["total"]["task_seconds"]["value"] for v in plan["variants"])
    return {
        "command": f".venv/bin/python -m bench.estimator_plan --train {train} --test {test} --threads {threads}",
        "hardware_profile": profile, "threads": threads,
        "fit": {t: {k: f.get(k) for k in ("status", "version", "metrics")} for t, f in fit["fits"].items()},
        "plan_fit": {v["variant"]: v["fit"]["label"] for v in plan["variants"]},
        "A2a_A2b_per_row": per_row,
        "A2a_A2b_offline_actual_tokens": offline,
        "A2d": {
            "task_seconds": {"plan": planned_seconds, "measured": measured["task_seconds"],
                             "error": planned_seconds / measured["task_seconds"] - 1},
            "energy_kwh": {"plan": totals["energy_kwh"]["value"], "plan_80": [totals["energy_kwh"]["low"],
                                                                             totals["energy_kwh"]["high"]],
                           "measured": measured["energy_kwh"],
                           "error": totals["energy_kwh"]["value"] / measured["energy_kwh"] - 1},
            "wall_s": {"plan": totals["wall_s"]["value"], "measured_submit_to_done": wall,
                       "error": totals["wall_s"]["value"] / wall - 1,
                       "note": "plan excludes model loads; measured includes them and the broker round trips"},
        },
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=60)
    ap.add_argument("--test", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(json.dumps(run(args.train, args.test, args.threads), indent=2))
