"""`greenctl up`'s supervisor: a service that dies is restarted (with backoff, logged,
shown in `ps`), one that keeps dying is given up on, and `down` leaves nothing.
Real processes, real model, own state dir (see tests/test_cluster_up.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from greenctl.cluster import processes, records, supervise
from shared import embedded
from test_cluster_up import _alive, _down, _env, _pids, _run, _spec


@pytest.fixture()
def state():
    # Not under tmp_path: see tests/test_cluster_up.py (embedded Postgres as root).
    root = Path(tempfile.mkdtemp(prefix="greenctl-supervisor-test-"))
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


def test_backoff_doubles_from_one_second_and_is_capped():
    assert [supervise.backoff_s(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_death_after_a_long_run_starts_the_count_again():
    assert supervise.quick_deaths_after(3, uptime_s=2.0) == 4
    assert supervise.quick_deaths_after(3, uptime_s=3600.0) == 1


def _ps(env: dict) -> dict:
    ps = _run(["ps", "--json"], env, 60)
    assert ps.returncode == 0, ps.stdout + ps.stderr
    return {s["name"]: s for s in json.loads(ps.stdout)["services"]}


def _wait_for(env: dict, check, timeout_s: float, what: str) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = _ps(env)
        if check(rows):
            return rows
        assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s: {rows}"
        time.sleep(1)


def _supervisors(directory: Path) -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if "greenctl.cluster.supervise" in (p.info["cmdline"] or []) and str(directory) in p.info["cmdline"]]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_worker_is_restarted_and_a_crashing_service_is_given_up(tmp_path, state):
    env = _env(state)
    directory = records.cluster_dir(state)
    pids: set[int] = set()
    try:
        up = _run(["up", "--workers", "1", "--wait", "240"], env, 300)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "supervisor" in up.stdout
        pids = _pids(state)
        assert len(_supervisors(directory)) == 1

        before = _ps(env)
        first, scheduler = before["worker-1"], before["scheduler"]
        os.killpg(first["pid"], signal.SIGKILL)     # its own session: the worker and its children
        beat = psutil.Process(scheduler["pid"]).children(recursive=True)
        assert beat, "the scheduler runs Celery beat as a child"
        os.kill(scheduler["pid"], signal.SIGKILL)   # the leader only: its beat child is left over
        rows = _wait_for(env, lambda r: all(r[n]["pid"] != before[n]["pid"] and r[n]["restarts"] == 1
                                            and r[n]["state"] == "ready" for n in ("worker-1", "scheduler")),
                         60, "worker-1 and the scheduler restarted and answering")
        assert rows["worker-1"]["last_restart"] is not None
        assert _alive({p.pid for p in beat}) == set(), "the old scheduler's beat is stopped before the restart"
        pids |= _pids(state)

        # The embedded broker dies: it comes back on its port, and the services reconnect.
        valkey = json.loads((state / embedded.SERVICES_FILE).read_text())["valkey"]
        os.kill(valkey["pid"], signal.SIGKILL)
        rows = _wait_for(env, lambda r: r["valkey"]["state"] == "running" and r["valkey"]["pid"] != valkey["pid"],
                         60, "valkey restarted")
        assert json.loads((state / embedded.SERVICES_FILE).read_text())["valkey"]["port"] == valkey["port"]
        pids.add(rows["valkey"]["pid"])

        # A service that dies right after every start (a bad command line): restarted with
        # backoff, then given up on with its last log lines.
        processes.spawn(directory, "crasher", [sys.executable, "-c", "print('crasher: bad setting'); exit(3)"],
                        env, directory / "logs" / "crasher.log")

        submit = _run(["submit", str(_spec(tmp_path)), "--wait", "--timeout", "300", "--json"], env, 360)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        experiment_id = json.loads(submit.stdout.strip().splitlines()[-1])["experiment_id"]
        db = json.loads((state / embedded.SERVICES_FILE).read_text())["postgres"]["url"]
        with sa.create_engine(db, poolclass=sa.pool.NullPool).connect() as conn:
            n = conn.execute(sa.text("SELECT count(*) FROM result WHERE experiment_id = :e"),
                             {"e": experiment_id}).scalar()
        assert n == 4, "the experiment completes on the restarted worker"

        rows = _wait_for(env, lambda r: r["crasher"]["state"] == "failed", 90, "crasher given up")
        assert rows["crasher"]["restarts"] == supervise.GIVE_UP_AFTER - 1
        assert any("crasher: bad setting" in line for line in rows["crasher"]["last_log"])
        assert rows["worker-1"]["restarts"] == 1 and rows["worker-1"]["state"] == "ready"
        table = _run(["ps"], env, 60)
        assert "crasher failed" in table.stderr and "crasher: bad setting" in table.stderr, table.stderr

        log = (directory / "logs" / "supervisor.log").read_text()
        assert "restarted worker-1" in log and "restarting in 1 s" in log and "restarting in 2 s" in log
        assert f"the dead scheduler left running: pids {beat[0].pid}" in log
        assert "crasher" in log and "given up" in log and "restarted embedded valkey" in log

        again = _run(["up", "--workers", "1"], env, 180)
        assert again.returncode == 0, again.stdout + again.stderr
        assert len(_supervisors(directory)) == 1, "a second `up` reuses the supervisor"
        pids |= _pids(state)
    finally:
        if (state / embedded.SERVICES_FILE).exists():
            try:
                pids |= _pids(state)
            except (OSError, ValueError):
                pass
        _down(state, env)
    assert pids and _alive(pids) == set(), f"left behind: {_alive(pids)}"
    assert _supervisors(directory) == []
    assert records.read_all(directory) == []
