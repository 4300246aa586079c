"""A tiny run of every benchmark (`python -m bench all --smoke --json`): the code
paths work end to end and each prints what it promises (inputs, machine, load,
figures, goals). At this size the figures themselves mean nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHES = ["p1-pipeline", "p2-energy", "p3-prefix", "p4-tracking", "p5-scheduler", "p6-writes", "scaling",
           "p7-report"]


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def reports() -> dict:
    proc = bench("all", "--smoke", "--json")
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert lines and all(line.startswith("{") for line in lines), "with --json, stdout is JSON lines only"
    assert "== p1-pipeline" in proc.stderr          # the readable text went to stderr
    return {r["bench"]: r for r in map(json.loads, lines)}


def test_every_benchmark_ran(reports):
    assert sorted(reports) == sorted(BENCHES)


@pytest.mark.parametrize("name", BENCHES)
def test_report_has_inputs_machine_and_figures(reports, name):
    r = reports[name]
    assert r["size"] == "smoke" and r["figures"] and r["inputs"]
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]
    assert {"load_avg_1m_start", "load_avg_1m_end", "cpu_busy_pct"} <= set(r["machine"])
    if name not in ("p5-scheduler", "p6-writes"):
        assert "N" in r["inputs"]


def test_pipeline_ratio_and_breakdown(reports):
    f = reports["p1-pipeline"]["figures"]
    assert f["throughput ratio b/a (median of paired chunks)"] > 0
    steps = reports["p1-pipeline"]["details"]["steps"]
    assert all(steps[k] > 0 for k in ("claim_ms", "write_ms", "window_ms"))


def test_energy_protocols_both_measured(reports):
    per = reports["p2-energy"]["details"]["per protocol"]
    assert per["paper"]["energy_j"] > 0 and per["greenctl"]["energy_j"] > 0
    # No prefix reuse on the paper side: every prompt token is evaluated.
    assert per["paper"]["prompt_tokens_evaluated"] == per["paper"]["prompt_tokens"]
    assert per["greenctl"]["prompt_tokens_evaluated"] < per["greenctl"]["prompt_tokens"]


def test_scheduler_enqueued_every_task_once(reports):
    for run in reports["p5-scheduler"]["details"].values():
        assert run["tasks"] == run["sent"] == run["queued"]


def test_writes_made_one_result_per_task(reports):
    r = reports["p6-writes"]
    assert r["details"]["result_rows_small"] == r["inputs"]["writes per arm"]
    # The close runs after each write's commit: the last writer to commit always closes it.
    assert r["details"]["race"]["current"]["left_open"] == 0


def test_unknown_benchmark_names_the_choices():
    proc = bench("p9")
    assert proc.returncode != 0 and "p1 (pipeline)" in proc.stderr


# -- fleet (SIMULATED, run by name only: not in `all`) -------------------------------------------

@pytest.fixture(scope="module")
def fleet() -> dict:
    proc = bench("fleet", "--smoke", "--json", timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("{"), "with --json, stdout is one JSON line"
    return json.loads(lines[0])


def test_fleet_ran_every_task_once_as_simulated_rows(fleet):
    assert fleet["bench"] == "fleet" and fleet["size"] == "smoke" and "SIMULATED" in fleet["title"]
    for arm in fleet["details"]["arms"].values():
        # Counted from the database: one result per task, nothing failed, every row labelled.
        assert arm["done"] == arm["tasks"] == arm["result_rows"] > 0 and arm["failed"] == 0
        assert arm["engine"] == "replay" and arm["simulated_rows"] == arm["result_rows"]
        assert arm["experiment_status"] == "done"
    goals = {g["what"]: g["met"] for g in fleet["goals"]}
    assert goals["greenctl report labels the fleet's experiments SIMULATED"] is True


def test_fleet_reconcile_resends_exactly_the_lost_orphaned_and_unsent(fleet):
    rec = fleet["details"]["reconcile"]
    kinds, sent = rec["by_kind"], rec["sent_pass_1"]
    assert (sent["pending"], sent["orphaned"], sent["lost"]) == (kinds["never sent"], kinds["orphaned"], kinds["lost"])
    assert rec["sent_after"] == {"pending": 0, "orphaned": 0, "lost": 0}


def test_replay_engine_is_not_a_users_choice():
    from scheduler.spec import SpecError, parse_spec
    from worker.engines import EngineError, create_engine

    with pytest.raises(SpecError, match="engine"):
        parse_spec({"name": "x", "dataset": {"path": "d.csv", "labels": ["a", "b"]}, "prompt": {"template": "label-only"},
                    "models": [{"name": "smollm2:135m-instruct", "engine": "replay", "variants": ["q4_0"]}]})
    with pytest.raises(EngineError, match="unknown engine 'replay'"):
        create_engine("replay")        # registered only inside bench.fleet_worker's processes


def test_fleet_options_are_refused_for_other_benchmarks():
    proc = bench("p5", "--workers", "3")
    assert proc.returncode == 2 and "apply to `fleet` only" in proc.stderr
