"""docker-compose.yml, Dockerfile and .env.example, checked without a Docker engine.

The compose file is validated against the Compose Specification's JSON schema
(tests/fixtures/compose-spec.json, copied from github.com/compose-spec/compose-spec,
schema/compose-spec.json; its "$comment" gives the commit), and every service's
command must exist in the greenctl CLI (or, for Flower, in `celery`).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from greenctl.cli import main

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "fixtures" / "compose-spec.json"
ENV_EXAMPLE = ROOT / ".env.example"
PYTHON_SERVICES = {"scheduler", "estimator", "worker", "flower"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else list(command)


def test_compose_file_is_valid_against_the_compose_specification(compose):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(compose)


def test_compose_has_the_services_of_a_greenctl_cluster(compose):
    assert set(compose["services"]) == {"redis", "postgres", "ollama", *PYTHON_SERVICES}
    assert "postgres-data" in compose["volumes"] and "ollama-models" in compose["volumes"]
    for name in PYTHON_SERVICES:
        assert compose["services"][name]["build"] == ".", f"{name} must use the one Dockerfile"


def test_every_greenctl_command_of_the_compose_file_exists_with_its_options(compose):
    runner = CliRunner()
    for name, service in compose["services"].items():
        argv = _argv(service.get("command") or [])
        if not argv or argv[0] != "greenctl":
            continue
        # The whole command line plus --help: an unknown command or option fails to parse.
        result = runner.invoke(main, [*argv[1:], "--help"])
        assert result.exit_code == 0, f"{name}: `{' '.join(argv)}`: {result.output}"


def _celery_help(app: str, *command: str) -> subprocess.CompletedProcess:
    env = os.environ | {"GREENCTL_BROKER_URL": "redis://:secret@redis:6379/0"}
    return subprocess.run([sys.executable, "-m", "celery", "-A", app, *command, "--help"],
                          env=env, capture_output=True, text=True, timeout=120)


def test_celery_commands_of_the_compose_file_load_the_app(compose):
    flower = _argv(compose["services"]["flower"]["command"])
    assert flower[:2] == ["celery", "-A"] and flower[3] == "flower"
    out = _celery_help(flower[2], "flower")
    assert out.returncode == 0, out.stderr[-2000:]
    # Celery services' healthchecks run `celery -A <app> inspect ping`: that app and command exist.
    for name in ("scheduler", "estimator", "worker"):
        test = compose["services"][name]["healthcheck"]["test"][-1]
        app = re.search(r"celery -A (\S+) inspect ping", test).group(1)
        assert app == flower[2], name
    out = _celery_help(flower[2], "inspect", "ping")
    assert out.returncode == 0, out.stderr[-2000:]


def test_only_flower_publishes_a_port_and_only_on_loopback(compose):
    published = {name: s["ports"] for name, s in compose["services"].items() if s.get("ports")}
    assert set(published) == {"flower"}
    for port in published["flower"]:
        assert str(port).startswith("127.0.0.1:"), port
    assert compose["networks"]["backend"].get("internal") is True
    for name in ("redis", "postgres"):
        assert compose["services"][name]["networks"] == ["backend"]


def test_healthchecks_and_dependencies_on_healthy_services(compose):
    services = compose["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for dep, how in (service.get("depends_on") or {}).items():
            assert how == {"condition": "service_healthy"}, f"{name} -> {dep}"
            assert "healthcheck" in services[dep]
    assert set(services["scheduler"]["depends_on"]) == {"postgres", "redis"}
    assert "scheduler" in services["worker"]["depends_on"]


def test_secrets_come_from_the_env_file_and_are_required():
    text = COMPOSE.read_text()
    for var in ("GREENCTL_POSTGRES_PASSWORD", "GREENCTL_REDIS_PASSWORD",
                "GREENCTL_FLOWER_USER", "GREENCTL_FLOWER_PASSWORD"):
        assert re.search(r"\$\{" + var + r":\?", text), f"{var} must be required (${{{var}:?...}})"
    flower_env = yaml.safe_load(text)["services"]["flower"]["environment"]
    assert "FLOWER_BASIC_AUTH" in flower_env and "--persistent=False" in " ".join(
        _argv(yaml.safe_load(text)["services"]["flower"]["command"]))


def _variables_read_by_the_code() -> set[str]:
    found = set()
    for path in ROOT.rglob("*.py"):
        if any(part in {".venv", "build", "node_modules"} or part.startswith(".") for part in path.relative_to(ROOT).parts):
            continue
        found |= set(re.findall(r"\b(GREENCTL_[A-Z0-9_]+|OLLAMA_HOST)\b", path.read_text(errors="replace")))
    return found


def test_env_example_documents_every_variable():
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))
    in_compose = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    missing = (_variables_read_by_the_code() | in_compose) - documented
    assert not missing, f"add to .env.example: {sorted(missing)}"


def test_dockerfile_builds_one_image_for_the_python_services():
    dockerfile = (ROOT / "Dockerfile").read_text()
    # The base is an ARG (make compose-check passes one built from Debian packages); users get python:3.11-slim.
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)
    assert re.search(r"^RUN pip install (--no-deps )?\.", dockerfile, re.M)
    assert "libgomp1" in dockerfile, "xllamacpp needs OpenMP's runtime, which the slim image lacks"
    assert re.search(r"^USER \w+", dockerfile, re.M), "services run as a non-root user"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".venv" in ignored and ".git" in ignored
    assert "README.md" not in ignored and "pyproject.toml" not in ignored
