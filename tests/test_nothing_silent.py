"""Nothing silent: every wait, failure and mistake says what happened and what to do next.

Through the real CLI (subprocesses, as a user types it) against the system Postgres and Redis.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis
import sqlalchemy as sa

from tests.conftest import SYSTEM_REDIS, redis_db
from tests.processes import MODEL, ROOT, base_env, greenctl, write_spec

REDIS_DB = redis_db("nothing_silent")


@pytest.fixture()
def env(tmp_path, fresh_db_url) -> dict:
    broker = f"{SYSTEM_REDIS}/{REDIS_DB}"
    redis.Redis.from_url(broker).flushdb()
    yield base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL=broker,
                   GREENCTL_STATE_DIR=str(tmp_path / "state"), GREENCTL_HEARTBEAT_SECONDS="1")
    redis.Redis.from_url(broker).flushdb()


def _count(db: str, table: str) -> int:
    with sa.create_engine(db, poolclass=sa.pool.NullPool).connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()


def _spec(tmp_path, **overrides):
    return write_spec(tmp_path / "exp.yaml", [{"name": MODEL, "engine": "embedded", "variants": ["q4_0"]}],
                      **overrides)


def test_every_spec_mistake_is_reported_at_once_with_a_suggestion(tmp_path, env):
    import yaml

    path = _spec(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["dataset"]["lables"] = spec["dataset"].pop("labels")         # two typos in one file
    spec["models"][0]["varaints"] = spec["models"][0].pop("variants")
    path.write_text(yaml.safe_dump(spec))
    proc = greenctl(["submit", str(path)], env, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert "dataset.lables: unknown key" in lines[0] and "did you mean 'labels'?" in lines[0]
    assert "models[0].varaints" in lines[1] and "'variants'" in lines[1]
    assert not any("required field is missing" in line for line in lines)   # the typo, not its effect
    assert _count(env["GREENCTL_DATABASE_URL"], "experiment") == 0


def test_unknown_ids_and_names_exit_2_with_one_message(env):
    report = greenctl(["report", "99"], env, check=False)
    status = greenctl(["status", "99"], env, check=False)
    assert (report.returncode, status.returncode) == (2, 2)
    assert report.stderr == status.stderr == (
        "Error: EXPERIMENT_ID: no experiment with id 99: run `greenctl status` to list them\n")
    estimate = greenctl(["estimate", "--model", "no/such-model", "--prompt-tokens", "10",
                         "--output-tokens", "2"], env, check=False)
    assert estimate.returncode == 2 and "--model: unknown model" in estimate.stderr


def test_every_json_flag_prints_exactly_one_object(tmp_path, env):
    from tests.report_fixtures import seed_experiment

    db = env["GREENCTL_DATABASE_URL"]
    seeded = seed_experiment(db, samples=12, failed=1)
    eid = str(seeded.experiment_id)
    commands = [["status", "--json"], ["status", eid, "--json"], ["workers", "--json"],
                ["report", eid, "--format", "json"], ["compare", eid, "--json"],
                ["recommend", eid, "--min-f1", "0.1", "--json"], ["estimator", "list", "--json"],
                ["estimator", "list", "--models", "--json"], ["models", "list", "--json"],
                ["estimate", "--params", "7e9", "--prompt-tokens", "100", "--output-tokens", "5", "--json"]]
    for args in commands:
        out = greenctl(args, env).stdout
        assert isinstance(json.loads(out), dict), args          # one document, and an object


def test_status_and_json_group_failures_by_reason(tmp_path, env):
    db = env["GREENCTL_DATABASE_URL"]
    eid = json.loads(greenctl(["submit", str(_spec(tmp_path, sample=6)), "--json"], env).stdout)["experiment_id"]
    with sa.create_engine(db, poolclass=sa.pool.NullPool).begin() as conn:
        ids = conn.execute(sa.text("SELECT id FROM task WHERE experiment_id = :e ORDER BY id"), {"e": eid}).scalars().all()
        for i, task_id in enumerate(ids[:5]):
            conn.execute(sa.text("UPDATE task SET status = 'failed', error = :r WHERE id = :t"),
                         {"t": task_id, "r": "engine down" if i < 3 else "model file is corrupt"})
    text = greenctl(["status", str(eid)], env).stdout
    assert f"experiment {eid}: 3 failed: engine down" in text
    assert f"experiment {eid}: 2 failed: model file is corrupt" in text
    row = json.loads(greenctl(["status", str(eid), "--json"], env).stdout)
    assert row["failures"] == [{"reason": "engine down", "tasks": 3}, {"reason": "model file is corrupt", "tasks": 2}]


def test_submitting_the_same_name_twice_says_so(tmp_path, env):
    path = _spec(tmp_path)
    greenctl(["submit", str(path)], env)
    second = greenctl(["submit", str(path)], env)
    assert "same name as experiment 1" in second.stderr


@pytest.mark.timeout(120)
def test_waiting_with_no_worker_says_what_to_start_and_ctrl_c_leaves_it_running(tmp_path, env):
    path = _spec(tmp_path, queue="nobody-serves-this")
    proc = subprocess.Popen([sys.executable, "-m", "greenctl", "submit", str(path), "--wait"], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hint = "no online worker consumes queue 'nobody-serves-this'"
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 40      # the hint is due after ~15 s
        while not any(hint in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.5)
        err = "".join(lines)
        assert hint in err, err
        assert "greenctl worker --queue nobody-serves-this" in err and "greenctl up" in err
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
        reader.join(timeout=5)
        err = "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "keeps running" in err and "greenctl status 1 --watch" in err and "greenctl cancel 1" in err
    assert "Aborted!" not in err
    assert _count(env["GREENCTL_DATABASE_URL"], "task") == 4      # still there, still queued


def test_a_read_only_command_never_starts_servers(tmp_path):
    state = tmp_path / "state"
    env = base_env(GREENCTL_STATE_DIR=str(state))
    proc = greenctl(["status"], env, check=False)
    assert proc.returncode == 1
    assert "not running" in proc.stderr and "greenctl up" in proc.stderr
    assert not (state / "pgdata").exists()


def test_tables_are_readable_at_80_columns_when_piped(tmp_path, env):
    from tests.report_fixtures import seed_experiment

    eid = str(seed_experiment(env["GREENCTL_DATABASE_URL"], samples=6, failed=1,
                              name="a rather long experiment name that a user might well choose").experiment_id)
    with sa.create_engine(env["GREENCTL_DATABASE_URL"], poolclass=sa.pool.NullPool).begin() as conn:
        conn.execute(sa.text("INSERT INTO worker_node (hostname, queue, cpu_model, cores, ram_gb, gpu, os, "
                             "energy_method, hardware_profile, engines, models, started_at, last_heartbeat) "
                             "VALUES ('edge-laptop-01.example.lan', 'default', 'AMD EPYC 7B13', 2, 24, '', "
                             "'Linux', 'estimated', 'cpu-amd-epyc-7b13-2c-24g', '[\"embedded\"]', '[]', "
                             "now(), now())"))
    greenctl(["estimator", "fit"], env)
    for args in (["status"], ["workers"], ["estimator", "list"], ["estimator", "validate"], ["compare", eid, eid]):
        out = greenctl(args, env).stdout
        long = [line for line in out.splitlines() if len(line) > 80]
        assert not long, (args, long)
        assert "…" not in out, (args, out)
    wide = greenctl(["workers", "--wide"], env).stdout
    assert "cpu-amd-epyc-7b13-2c-24g" in wide         # the profile column, when asked for


@pytest.mark.timeout(240)
def test_down_names_and_stops_a_worker_attached_by_hand(tmp_path):
    from shared import embedded
    from tests.processes import registered

    state = tmp_path / "state"
    env = base_env(GREENCTL_STATE_DIR=str(state), GREENCTL_HEARTBEAT_SECONDS="1")
    embedded.ensure(state)
    log = open(tmp_path / "worker.log", "ab")
    worker = subprocess.Popen([sys.executable, "-m", "greenctl", "worker", "--queue", "by-hand"], env=env,
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not registered(env, "by-hand") and time.monotonic() < deadline:
            time.sleep(1)
        assert registered(env, "by-hand"), (tmp_path / "worker.log").read_text()[-2000:]
        down = greenctl(["down", "--grace", "20"], env)
        assert f"stopping worker pid {worker.pid}" in down.stderr, down.stderr
        assert f"worker pid {worker.pid}" in down.stdout
        assert worker.wait(timeout=30) is not None        # gone with its servers, not looping on them
    finally:
        if worker.poll() is None:
            worker.kill()
        embedded.stop(state)


def test_the_worker_says_a_cancelled_task_is_cancelled(tmp_path, env):
    from shared.celery_app import configure
    from shared.config import Settings
    from worker import runtime
    from worker.tasks import infer

    db = env["GREENCTL_DATABASE_URL"]
    eid = json.loads(greenctl(["submit", str(_spec(tmp_path)), "--json"], env).stdout)["experiment_id"]
    greenctl(["cancel", str(eid)], env)
    with sa.create_engine(db, poolclass=sa.pool.NullPool).connect() as conn:
        task_id = conn.execute(sa.text("SELECT min(id) FROM task WHERE experiment_id = :e"), {"e": eid}).scalar()
    configure(env["GREENCTL_BROKER_URL"], db, Settings.from_env(env))
    try:
        # apply(): the registered task through Celery's own call path, in this process.
        assert infer.apply(args=[task_id]).get() == f"skipped: task {task_id} is cancelled"
    finally:
        runtime.stop()


def test_every_report_format_names_failures_by_reason(tmp_path, env):
    db = env["GREENCTL_DATABASE_URL"]
    eid = json.loads(greenctl(["submit", str(_spec(tmp_path, sample=6)), "--json"], env).stdout)["experiment_id"]
    with sa.create_engine(db, poolclass=sa.pool.NullPool).begin() as conn:
        conn.execute(sa.text("UPDATE task SET status = 'failed', error = 'variant broken: use q8_0' "
                             "WHERE experiment_id = :e"), {"e": eid})
    for fmt in ("table", "md", "csv"):
        out = greenctl(["report", str(eid), "--format", fmt], env).stdout
        assert "6 failed: variant broken: use q8_0" in out, (fmt, out)
        assert "Not measured yet" not in out and "not measured yet" not in out
    data = json.loads(greenctl(["report", str(eid), "--format", "json"], env).stdout)
    (variant,) = data["variants"]
    assert variant["status"] == "failed"
    assert variant["failures"] == [{"reason": "variant broken: use q8_0", "tasks": 6}]
    html_path = tmp_path / "r.html"
    greenctl(["report", str(eid), "--format", "html", "-o", str(html_path)], env)
    assert "6 failed: variant broken: use q8_0" in html_path.read_text()


def test_a_cancelled_experiment_without_results_says_there_is_nothing_yet(tmp_path, env):
    eid = json.loads(greenctl(["submit", str(_spec(tmp_path)), "--json"], env).stdout)["experiment_id"]
    greenctl(["cancel", str(eid)], env)
    out = greenctl(["report", str(eid)], env).stdout
    assert "Nothing to report yet" in out and f"greenctl resume {eid}" in out
    assert "Totals" not in out and "0 kWh" not in out
