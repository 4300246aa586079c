"""`greenctl up` / `ps` / `down` as a user runs them: real processes, real model.

Each test has its own state dir, so its own embedded Postgres and Valkey, and
stops everything at the end whatever happens. The state dir is not under
pytest's tmp_path: as root, embedded Postgres runs as its own user and opens
the parent directories to it, and every pytest session that starts meanwhile
(another developer's, on the same machine) closes /tmp/pytest-of-root again,
so `pg_ctl stop` would be denied.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from greenctl.cluster import health, records, services
from shared import embedded

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "greenctl" / "data" / "financial_sentiment.csv"
GREENCTL = [sys.executable, "-m", "greenctl"]


@pytest.fixture()
def state():
    root = Path(tempfile.mkdtemp(prefix="greenctl-cluster-test-"))
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


def _env(state: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GREENCTL_DATABASE_URL", "GREENCTL_BROKER_URL") and not k.startswith("FLOWER_")}
    return env | {"GREENCTL_STATE_DIR": str(state), "GREENCTL_FLOWER_USER": "ops",
                  "GREENCTL_FLOWER_PASSWORD": "cluster-test-pw"}


def _run(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([*GREENCTL, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
name: cluster-up-test
dataset: {{path: {DATA}, text_column: text, label_column: label,
          labels: [positive, negative, neutral], sample: 4, stratify: true, seed: 42}}
prompt: {{template: label-only, few_shot: 0, output: label}}
models: [{{name: "smollm2:135m-instruct", engine: embedded, variants: [q4_0],
           params: {{max_tokens: 4, temperature: 0.0, top_p: 0.9, top_k: 50, seed: 0}}}}]
placement: {{queue: default}}
""")
    return path


def _pids(state: Path) -> set[int]:
    """Every process of the cluster: recorded ones, their children, the embedded servers."""
    pids = set()
    for r in records.read_all(records.cluster_dir(state)):
        pids.add(r.pid)
        try:
            pids |= {c.pid for c in psutil.Process(r.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    for info in json.loads((state / embedded.SERVICES_FILE).read_text()).values():
        pids.add(info["pid"])
    return pids


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _down(state: Path, env: dict) -> None:
    try:
        _run(["down", "--grace", "20"], env, timeout=120)
    finally:
        if (state / embedded.SERVICES_FILE).exists():
            embedded.stop(state)   # `down` failed: stop the servers, or fail saying why


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_up_two_workers_and_flower_runs_an_experiment_and_down_leaves_nothing(tmp_path, state):
    env = _env(state)
    port = next(p for p in range(5700, 5800) if services.port_free(p))
    pids: set[int] = set()
    try:
        up = _run(["up", "--workers", "2", "--flower", "--flower-port", str(port), "--wait", "300"], env, 420)
        assert up.returncode == 0, up.stdout + up.stderr
        flower = f"http://127.0.0.1:{port}"
        assert flower in up.stdout and "ready: scheduler, estimator, worker-1, worker-2, flower" in up.stdout
        assert "share its energy measurement" in up.stdout
        pids = _pids(state)

        assert health.http_status(f"{flower}/") == 401
        assert health.http_status(f"{flower}/", "ops", "cluster-test-pw") == 200

        submit = _run(["submit", str(_spec(tmp_path)), "--wait", "--timeout", "400", "--json"], env, 480)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        experiment_id = json.loads(submit.stdout.strip().splitlines()[-1])["experiment_id"]
        db = json.loads((state / embedded.SERVICES_FILE).read_text())["postgres"]["url"]
        with sa.create_engine(db, poolclass=sa.pool.NullPool).connect() as conn:
            workers = conn.execute(sa.text("SELECT worker FROM result WHERE experiment_id = :e"),
                                   {"e": experiment_id}).scalars().all()
        host = socket.gethostname()
        assert len(workers) == 4 and set(workers) <= {f"{host}:default-1", f"{host}:default-2"}

        ps = _run(["ps", "--json"], env, 60)
        listed = json.loads(ps.stdout)
        assert {s["name"]: s["state"] for s in listed["services"]} == {
            "scheduler": "ready", "estimator": "ready", "worker-1": "ready", "worker-2": "ready",
            "flower": "ready", "supervisor": "running", "postgres": "running", "valkey": "running"}
        assert listed["shared_energy"] is True
        assert listed["scheduler_last_reconcile_s"] is not None

        again = _run(["up", "--workers", "2", "--flower", "--flower-port", str(port)], env, 180)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.count(" running ") == 6, again.stdout   # and the supervisor
        assert _pids(state) == pids, "a second `up` reuses the running services"
    finally:
        if (state / embedded.SERVICES_FILE).exists():
            pids |= _pids(state)
        _down(state, env)
    assert pids and _alive(pids) == set(), f"left behind: {_alive(pids)}"
    assert records.read_all(records.cluster_dir(state)) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_during_up_stops_what_it_started(state):
    env = _env(state)
    directory = records.cluster_dir(state)
    proc = subprocess.Popen([*GREENCTL, "up", "--wait", "120"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        # Interrupt while `up` is still starting services (worker-1 is the third of three).
        while not (directory / f"worker-1{records.SUFFIX}").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        seen = {r.pid for r in records.read_all(directory)}
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and "interrupted" in err, err
        assert _alive(seen) == set() and records.read_all(directory) == []
    finally:
        if proc.poll() is None:
            proc.kill()
        _down(state, env)
