"""The shared Celery app configured from the environment, for the `celery` command
line: Flower (`celery -A greenctl.cluster.celery_env:app flower`) and container
healthchecks (`... inspect ping`). The broker URL comes from GREENCTL_BROKER_URL,
so no password appears in a command line.

This module is the edge of a plain `celery -A` process: it reads the settings
once, when celery imports it."""
from __future__ import annotations

from shared.celery_app import app, configure
from shared.config import Settings

_settings = Settings.from_env()
if not _settings.broker_url:
    raise RuntimeError("GREENCTL_BROKER_URL is not set: e.g. redis://:PASSWORD@HOST:6379/0")
configure(_settings.broker_url, _settings.database_url, _settings)

__all__ = ["app"]
