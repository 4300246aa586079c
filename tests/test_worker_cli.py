"""`greenctl worker --calibrate` and `greenctl workers` against a real Postgres."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import SYSTEM_REDIS, redis_db
from tests.processes import base_env, greenctl, greenctl_json


def test_calibrate_stores_idle_power_and_workers_lists_the_host(tmp_path, fresh_db_url):
    env = base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL=f"{SYSTEM_REDIS}/{redis_db('vocabulary+worker_cli')}",
                   GREENCTL_STATE_DIR=str(tmp_path))
    out = greenctl(["worker", "--queue", "laptop-anna", "--calibrate", "--calibrate-seconds", "2"], env)
    assert "idle power of" in out.stdout and " W over 2 s" in out.stdout
    with sa.create_engine(fresh_db_url).connect() as conn:
        watts = conn.execute(sa.text("SELECT idle_watts FROM worker_node WHERE queue = 'laptop-anna'")).scalar()
    assert watts > 0
    (node,) = greenctl_json(["workers", "--json"], env)["workers"]
    assert node["queue"] == "laptop-anna" and node["online"] is True
    assert set(node["energy_method"].split("+")) <= {"estimated", "rapl", "powermetrics", "forced"}
    assert node["engines"] == ["embedded"] and node["profile"]


# alone: CodeCarbon scales the forced watts by this host's CPU load, and the bound below needs
# that load under 100 %, which a second pytest worker (or any other load) takes away.
@pytest.mark.alone
def test_forced_watts_are_recorded_as_forced(tmp_path, fresh_db_url):
    env = base_env(GREENCTL_DATABASE_URL=fresh_db_url, GREENCTL_BROKER_URL=f"{SYSTEM_REDIS}/{redis_db('vocabulary+worker_cli')}",
                   GREENCTL_STATE_DIR=str(tmp_path))
    out = greenctl(["worker", "--queue", "forced", "--cpu-watts", "15", "--ram-watts", "3",
                    "--calibrate", "--calibrate-seconds", "2"], env)
    assert "(forced)" in out.stdout
    watts = float(out.stdout.split("idle power of")[1].split(":")[1].split("W")[0])
    # CodeCarbon scales the forced CPU watts (power at full load) by the CPU load; RAM is constant.
    assert 3 < watts < 18
