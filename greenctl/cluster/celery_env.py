"""The shared Celery app configured from the environment, for the `celery` command
line: Flower (`celery -A greenctl.cluster.celery_env:app flower`) and container
healthchecks (`... inspect ping`). The broker URL comes from GREENCTL_BROKER_URL,
so no password appears in a command line."""
from __future__ import annotations

import os

from shared.celery_app import app, celery_settings
from shared.config import Settings

_broker = os.environ.get("GREENCTL_BROKER_URL")
if not _broker:
    raise RuntimeError("GREENCTL_BROKER_URL is not set: e.g. redis://:PASSWORD@HOST:6379/0")
app.conf.update(celery_settings(_broker, Settings.from_env().lease_seconds))
