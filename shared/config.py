"""Settings read from the environment; nothing here opens a connection.

Every variable is documented in `.env.example`. When GREENCTL_DATABASE_URL or
GREENCTL_BROKER_URL is unset, `shared.embedded` starts an embedded server and
records its URL under the state dir, so every process on this machine (CLI,
worker subprocess, tests) reaches the same servers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import platformdirs


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    broker_url: str | None
    state_dir: Path
    cache_dir: Path
    default_queue: str = "default"
    # Seconds a claimed task may run before the reconcile job may hand it out again.
    lease_seconds: int = 600

    @classmethod
    def from_env(cls) -> "Settings":
        state = os.environ.get("GREENCTL_STATE_DIR") or platformdirs.user_state_dir("greenctl")
        cache = os.environ.get("GREENCTL_CACHE_DIR") or platformdirs.user_cache_dir("greenctl")
        return cls(
            database_url=os.environ.get("GREENCTL_DATABASE_URL") or None,
            broker_url=os.environ.get("GREENCTL_BROKER_URL") or None,
            state_dir=Path(state).expanduser(),
            cache_dir=Path(cache).expanduser(),
            default_queue=os.environ.get("GREENCTL_QUEUE", "default"),
            lease_seconds=int(os.environ.get("GREENCTL_LEASE_SECONDS", "600")),
        )


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
