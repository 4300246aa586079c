"""Settings read from the environment; nothing here opens a connection.

This is the only module that reads the environment (tests/test_layers.py checks
it): commands and services build one `Settings` at their start and pass it on.

Every variable is documented in `.env.example`. When GREENCTL_DATABASE_URL or
GREENCTL_BROKER_URL is unset, `shared.embedded` starts an embedded server and
records its URL under the state dir, so every process on this machine (CLI,
worker subprocess, tests) reaches the same servers.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import platformdirs


@dataclass(frozen=True)
class Settings:
    """Everything greenctl takes from its environment, read once at the edge
    (a CLI command, a service's start) and passed down explicitly."""
    database_url: str | None
    broker_url: str | None
    state_dir: Path
    cache_dir: Path
    default_queue: str = "default"
    # Seconds a claimed task may run before the reconcile job may hand it out again.
    lease_seconds: int = 600
    # Seconds between reconcile passes of the scheduler service (tests shorten it).
    reconcile_seconds: float = 30.0
    # Seconds between a worker's heartbeats (tests shorten it).
    heartbeat_seconds: float = 15.0
    # A worker's defaults for `greenctl worker` and plain `celery worker` starts.
    threads: int | None = None
    engines: tuple[str, ...] = ("embedded",)
    ollama_host: str | None = None
    cpu_watts: float | None = None
    ram_watts: float | None = None
    # Leave RAM out of every energy figure (GREENCTL_EXCLUDE_RAM=1), rather than estimate it.
    exclude_ram: bool = False
    # The host-wide lock file that serializes measured windows across this host's workers.
    measure_lock: Path = Path("/tmp/greenctl-measure.lock")
    max_loaded_models: int = 4
    # The estimator refits a hardware profile after this many new results.
    refit_every: int = 50
    flower_user: str | None = None
    flower_password: str | None = None
    # Submit refuses a dataset file larger than this (bytes) and more tasks than this
    # (samples x variants x repeats), before anything is written.
    max_dataset_bytes: int = 512 * 2**20
    max_tasks: int = 1_000_000
    # Seconds a worker's warm shutdown (SIGTERM) may take before it exits anyway: without
    # its broker, Celery's shutdown would otherwise wait for it forever.
    shutdown_grace_seconds: float = 30.0
    # `greenctl worker` joins a LAN cluster with this token (as `--join TOKEN` would; a secret).
    join_token: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(name) or None   # set but empty (as in .env.example) counts as unset

        def number(name: str, kind, default):
            raw = get(name)
            if raw is None:
                return default
            try:
                return kind(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}: set it to a number "
                                    "or unset it") from None

        return cls(
            database_url=get("GREENCTL_DATABASE_URL"),
            broker_url=get("GREENCTL_BROKER_URL"),
            state_dir=Path(get("GREENCTL_STATE_DIR") or platformdirs.user_state_dir("greenctl")).expanduser(),
            cache_dir=Path(get("GREENCTL_CACHE_DIR") or platformdirs.user_cache_dir("greenctl")).expanduser(),
            default_queue=get("GREENCTL_QUEUE") or "default",
            lease_seconds=number("GREENCTL_LEASE_SECONDS", int, 600),
            reconcile_seconds=number("GREENCTL_RECONCILE_SECONDS", float, 30.0),
            heartbeat_seconds=number("GREENCTL_HEARTBEAT_SECONDS", float, 15.0),
            threads=number("GREENCTL_THREADS", int, None),
            engines=tuple((get("GREENCTL_ENGINES") or "embedded").split(",")),
            ollama_host=get("OLLAMA_HOST"),
            cpu_watts=number("GREENCTL_CPU_WATTS", float, None),
            ram_watts=number("GREENCTL_RAM_WATTS", float, None),
            exclude_ram=(get("GREENCTL_EXCLUDE_RAM") or "0").lower() in ("1", "true", "yes"),
            measure_lock=Path(get("GREENCTL_MEASURE_LOCK") or "/tmp/greenctl-measure.lock"),
            max_loaded_models=number("GREENCTL_MAX_LOADED_MODELS", int, 4),
            refit_every=number("GREENCTL_REFIT_EVERY", int, 50),
            flower_user=get("GREENCTL_FLOWER_USER"),
            flower_password=get("GREENCTL_FLOWER_PASSWORD"),
            max_dataset_bytes=number("GREENCTL_MAX_DATASET_BYTES", int, 512 * 2**20),
            max_tasks=number("GREENCTL_MAX_TASKS", int, 1_000_000),
            shutdown_grace_seconds=number("GREENCTL_SHUTDOWN_GRACE_SECONDS", float, 30.0),
            join_token=get("GREENCTL_JOIN_TOKEN"),
        )


class SettingsError(ValueError):
    """An environment variable greenctl cannot use: the message names it and the fix."""


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process greenctl starts (a worker, a server): this
    process's own, plus `extra`. Secrets travel here, never in argv."""
    return {**os.environ, **(extra or {})}


def mask_url(url: str | None) -> str:
    """The URL with any password replaced by '***', safe to print or log."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))
