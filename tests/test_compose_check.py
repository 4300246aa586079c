"""The pieces of `make compose-check` (tests/compose/) that can be checked without a Docker engine.

The check itself (tests/compose/check.sh) runs the stack for real; here: its host-network copy of
docker-compose.yml keeps every service and healthcheck and drops only what host networking
forbids, and its override puts every service of the user's file on the host network, away from
the host's own Postgres and Redis ports.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "tests" / "compose"
USER_FILE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
OVERRIDE = yaml.safe_load((HERE / "override.yml").read_text())


def _host_network():
    spec = importlib.util.spec_from_file_location("host_network", HERE / "host_network.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.host_network


def test_host_network_copy_drops_only_networks_and_ports():
    out = _host_network()(USER_FILE, ROOT)
    assert "networks" not in out and out["volumes"] == USER_FILE["volumes"]
    assert set(out["services"]) == set(USER_FILE["services"])
    for name, service in USER_FILE["services"].items():
        kept = {k: v for k, v in service.items() if k not in ("networks", "ports", "build")}
        assert {k: v for k, v in out["services"][name].items() if k != "build"} == kept, name
        if "build" in service:
            assert Path(out["services"][name]["build"]) == ROOT


def test_override_puts_every_service_on_the_host_network_on_other_ports():
    assert set(OVERRIDE["services"]) == set(USER_FILE["services"])
    assert all(s["network_mode"] == "host" for s in OVERRIDE["services"].values())
    text = "\n".join(line for line in (HERE / "override.yml").read_text().splitlines()
                     if not line.lstrip().startswith("#"))
    # Servers bind loopback only, on the check's ports, never the host's Postgres/Redis/Flower ones.
    assert "listen_addresses=127.0.0.1" in text and "--bind 127.0.0.1" in text and "--address=127.0.0.1" in text
    assert not re.search(r"[^0-9](5432|6379|5555)[^0-9]", text)
    check = (HERE / "check.sh").read_text()
    assert "--bridge=none" in check and "--iptables=false" in check and "down -v" in check


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose not installed")
def test_compose_v1_accepts_the_user_file_and_the_check_stack(tmp_path):
    """Debian's docker-compose (1.29) is what `make compose-check` runs: both files must parse."""
    env = {"PATH": "/usr/bin:/bin", "GREENCTL_POSTGRES_PASSWORD": "p", "GREENCTL_REDIS_PASSWORD": "r",
           "GREENCTL_FLOWER_USER": "u", "GREENCTL_FLOWER_PASSWORD": "f", "CHECK_ROOT": str(ROOT),
           "CHECK_DIR": str(HERE), "CHECK_PYTHON_IMAGE": "py", "CHECK_POSTGRES_IMAGE": "pg",
           "CHECK_REDIS_IMAGE": "rd", "CHECK_PG_PORT": "55432", "CHECK_REDIS_PORT": "56379",
           "CHECK_OLLAMA_PORT": "51434", "CHECK_FLOWER_PORT": "55555"}
    user = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert user.returncode == 0, user.stderr
    stack = tmp_path / "stack.yml"
    stack.write_text(yaml.safe_dump(_host_network()(USER_FILE, ROOT)))
    both = subprocess.run(["docker-compose", "-f", str(stack), "-f", str(HERE / "override.yml"), "config"],
                          env=env, capture_output=True, text=True, cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    merged = yaml.safe_load(both.stdout)["services"]
    assert merged["scheduler"]["environment"]["GREENCTL_DATABASE_URL"].endswith("@127.0.0.1:55432/greenctl")
    assert "FLOWER_BASIC_AUTH" in merged["flower"]["environment"]
