"""Flower as `greenctl up --flower` starts it: basic auth always, over real HTTP."""
from __future__ import annotations

import os
import stat
import time

import pytest

from greenctl.cluster import health, processes, records, services
from shared.config import Settings
from tests.conftest import SYSTEM_REDIS, redis_db

# A Redis database of these tests' own: Flower only listens, nothing is written.
BROKER = f"{SYSTEM_REDIS}/{redis_db('flower+reconcile')}"


def test_flower_credentials_come_from_the_environment(tmp_path):
    env = Settings.from_env({"GREENCTL_FLOWER_USER": "ops", "GREENCTL_FLOWER_PASSWORD": "s3cret"})
    assert services.flower_credentials(tmp_path, env) == ("ops", "s3cret", False)
    assert not (tmp_path / "flower-password").exists()


def test_a_generated_password_is_kept_private_and_reused(tmp_path, monkeypatch):
    env = Settings.from_env({"GREENCTL_FLOWER_PASSWORD": ""})   # empty, as in .env.example: generate
    user, password, generated = services.flower_credentials(tmp_path, env)
    assert (user, generated) == ("admin", True) and len(password) >= 20
    assert stat.S_IMODE((tmp_path / "flower-password").stat().st_mode) == 0o600
    assert services.flower_credentials(tmp_path, env) == ("admin", password, False)


@pytest.mark.parametrize("var,value", [("GREENCTL_FLOWER_USER", "a:b"),
                                       ("GREENCTL_FLOWER_PASSWORD", "x,y")])
def test_credentials_flower_cannot_parse_are_refused(tmp_path, var, value):
    env = Settings.from_env({"GREENCTL_FLOWER_PASSWORD": "ok", var: value})
    with pytest.raises(services.CredentialsError, match=var):
        services.flower_credentials(tmp_path, env)


@pytest.mark.timeout(120)
def test_flower_answers_401_without_credentials_and_200_with_them(tmp_path):
    port = next(p for p in range(5600, 5700) if services.port_free(p))
    directory = tmp_path / "cluster"
    env = os.environ | {"GREENCTL_BROKER_URL": BROKER, "FLOWER_BASIC_AUTH": "ops:pa55word"}
    record = processes.spawn(directory, "flower", services.flower_argv("127.0.0.1", port), env,
                             directory / "flower.log", url=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 90
        while not health.flower_ok(record.url):
            assert processes.alive(record), (directory / "flower.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Flower did not answer /healthcheck"
            time.sleep(0.5)
        assert health.http_status(f"{record.url}/") == 401
        assert health.http_status(f"{record.url}/", "ops", "wrong") == 401
        assert health.http_status(f"{record.url}/", "ops", "pa55word") == 200
        assert health.http_status(f"{record.url}/workers", "ops", "pa55word") == 200
        # Flower's design, documented in docs/operations.md: these two need no credentials.
        assert health.http_status(f"{record.url}/healthcheck") == 200
        assert health.http_status(f"{record.url}/metrics") == 200
        # The password is not on Flower's command line, which every local user can read.
        assert not any("pa55word" in w for w in open(f"/proc/{record.pid}/cmdline").read().split("\0"))
    finally:
        processes.stop(directory, records.read_all(directory), grace_s=10)
    assert not processes.alive(record)
