"""What `greenctl up` runs: one scheduler, one estimator worker, N inference
workers and, optionally, Flower, each as a `greenctl` (or `celery`) command line."""
from __future__ import annotations

import os
import secrets
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from shared import embedded
from shared.celery_app import ESTIMATOR_QUEUE, SCHEDULER_QUEUE
from shared.config import Settings

GREENCTL = [sys.executable, "-m", "greenctl"]
# The Celery app configured from GREENCTL_BROKER_URL, for the `celery` command line (Flower).
CELERY_APP = "greenctl.cluster.celery_env:app"
FLOWER_USER = "admin"


@dataclass(frozen=True)
class Service:
    name: str
    argv: list[str]
    node: str = ""      # Celery node name, answers pings when ready
    url: str = ""


def node_name(queue: str) -> str:
    """The Celery node name `greenctl worker` gives itself: its first queue names it."""
    return f"greenctl-{queue}@{socket.gethostname()}"


def worker_queue(default_queue: str, index: int) -> str:
    """Local worker i's own queue, listed first so it names the worker (Celery node,
    `greenctl workers`, results); every local worker also consumes `default_queue`."""
    return f"{default_queue}-{index}"


def plan(workers: int, default_queue: str, cores: int, flower_port: int | None,
         schedule_file: Path) -> list[Service]:
    """The services, in start order. Workers share the cores: threads = cores // workers."""
    threads = max(1, cores // max(1, workers))
    services = [
        Service("scheduler", [*GREENCTL, "scheduler", "--schedule-file", str(schedule_file)],
                node=node_name(SCHEDULER_QUEUE)),
        Service("estimator", [*GREENCTL, "worker", "--queue", ESTIMATOR_QUEUE, "--threads", "1"],
                node=node_name(ESTIMATOR_QUEUE)),
    ]
    for i in range(1, workers + 1):
        own = worker_queue(default_queue, i)
        argv = [*GREENCTL, "worker", "--queue", own, "--queue", default_queue]
        if workers > 1:
            argv += ["--threads", str(threads)]
        services.append(Service(f"worker-{i}", argv, node=node_name(own)))
    if flower_port is not None:
        services.append(Service("flower", flower_argv("127.0.0.1", flower_port),
                                url=f"http://127.0.0.1:{flower_port}"))
    return services


def flower_argv(address: str, port: int) -> list[str]:
    # Credentials go in FLOWER_BASIC_AUTH (environment), never argv: `ps` shows argv to every user.
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, "flower",
            f"--address={address}", f"--port={port}", "--persistent=False"]


class CredentialsError(ValueError):
    pass


def flower_credentials(cluster_dir: Path, settings: Settings) -> tuple[str, str, bool]:
    """(user, password, generated now): from GREENCTL_FLOWER_USER/PASSWORD, else a
    password generated once and kept (0600) under the cluster dir for later restarts."""
    user = settings.flower_user or FLOWER_USER
    password = settings.flower_password     # None when unset or empty (as in .env.example): generate
    # Flower reads FLOWER_BASIC_AUTH as a comma-separated list of user:password.
    if ":" in user or "," in user:
        raise CredentialsError("GREENCTL_FLOWER_USER must not contain ':' or ','")
    if password is not None:
        if "," in password:
            raise CredentialsError("GREENCTL_FLOWER_PASSWORD must not contain ','")
        return user, password, False
    stored = cluster_dir / "flower-password"
    if stored.exists():
        return user, stored.read_text().strip(), False
    password = secrets.token_urlsafe(18).replace(",", "")
    cluster_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password)
    return user, password, True


port_free = embedded.port_free   # the same check the embedded broker uses before it binds
